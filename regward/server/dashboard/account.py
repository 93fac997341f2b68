"""The visitor's own pages: personal access tokens and the password.

    GET /tokens, POST /tokens/create|revoke   (revoke asks first)
    GET /account, POST /account/password

A new token's value is shown on the answer that creates it, once; only its hash is stored.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from regward.server import first_password
from regward.server.dashboard import forms, views
from regward.server.dashboard.context import Form, Visitor, using
from regward.server.dashboard.rendering import (
    confirmation,
    org_path,
    page_router,
    redirect,
    render,
    sentence,
)
from regward.server.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from regward.server.models import Scope
from regward.server.runtime import server_of
from regward.server.services import auth, orgs, tokens

router = page_router()


def _tokens_page(
    request: Request,
    session: Session,
    visitor: Visitor,
    *,
    status: int = 200,
    error: str = "",
    created: dict[str, str] | None = None,
    form: dict[str, str] | None = None,
) -> HTMLResponse:
    rows = [
        {
            "id": token.id,
            "name": token.name,
            # A machine's own token says which organization it reads.
            "hint": f"machine · {token.organization.name}"
            if token.organization is not None
            else f"{token.hint or 'rwp_'}…",
            "last_used": views.when(token.last_used_at) or "never",
            "scope": token.scope,
            "created": views.when(token.created_at),
            "revoked": token.revoked_at is not None,
        }
        for token in tokens.list_for(session, visitor.caller.user)
    ]
    return render(
        request,
        "tokens.html",
        visitor,
        org=visitor.last_org(request),
        tab="tokens",
        status=status,
        title="Tokens",
        error=error,
        tokens=rows,
        created=created,
        form=form or {"name": "", "scope": str(Scope.READ)},
        scopes=[
            (str(Scope.READ), "read: the policy feed and settings (agents, CI)"),
            (str(Scope.READ_WRITE), "read-write: also change settings (automation)"),
        ],
    )


@router.get("/tokens")
def tokens_page(request: Request) -> Response:
    with using(request) as (session, visitor):
        return _tokens_page(request, session, visitor)


@router.post("/tokens/create")
def create_token(request: Request, form: Form) -> Response:
    name = forms.text(form, "name")
    scope = forms.text(form, "scope")
    try:
        with using(request, write=True) as (session, visitor):
            token, value = tokens.create(session, visitor.caller.user, name, scope)
            created = {"name": token.name, "value": value}
    except (InvalidInput, Conflict) as error:
        with using(request) as (session, visitor):
            return _tokens_page(
                request,
                session,
                visitor,
                status=error.status,
                error=sentence(error),
                form={"name": name, "scope": scope},
            )
    with using(request) as (session, visitor):
        return _tokens_page(request, session, visitor, created=created)


@router.post("/tokens/revoke")
def revoke_token(request: Request, form: Form) -> Response:
    text = forms.text(form, "token_id")
    token_id = forms.whole_number(text)
    if token_id is None:
        raise NotFound(f"token {text!r} not found")
    if not forms.confirmed(form):
        with using(request) as (session, visitor):
            token = tokens.get(session, visitor.caller.user, token_id)
            return confirmation(
                request,
                visitor,
                None,
                question=f"Revoke {token.name}?",
                consequence="Anything using it stops working at once; this cannot be undone.",
                verb="Revoke",
                fields=[("token_id", text)],
                back="/tokens",
            )
    with using(request, write=True) as (session, visitor):
        token = tokens.revoke(session, visitor.caller.user, token_id)
        name = token.name
    return redirect(request, "/tokens", f"Revoked {name}: anything using it can no longer sign in.")


def _account_page(
    request: Request,
    visitor: Visitor,
    *,
    status: int = 200,
    error: str = "",
    new_org: str = "",
    new_org_error: str = "",
) -> HTMLResponse:
    return render(
        request,
        "account.html",
        visitor,
        org=visitor.last_org(request),
        tab="account",
        status=status,
        title="Your account",
        error=error,
        one_time=visitor.caller.user.password_one_time,
        new_org=new_org,
        new_org_error=new_org_error,
    )


@router.get("/account")
def account_page(request: Request) -> Response:
    with using(request, one_time_password=True) as (_, visitor):
        return _account_page(request, visitor)


@router.post("/account/password")
def change_password(request: Request, form: Form) -> Response:
    current = forms.text(form, "current_password")
    new = forms.text(form, "new_password")
    if new != forms.text(form, "confirm_password"):
        with using(request, one_time_password=True) as (_, visitor):
            return _account_page(
                request, visitor, status=422, error="The two new passwords differ; type them again."
            )
    limiter = server_of(request).sign_in_limiter
    client = request.client.host if request.client else "unknown"
    try:
        with using(request, write=True, one_time_password=True) as (session, visitor):
            # Guessing the current password is limited like signing in.
            wait = limiter.retry_after(visitor.username, client)
            if wait:
                raise InvalidInput(f"too many wrong passwords; wait {wait} seconds and try again")
            was_one_time = auth.change_own_password(session, visitor.caller, current, new)
    except (Unauthenticated, InvalidInput) as error:
        with using(request, one_time_password=True) as (_, visitor):
            if isinstance(error, Unauthenticated):  # counted once the write session is over
                limiter.failed(visitor.username, client)
                message = "Your current password is not right."
            else:
                message = sentence(error)
            return _account_page(request, visitor, status=error.status, error=message)
    first_password.forget(server_of(request).settings.data_dir, visitor.username)
    if was_one_time:  # the dashboard is theirs now
        return redirect(request, "/", "Your password is changed. Welcome.")
    return redirect(request, "/account", "Your password is changed.")


@router.post("/orgs/create")
def create_organization(request: Request, form: Form) -> Response:
    """A new organization, owned by the visitor: Registry Access off, Docker Hub listed, applied
    as revision 1 (as `regward server init` makes one)."""
    name = forms.text(form, "name").strip()
    try:
        with using(request, write=True) as (session, visitor):
            orgs.create(session, name, visitor.caller.user, server_of(request).signing_key)
    except (InvalidInput, Conflict) as error:
        with using(request) as (_, visitor):
            return _account_page(
                request,
                visitor,
                status=error.status,
                error="The organization was not created.",
                new_org=name,
                new_org_error=sentence(error),
            )
    return redirect(
        request,
        org_path(name, "registry-access"),
        f"Created {name}; you are its owner. Registry Access is off and Docker Hub is listed: "
        "add members, then the registries its machines may use.",
    )
