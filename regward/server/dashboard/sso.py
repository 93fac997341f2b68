"""Sign in with SSO: the dashboard's side of the OpenID Connect flow (regward.server.oidc).

    GET /auth/sso/login[?next=PATH]   a new state, nonce and PKCE verifier (kept in the
                                      database, the state also in a cookie), then off to the
                                      provider
    GET /auth/sso/callback            the provider sends the browser back: the state must match
                                      the cookie and a stored login, which is used up at once;
                                      then the code is exchanged and the ID token verified

A state is good once and for ten minutes; an answer whose state is unknown, used, expired or
not this browser's is refused.

    GET  /orgs/{org}/sso                    the organization's join rules and "SSO required"
    POST /orgs/{org}/sso/add|remove|required  owners change them (services.sso, in Activity)
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import Request, Response
from fastapi.responses import RedirectResponse
from sqlalchemy import delete
from starlette.concurrency import run_in_threadpool

from regward.server.dashboard import forms
from regward.server.dashboard.context import Form, org_access
from regward.server.dashboard.forms import safe_next
from regward.server.dashboard.rendering import error_page, org_path, page_router, redirect, render
from regward.server.dashboard.security import same_token, start_session
from regward.server.models import SsoLogin, utcnow
from regward.server.oidc import OidcClient, SsoFailed
from regward.server.runtime import Server, server_of
from regward.server.services import sso, sso_accounts

router = page_router()
STATE_COOKIE = "regward_sso_state"
LOGIN_TTL = timedelta(minutes=10)
CALLBACK = "/auth/sso/callback"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def redirect_uri(request: Request, server: Server) -> str:
    base = (server.settings.public_url or str(request.base_url)).rstrip("/")
    return base + CALLBACK


def _client(server: Server) -> OidcClient:
    if server.oidc is None:
        raise SsoFailed("single sign-on is not set up on this server (REGWARD_OIDC_ISSUER)")
    return server.oidc


@router.get("/auth/sso/login")
async def sso_login(request: Request, next: str = "/") -> Response:
    server = server_of(request)
    client = _client(server)
    state = secrets.token_urlsafe(32)
    nonce = secrets.token_urlsafe(32)
    verifier = secrets.token_urlsafe(64)  # 86 characters, within RFC 7636's 43-128
    location = client.authorization_url(redirect_uri(request, server), state, nonce, verifier)
    now = utcnow()

    def remember() -> None:
        with server.database.session(write=True) as session:
            session.execute(delete(SsoLogin).where(SsoLogin.expires_at <= now))
            session.add(
                SsoLogin(
                    state_hash=_digest(state),
                    nonce=nonce,
                    code_verifier=verifier,
                    next_path=safe_next(next)[:500],
                    expires_at=now + LOGIN_TTL,
                )
            )

    await server.write_turn.run(remember)
    response = RedirectResponse(location, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=int(LOGIN_TTL.total_seconds()),
        httponly=True,
        samesite="lax",  # sent when the provider sends the browser back (a top-level GET)
        secure=request.url.scheme == "https",
        path="/auth/sso",
    )
    return response


@router.get(CALLBACK)
async def sso_callback(
    request: Request, state: str = "", code: str = "", error: str = "", error_description: str = ""
) -> Response:
    server = server_of(request)
    client = _client(server)
    cookie = request.cookies.get(STATE_COOKIE)

    def use_up() -> tuple[str, str, str, datetime] | None:
        with server.database.session(write=True) as session:
            # Used up whatever happens next: a state works once.
            login = session.get(SsoLogin, _digest(state)) if state else None
            if login is None:
                return None
            session.delete(login)
            return (login.nonce, login.code_verifier, login.next_path, login.expires_at)

    pending = await server.write_turn.run(use_up)
    if pending is None or not same_token(cookie, state) or pending[3] <= utcnow():
        return _refused(
            request,
            "This sign-in link is not valid any more: it was used already, it expired, or it "
            "was started in another browser. Start again from the sign-in page.",
        )
    nonce, verifier, next_path, _ = pending
    if error:
        return _refused(request, f"The identity provider said: {error_description or error}.")
    # The provider's answer is awaited outside the turn: it needs no lock.
    identity = await run_in_threadpool(
        client.sign_in, code, redirect_uri(request, server), verifier, nonce
    )

    def sign_in() -> str:
        with server.database.session(write=True) as session:
            _user, token = sso_accounts.sign_in(session, identity, server.settings.session_ttl)
            return token

    token = await server.write_turn.run(sign_in)
    response = RedirectResponse(next_path, status_code=303)
    start_session(request, response, token, server.settings.session_ttl)
    response.delete_cookie(STATE_COOKIE, path="/auth/sso")
    return response


def _refused(request: Request, message: str) -> Response:
    response = error_page(request, 401, "Single sign-on did not work", message)
    response.delete_cookie(STATE_COOKIE, path="/auth/sso")
    return response


# --- the organization's settings ------------------------------------------------------------


@router.get("/orgs/{org}/sso")
def sso_page(request: Request, org: str) -> Response:
    with org_access(request, org) as (session, visitor, organization):
        config = sso.get(session, organization)
        return render(
            request,
            "sso.html",
            visitor,
            org=org,
            tab="sso",
            title=f"Single sign-on · {org}",
            rules=[rule.to_dict() for rule in config.join],
            required=config.required,
            can_edit=visitor.is_owner(org),
            configured=server_of(request).oidc is not None,
        )


def _sso_write(request: Request, org: str, change: Callable[[sso.Config], sso.Config]) -> Response:
    with org_access(request, org, owner=True) as (session, visitor, organization):
        new = change(sso.get(session, organization))
        sso.put(
            session,
            organization,
            visitor.caller.user,
            [rule.to_dict() for rule in new.join],
            new.required,
        )
    return redirect(request, org_path(org, "sso"), "Single sign-on settings saved.")


@router.post("/orgs/{org}/sso/add")
def sso_add(request: Request, org: str, form: Form) -> Response:
    kind = "groups_claim" if forms.text(form, "kind") == "groups_claim" else "email_domain"
    rule = sso.Rule.parse(
        {kind: forms.text(form, "value"), "role": forms.text(form, "role") or "member"}, "rule"
    )
    return _sso_write(request, org, lambda c: dataclasses.replace(c, join=(*c.join, rule)))


@router.post("/orgs/{org}/sso/remove")
def sso_remove(request: Request, org: str, form: Form) -> Response:
    index = forms.whole_number(forms.text(form, "index"))
    index = -1 if index is None else index
    return _sso_write(
        request,
        org,
        lambda c: dataclasses.replace(c, join=tuple(r for n, r in enumerate(c.join) if n != index)),
    )


@router.post("/orgs/{org}/sso/required")
def sso_required(request: Request, org: str, form: Form) -> Response:
    required = forms.text(form, "required") == "true"
    return _sso_write(request, org, lambda c: dataclasses.replace(c, required=required))
