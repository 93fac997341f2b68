"""The dashboard's pages and form posts, all built on `regward.server.services`.

Every page is plain HTML from a Jinja2 template (autoescaped); every change is a `<form>` post
answered by a redirect (post/redirect/get), or by the same page with the error beside the field
and the user's input kept. Reads use a read session; each write one write session, so a failed
write changes nothing.

    /signin  /signout  /switch?org=&tab=  /tokens
    /orgs/{org}/registry-access   (toggle, add, edit, allowed, remove, apply)
    /orgs/{org}/activity  /members  /devices  /blocked  /test
"""

from __future__ import annotations

import hashlib
import logging
import urllib.parse
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from regward.errors import RegwardError
from regward.policy import Action, ImageReference, evaluate, lint
from regward.server.dashboard import views
from regward.server.dashboard.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    csrf_for_session,
    new_signin_csrf,
    same_token,
)
from regward.server.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from regward.server.models import Organization, Role, Scope
from regward.server.runtime import server_of
from regward.server.services import (
    activity,
    auth,
    denials,
    devices,
    names,
    orgs,
    registry_access,
    tokens,
)
from regward.server.services.auth import Caller

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
NOTICE_COOKIE = "regward_notice"
ORG_COOKIE = "regward_org"
TABS = (
    ("registry-access", "Registry Access"),
    ("activity", "Activity"),
    ("members", "Members"),
    ("devices", "Devices"),
    ("blocked", "Blocked pulls"),
    ("test", "Test an image"),
)
TAB_KEYS = frozenset(key for key, _ in TABS)
PAGE_SIZE = 25
HEADINGS = {
    401: "Sign-in refused",
    403: "Not allowed",
    404: "Not found",
    409: "Changed meanwhile",
    422: "Not accepted",
    429: "Too many attempts",
}
log = logging.getLogger(__name__)
# Pages of our own only: no inline script or style, no frames, forms post back here.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


# --- failures that end a request early ----------------------------------------------------


class SignInRequired(Exception):
    """No valid session: send the browser to the sign-in page, then back."""


class CsrfFailed(Exception):
    """A form post without this session's CSRF token."""


class DashboardRoute(APIRoute):
    """Turns the early exits above and the services' errors into pages, and adds headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += "?" + request.url.query
                response = RedirectResponse(
                    "/signin?" + urllib.parse.urlencode({"next": target}), status_code=303
                )
                response.delete_cookie(SESSION_COOKIE, path="/")
            except CsrfFailed:
                response = error_page(
                    request,
                    403,
                    "This form cannot be accepted",
                    "The form did not carry this session's security token: it came from another "
                    "site or from a page older than your sign-in. Go back, reload the page and "
                    "submit it again.",
                )
            except ServiceError as error:
                heading = HEADINGS.get(error.status, "Something is not right")
                response = error_page(request, error.status, heading, _sentence(error))
            except IntegrityError:
                response = error_page(
                    request,
                    409,
                    "Changed meanwhile",
                    "Someone else made a conflicting change at the same moment. Nothing of "
                    "yours was saved; go back, reload the page and try again.",
                )
            except DBAPIError:
                log.warning("database error on %s", request.url.path, exc_info=True)
                response = error_page(
                    request,
                    503,
                    "Database unavailable",
                    "The database cannot be reached right now. Nothing was changed; try again "
                    "in a moment.",
                )
            response.headers.update(SECURITY_HEADERS)
            return response

        return route


router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


# --- templates -----------------------------------------------------------------------------


@cache
def _static_version(name: str) -> str:
    return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]


def static_url(name: str) -> str:
    """`/static/NAME?v=HASH`: browsers may cache it, a new release changes the address."""
    return f"/static/{name}?v={_static_version(name)}"


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.globals["static"] = static_url
    return environment


def _sentence(error: RegwardError) -> str:
    text = str(error)
    if text.startswith("entry."):
        text = text[len("entry.") :]
    return text[:1].upper() + text[1:]


def _org_path(org: str, tab: str = "registry-access") -> str:
    return f"/orgs/{urllib.parse.quote(org, safe='')}/{tab}"


@dataclass
class Visitor:
    """The signed-in user of this request, their session and organizations."""

    caller: Caller
    session_token: str
    orgs: list[tuple[str, Role]]

    @property
    def username(self) -> str:
        return self.caller.user.username

    @property
    def csrf_token(self) -> str:
        return csrf_for_session(self.session_token)

    def role_in(self, org: str) -> Role | None:
        return next((role for name, role in self.orgs if name == org), None)


def render(
    request: Request,
    template: str,
    visitor: Visitor | None = None,
    *,
    org: str | None = None,
    tab: str = "",
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page; with a visitor, the header (organizations, account) and tabs of `org`."""
    values: dict[str, Any] = {
        "title": context.pop("title", "Regward"),
        "tab": tab,
        "org": org,
        "tabs": TABS,
        "org_url": (lambda key: _org_path(org, key)) if org else (lambda key: "/"),
        "orgs": [name for name, _ in visitor.orgs] if visitor else [],
        "username": visitor.username if visitor else "",
        "role": (visitor.role_in(org) if visitor and org else None),
        "csrf_token": visitor.csrf_token if visitor else context.pop("csrf_token", ""),
        "notice": request.cookies.get(NOTICE_COOKIE, ""),
    }
    values.update(context)
    html = _environment().get_template(template).render(values)
    response = HTMLResponse(html, status_code=status)
    if values["notice"]:
        response.delete_cookie(NOTICE_COOKIE, path="/")
    if org and visitor:
        response.set_cookie(ORG_COOKIE, org, httponly=True, samesite="lax", path="/")
    return response


def error_page(request: Request, status: int, heading: str, message: str) -> HTMLResponse:
    return render(
        request, "error.html", status=status, title=heading, heading=heading, message=message
    )


def redirect(request: Request, url: str, notice: str | None = None) -> RedirectResponse:
    """303 to `url`, with a one-time notice shown by the next page."""
    response = RedirectResponse(url, status_code=303)
    if notice:
        response.set_cookie(
            NOTICE_COOKIE,
            notice,
            max_age=60,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
            path="/",
        )
    return response


# --- sessions and forms -------------------------------------------------------------------


_server = server_of


def _visitor(request: Request, session: Session) -> Visitor:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired
    try:
        caller = auth.resolve_token(session, token)
    except Unauthenticated:
        raise SignInRequired from None
    memberships = orgs.list_for_user(session, caller.user)
    return Visitor(caller, token, [(org.name, role) for org, role in memberships])


@contextmanager
def _using(request: Request, *, write: bool = False) -> Iterator[tuple[Session, Visitor]]:
    with _server(request).database.session(write=write) as session:
        yield session, _visitor(request, session)


@contextmanager
def _org(
    request: Request, name: str, *, owner: bool = False, write: bool | None = None
) -> Iterator[tuple[Session, Visitor, Organization]]:
    """The organization `name` for this visitor (NotFound for outsiders); with `owner`, owner
    rights and (unless `write=False`, for an owner-only page) a write session."""
    with _using(request, write=owner if write is None else write) as (session, visitor):
        organization = orgs.access(
            session, visitor.caller, name, role=Role.OWNER if owner else Role.MEMBER, write=owner
        )
        yield session, visitor, organization


async def checked_form(request: Request) -> FormData:
    """The posted form, refused unless it carries this session's CSRF token."""
    form = await request.form()
    session_token = request.cookies.get(SESSION_COOKIE)
    given = form.get(CSRF_FIELD)
    if not session_token or not isinstance(given, str):
        raise CsrfFailed
    if not same_token(csrf_for_session(session_token), given):
        raise CsrfFailed
    return form


Form = Annotated[FormData, Depends(checked_form)]


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _selector(value: object) -> list[str] | None:
    """The repositories half of an entry's key from a hidden field or query parameter: None
    when absent (the address alone names the entry), [] for the entry without repositories."""
    return registry_access.parse_repositories(value if isinstance(value, str) else None)


def _version(form: FormData) -> int | None:
    text = _text(form, "version")
    return int(text) if text.isdigit() else None


def _safe_next(target: str) -> str:
    """Only a path on this server: never `//other.host` or `https://...`."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


# --- signing in and out -------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    with _using(request) as (_, visitor):
        if not visitor.orgs:
            return render(request, "no_orgs.html", visitor, title="No organization")
        names = [name for name, _ in visitor.orgs]
        last = request.cookies.get(ORG_COOKIE)
        return redirect(request, _org_path(last if last in names else names[0]))


def _signin_page(
    request: Request, *, status: int = 200, error: str = "", username: str = ""
) -> HTMLResponse:
    token = request.cookies.get(SIGNIN_CSRF_COOKIE) or new_signin_csrf()
    response = render(
        request,
        "signin.html",
        status=status,
        title="Sign in",
        csrf_token=token,
        next=_safe_next(request.query_params.get("next", "/")),
        username_value=username,
        error=error,
        sso=_server(request).oidc is not None,
    )
    response.set_cookie(
        SIGNIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/signin",
    )
    return response


@router.get("/signin")
def signin_form(request: Request) -> Response:
    return _signin_page(request)


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await request.form()
    if not same_token(request.cookies.get(SIGNIN_CSRF_COOKIE), _text(form, CSRF_FIELD)):
        raise CsrfFailed
    username = _text(form, "username").strip()
    password = _text(form, "password")
    client = request.client.host if request.client else "unknown"
    limiter = _server(request).sign_in_limiter
    wait = limiter.retry_after(username, client)
    if wait:
        return _signin_page(
            request,
            status=429,
            username=username,
            error=f"Too many failed sign-in attempts. Wait {wait} seconds and try again.",
        )
    server = _server(request)

    def sign_in() -> str:
        with server.database.session(write=True) as session:
            value: str = auth.sign_in(session, username, password, server.settings.session_ttl)
            return value

    try:
        session_token = await run_in_threadpool(sign_in)
    except Unauthenticated:
        limiter.failed(username, client)
        return _signin_page(
            request, status=401, username=username, error="Wrong username or password."
        )
    except PermissionDenied as error:  # an organization of the user requires SSO
        return _signin_page(request, status=403, username=username, error=_sentence(error) + ".")
    limiter.succeeded(username)
    response = redirect(request, _safe_next(_text(form, "next") or "/"))
    response.set_cookie(
        SESSION_COOKIE,
        session_token,
        max_age=server.settings.session_ttl,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/signin")
    return response


@router.post("/signout")
def signout(request: Request, form: Form) -> Response:
    with _using(request, write=True) as (session, visitor):
        auth.sign_out(session, visitor.caller)
    response = redirect(request, "/signin", "You are signed out.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/switch")
def switch(request: Request, org: str = "", tab: str = "registry-access") -> Response:
    return redirect(request, _org_path(org, tab if tab in TAB_KEYS else "registry-access"))


@router.get("/orgs/{org}")
def org_home(request: Request, org: str) -> Response:
    return redirect(request, _org_path(org))


# --- Registry Access ----------------------------------------------------------------------


def _registry_page(
    request: Request,
    session: Session,
    visitor: Visitor,
    organization: Organization,
    *,
    status: int = 200,
    error: str = "",
    add_form: views.EntryForm | None = None,
    add_errors: dict[str, str] | None = None,
) -> HTMLResponse:
    state = registry_access.get_draft(session, organization)
    warnings = lint(state.policy)
    return render(
        request,
        "registry_access.html",
        visitor,
        org=organization.name,
        tab="registry-access",
        status=status,
        title=f"Registry Access · {organization.name}",
        error=error,
        can_edit=visitor.role_in(organization.name) is Role.OWNER,
        enabled=state.enabled,
        version=state.version,
        entries=views.entry_rows(state.registries, warnings),
        # "Off" is already the card's headline; the other whole-policy warnings go beside it.
        general_warnings=[
            views.capitalized(w.message) for w in warnings if w.entry == 0 and state.enabled
        ],
        pending=bool(state.pending),
        changes=[views.describe_change(change) for change in state.pending],
        applied_revision=state.applied_revision,
        applied_at=views.when(state.applied_at),
        add_form=add_form or views.EntryForm(),
        add_errors=add_errors or {},
    )


@router.get("/orgs/{org}/registry-access")
def registry_page(request: Request, org: str, add: str = "") -> Response:
    """`?add=HOST` fills in Add registry (the Blocked pulls page links here)."""
    with _org(request, org) as (session, visitor, organization):
        return _registry_page(
            request, session, visitor, organization, add_form=views.EntryForm(address=add[:300])
        )


def _draft_write(
    request: Request, org: str, write: Callable[[Session, Visitor, Organization], object], done: str
) -> Response:
    """Run one draft edit; on a stale version or bad input, show the page with the reason."""
    try:
        with _org(request, org, owner=True) as (session, visitor, organization):
            write(session, visitor, organization)
    except (Conflict, InvalidInput) as error:
        with _org(request, org) as (session, visitor, organization):
            return _registry_page(
                request, session, visitor, organization, status=error.status, error=_sentence(error)
            )
    return redirect(request, _org_path(org), done)


@router.post("/orgs/{org}/registry-access/toggle")
def toggle(request: Request, org: str, form: Form) -> Response:
    enabled = _text(form, "enabled") == "true"
    return _draft_write(
        request,
        org,
        lambda s, v, o: registry_access.set_enabled(s, o, v.caller.user, enabled, _version(form)),
        f"Registry Access Management will be {'on' if enabled else 'off'} after Save & Apply.",
    )


@router.post("/orgs/{org}/registry-access/add")
def add_registry(request: Request, org: str, form: Form) -> Response:
    entry = views.EntryForm.from_form(
        form, [a for a in form.getlist("actions") if isinstance(a, str)]
    )
    try:
        with _org(request, org, owner=True) as (session, visitor, organization):
            # Adding is independent of other edits (a duplicate address is refused anyway),
            # so no version: two owners adding different registries never block each other.
            registry_access.add_entry(session, organization, visitor.caller.user, entry.to_entry())
    except (Conflict, InvalidInput) as error:
        with _org(request, org) as (session, visitor, organization):
            return _registry_page(
                request,
                session,
                visitor,
                organization,
                status=error.status,
                error=f"The registry was not added. {_sentence(error)}",
                add_form=entry,
                add_errors=views.field_errors(str(error)),
            )
    return redirect(
        request,
        _org_path(org),
        f"Added {views.entry_label(entry.address, entry.to_entry().get('repositories', []))} "
        "to the draft. Select Save & Apply to enforce it.",
    )


@router.post("/orgs/{org}/registry-access/allowed")
def set_allowed(request: Request, org: str, form: Form) -> Response:
    """The Allowed switch of one entry, named by its key (hidden `address` and `repositories`)."""
    address = _text(form, "address")
    repositories = _selector(form.get("repositories"))
    allowed = _text(form, "allowed") == "true"

    def write(session: Session, visitor: Visitor, organization: Organization) -> object:
        entry = _find_entry(session, organization, address, repositories)
        if entry is None:
            raise NotFound(f"registry {address!r} is not in the list of {organization.name!r}")
        return registry_access.update_entry(
            session,
            organization,
            visitor.caller.user,
            entry["address"],
            {**entry, "allowed": allowed},
            _version(form),
            repositories=entry.get("repositories") or [],
        )

    verb = "allowed" if allowed else "blocked"
    label = views.entry_label(address, repositories or ())
    return _draft_write(request, org, write, f"{label} will be {verb} after Save & Apply.")


@router.post("/orgs/{org}/registry-access/remove")
def remove_registry(request: Request, org: str, form: Form) -> Response:
    """Remove one entry, named by its key (hidden `address` and `repositories`)."""
    address = _text(form, "address")
    repositories = _selector(form.get("repositories"))
    return _draft_write(
        request,
        org,
        lambda s, v, o: registry_access.remove_entry(
            s, o, v.caller.user, address, _version(form), repositories=repositories
        ),
        f"Removed {views.entry_label(address, repositories or ())} from the draft. "
        "Select Save & Apply to enforce it.",
    )


@router.post("/orgs/{org}/registry-access/apply")
def apply(request: Request, org: str, form: Form) -> Response:
    key = _server(request).signing_key
    revision = 0

    def write(session: Session, visitor: Visitor, organization: Organization) -> object:
        nonlocal revision
        applied = registry_access.apply(
            session, organization, visitor.caller.user, key, _version(form)
        )
        revision = applied.revision
        return applied

    response = _draft_write(request, org, write, "")
    if revision:
        response = redirect(
            request,
            _org_path(org),
            f"Applied as revision {revision}. Signed-in machines pick it up within seconds.",
        )
    return response


@router.post("/orgs/{org}/registry-access/discard")
def discard(request: Request, org: str, form: Form) -> Response:
    """Put the draft back to the applied revision (an edit like any other: versioned)."""

    def write(session: Session, visitor: Visitor, organization: Organization) -> object:
        applied = registry_access.current_policy(session, organization)
        if applied is None:
            raise Conflict(f"{organization.name!r} has no applied revision to go back to")
        return registry_access.replace_draft(
            session,
            organization,
            visitor.caller.user,
            enabled=applied.enabled,
            registries=[entry.to_dict() for entry in applied.registries],
            version=_version(form),
        )

    return _draft_write(
        request, org, write, "Pending changes discarded: the draft is the applied revision again."
    )


def _edit_page(
    request: Request,
    session: Session,
    visitor: Visitor,
    organization: Organization,
    original: str,
    original_repositories: list[str],
    form: views.EntryForm,
    *,
    status: int = 200,
    error: str = "",
    errors: dict[str, str] | None = None,
    current: dict[str, Any] | None = None,
) -> HTMLResponse:
    state = registry_access.get_draft(session, organization)
    return render(
        request,
        "registry_edit.html",
        visitor,
        org=organization.name,
        tab="registry-access",
        status=status,
        title=f"Edit {views.entry_label(original, original_repositories)}",
        error=error,
        original_address=original,
        original_repositories=registry_access.repositories_text(original_repositories),
        original_label=views.entry_label(original, original_repositories),
        version=state.version,
        form=form,
        errors=errors or {},
        current=current,
    )


def _find_entry(
    session: Session, organization: Organization, address: str, repositories: list[str] | None
) -> dict[str, Any] | None:
    """The draft's entry for `address` and `repositories` (None: the address alone, Conflict
    when it has several entries), or None when there is none."""
    registries = registry_access.get_draft(session, organization).registries
    entries = registry_access.parse_entries(registries)
    try:
        index = registry_access.find_index(entries, address, repositories, organization)
    except (InvalidInput, NotFound):
        return None
    return dict(registries[index])


@router.get("/orgs/{org}/registry-access/edit")
def edit_form(
    request: Request, org: str, address: str = "", repositories: str | None = None
) -> Response:
    """`?address=ghcr.io&repositories=acme/*`; `repositories` may be left out when the address
    has one entry, and is empty for the entry without repositories."""
    with _org(request, org, owner=True, write=False) as (session, visitor, organization):
        entry = _find_entry(session, organization, address, _selector(repositories))
        if entry is None:
            raise NotFound(f"registry {address!r} is not in the list of {org!r}")
        return _edit_page(
            request,
            session,
            visitor,
            organization,
            entry["address"],
            list(entry.get("repositories") or ()),
            views.EntryForm.from_entry(entry),
        )


@router.post("/orgs/{org}/registry-access/edit")
def edit(request: Request, org: str, form: Form) -> Response:
    """Save the edit of the entry named by hidden `original_address` and
    `original_repositories` (its key when the form was loaded)."""
    original = _text(form, "original_address")
    original_repositories = _selector(form.get("original_repositories"))
    entry = views.EntryForm.from_form(
        form, [a for a in form.getlist("actions") if isinstance(a, str)]
    )
    try:
        with _org(request, org, owner=True) as (session, visitor, organization):
            registry_access.update_entry(
                session,
                organization,
                visitor.caller.user,
                original,
                entry.to_entry(),
                _version(form),
                repositories=original_repositories,
            )
    except (Conflict, InvalidInput, NotFound) as error:
        with _org(request, org, owner=True, write=False) as (session, visitor, organization):
            current: dict[str, Any] | None = None
            if isinstance(error, Conflict | NotFound):
                found = _find_entry(session, organization, original, original_repositories)
                current = found if found is not None else {"missing": True}
            return _edit_page(
                request,
                session,
                visitor,
                organization,
                original,
                original_repositories or [],
                entry,
                status=error.status,
                error=f"Your change was not saved. {_sentence(error)}"
                + (
                    " Your edit is kept below: check it against the current entry and save again."
                    if current is not None
                    else ""
                ),
                errors={} if current is not None else views.field_errors(str(error)),
                current=current,
            )
    return redirect(
        request,
        _org_path(org),
        f"Changed {entry.address} in the draft. Select Save & Apply to enforce it.",
    )


# --- Activity ------------------------------------------------------------------------------


def _parse_time(text: str, name: str) -> datetime | None:
    # The page's date-time fields have no zone; the page says they are UTC.
    return names.check_time(text, name, naive_is_utc=True) if text else None


def _page_number(text: str) -> int:
    return int(text) if text.isdigit() and 0 < int(text) <= names.MAX_PAGE else 1


@router.get("/orgs/{org}/activity")
def activity_page(
    request: Request,
    org: str,
    action: str = "",
    actor: str = "",
    since: str = "",
    until: str = "",
    page: str = "1",
) -> Response:
    filters = {"action": action, "actor": actor.strip(), "since": since, "until": until}
    number = _page_number(page)
    with _org(request, org) as (session, visitor, organization):
        error = ""
        try:
            result = activity.list(
                session,
                organization,
                action=action or None,
                actor=filters["actor"] or None,
                since=_parse_time(since, "From"),
                until=_parse_time(until, "Until"),
                page=number,
                page_size=PAGE_SIZE,
            )
            events = [views.event_row(event) for event in result.items]
            total = result.total
        except InvalidInput as invalid:
            error, events, total = _sentence(invalid), [], 0

        def page_url(n: int) -> str:
            query = {k: v for k, v in filters.items() if v}
            return _org_path(org, "activity") + "?" + urllib.parse.urlencode({**query, "page": n})

        return render(
            request,
            "activity.html",
            visitor,
            org=org,
            tab="activity",
            title=f"Activity · {org}",
            error=error,
            status=422 if error else 200,
            filters=filters,
            filtered=any(filters.values()),
            action_choices=["registry_access.*", *activity.DESCRIPTIONS],
            events=events,
            newer_url=page_url(number - 1) if number > 1 else None,
            older_url=page_url(number + 1) if number * PAGE_SIZE < total else None,
        )


# --- Members -------------------------------------------------------------------------------


def _members_page(
    request: Request,
    session: Session,
    visitor: Visitor,
    organization: Organization,
    *,
    status: int = 200,
    error: str = "",
    add_form: dict[str, str] | None = None,
    new_password: dict[str, str] | None = None,
) -> HTMLResponse:
    members = [
        {"username": m.user.username, "role": m.role}
        for m in orgs.list_members(session, organization)
    ]
    return render(
        request,
        "members.html",
        visitor,
        org=organization.name,
        tab="members",
        status=status,
        title=f"Members · {organization.name}",
        error=error,
        can_edit=visitor.role_in(organization.name) is Role.OWNER,
        members=members,
        roles=[str(role) for role in (Role.MEMBER, Role.OWNER)],
        add_form=add_form or {"username": "", "role": "member"},
        new_password=new_password,
    )


@router.get("/orgs/{org}/members")
def members_page(request: Request, org: str) -> Response:
    with _org(request, org) as (session, visitor, organization):
        return _members_page(request, session, visitor, organization)


def _member_write(
    request: Request,
    org: str,
    write: Callable[[Session, Visitor, Organization], object],
    done: str,
    add_form: dict[str, str] | None = None,
) -> Response:
    try:
        with _org(request, org, owner=True) as (session, visitor, organization):
            write(session, visitor, organization)
    except (Conflict, InvalidInput) as error:
        with _org(request, org) as (session, visitor, organization):
            return _members_page(
                request,
                session,
                visitor,
                organization,
                status=error.status,
                error=_sentence(error),
                add_form=add_form,
            )
    return redirect(request, _org_path(org, "members"), done)


@router.post("/orgs/{org}/members/add")
def add_member(request: Request, org: str, form: Form) -> Response:
    username = _text(form, "username").strip()
    role = _text(form, "role") or "member"
    password: str | None = None

    def write(session: Session, visitor: Visitor, organization: Organization) -> object:
        nonlocal password
        _, password = orgs.add_member(session, organization, visitor.caller.user, username, role)
        return None

    response = _member_write(
        request, org, write, f"Added {username} as {role}.", {"username": username, "role": role}
    )
    if password is None:
        return response
    # A new account: its one-time password is shown on this answer only, never stored.
    with _org(request, org) as (session, visitor, organization):
        return _members_page(
            request,
            session,
            visitor,
            organization,
            new_password={"username": username, "password": password},
        )


@router.post("/orgs/{org}/members/role")
def change_role(request: Request, org: str, form: Form) -> Response:
    username = _text(form, "username")
    role = _text(form, "role")
    return _member_write(
        request,
        org,
        lambda s, v, o: orgs.set_role(s, o, v.caller.user, username, role),
        f"{username} is now {role}.",
    )


@router.post("/orgs/{org}/members/remove")
def remove_member(request: Request, org: str, form: Form) -> Response:
    username = _text(form, "username")
    if not _confirmed(form):
        with _org(request, org) as (_, visitor, _organization):  # the removal checks the role
            return _confirmation(
                request,
                visitor,
                org,
                question=f"Remove {username} from {org}?",
                consequence=f"{username} loses access to {org} at once.",
                verb="Remove",
                fields=[("username", username)],
                back=_org_path(org, "members"),
            )
    left = False

    def write(session: Session, visitor: Visitor, organization: Organization) -> object:
        nonlocal left
        orgs.remove_member(session, organization, visitor.caller.user, username)
        left = username == visitor.username
        return None

    response = _member_write(request, org, write, f"Removed {username} from {org}.")
    if left:  # the organization's pages are closed to you now
        return redirect(request, "/", f"You left {org}.")
    return response


def _confirmed(form: FormData) -> bool:
    """Whether an action that takes effect at once was confirmed: by the page's script after
    its dialog, or on the confirmation page the server shows without JavaScript."""
    return _text(form, "confirmed") == "yes"


def _confirmation(
    request: Request,
    visitor: Visitor,
    org: str | None,
    *,
    question: str,
    consequence: str,
    verb: str,
    fields: list[tuple[str, str]],
    back: str,
) -> HTMLResponse:
    """The page that asks before an action that takes effect at once, posting it again."""
    return render(
        request,
        "confirm.html",
        visitor,
        org=org,
        title=question,
        question=question,
        consequence=consequence,
        verb=verb,
        action=request.url.path,
        fields=fields,
        back=back,
    )


# --- Tokens --------------------------------------------------------------------------------


def _nav_org(request: Request, visitor: Visitor) -> str | None:
    names = [name for name, _ in visitor.orgs]
    last = request.cookies.get(ORG_COOKIE)
    return last if last in names else (names[0] if names else None)


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
            else "rwp_…",
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
        org=_nav_org(request, visitor),
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
    with _using(request) as (session, visitor):
        return _tokens_page(request, session, visitor)


@router.post("/tokens/create")
def create_token(request: Request, form: Form) -> Response:
    name = _text(form, "name")
    scope = _text(form, "scope")
    try:
        with _using(request, write=True) as (session, visitor):
            token, value = tokens.create(session, visitor.caller.user, name, scope)
            created = {"name": token.name, "value": value}
    except InvalidInput as error:
        with _using(request) as (session, visitor):
            return _tokens_page(
                request,
                session,
                visitor,
                status=422,
                error=_sentence(error),
                form={"name": name, "scope": scope},
            )
    with _using(request) as (session, visitor):
        return _tokens_page(request, session, visitor, created=created)


@router.post("/tokens/revoke")
def revoke_token(request: Request, form: Form) -> Response:
    text = _text(form, "token_id")
    if not text.isdigit():
        raise NotFound(f"token {text!r} not found")
    if not _confirmed(form):
        with _using(request) as (session, visitor):
            token = tokens.get(session, visitor.caller.user, int(text))
            return _confirmation(
                request,
                visitor,
                None,
                question=f"Revoke {token.name}?",
                consequence="Anything using it stops working at once; this cannot be undone.",
                verb="Revoke",
                fields=[("token_id", text)],
                back="/tokens",
            )
    with _using(request, write=True) as (session, visitor):
        token = tokens.revoke(session, visitor.caller.user, int(text))
        name = token.name
    return redirect(request, "/tokens", f"Revoked {name}: anything using it can no longer sign in.")


# --- Account ------------------------------------------------------------------------------


def _account_page(
    request: Request, visitor: Visitor, *, status: int = 200, error: str = ""
) -> HTMLResponse:
    return render(
        request,
        "account.html",
        visitor,
        org=_nav_org(request, visitor),
        tab="account",
        status=status,
        title="Your account",
        error=error,
    )


@router.get("/account")
def account_page(request: Request) -> Response:
    with _using(request) as (_, visitor):
        return _account_page(request, visitor)


@router.post("/account/password")
def change_password(request: Request, form: Form) -> Response:
    current = _text(form, "current_password")
    new = _text(form, "new_password")
    if new != _text(form, "confirm_password"):
        with _using(request) as (_, visitor):
            return _account_page(
                request, visitor, status=422, error="The two new passwords differ; type them again."
            )
    limiter = _server(request).sign_in_limiter
    client = request.client.host if request.client else "unknown"
    try:
        with _using(request, write=True) as (session, visitor):
            # Guessing the current password is limited like signing in.
            wait = limiter.retry_after(visitor.username, client)
            if wait:
                raise InvalidInput(f"too many wrong passwords; wait {wait} seconds and try again")
            auth.authenticate(session, visitor.username, current)
            auth.set_password(session, visitor.caller.user, new, visitor.caller.token_id)
    except (Unauthenticated, InvalidInput) as error:
        with _using(request) as (_, visitor):
            if isinstance(error, Unauthenticated):  # counted once the write session is over
                limiter.failed(visitor.username, client)
                message = "Your current password is not right."
            else:
                message = _sentence(error)
            return _account_page(request, visitor, status=error.status, error=message)
    return redirect(request, "/account", "Your password is changed.")


# --- Devices, blocked pulls, the image tester --------------------------------------------


@router.get("/orgs/{org}/devices")
def devices_page(request: Request, org: str) -> Response:
    with _org(request, org) as (session, visitor, organization):
        rows = [views.device_row(status) for status in devices.list(session, organization)]
        applied = registry_access.current(session, organization)
        return render(
            request,
            "devices.html",
            visitor,
            org=org,
            tab="devices",
            title=f"Devices · {org}",
            devices=rows,
            outdated_count=sum(row.outdated for row in rows),
            refused_count=sum(bool(row.refusal) for row in rows),
            unprotected_count=sum(bool(row.engine_problem) for row in rows),
            applied_revision=applied.revision if applied else 0,
        )


@router.get("/orgs/{org}/blocked")
def blocked_page(request: Request, org: str, page: str = "1") -> Response:
    number = _page_number(page)
    with _org(request, org) as (session, visitor, organization):
        result = denials.list(session, organization, page=number, page_size=PAGE_SIZE)
        base = _org_path(org, "blocked") + "?page="
        return render(
            request,
            "blocked.html",
            visitor,
            org=org,
            tab="blocked",
            title=f"Blocked pulls · {org}",
            denials=[views.denial_row(item) for item in result.items],
            can_edit=visitor.role_in(org) is Role.OWNER,
            newer_url=f"{base}{number - 1}" if number > 1 else None,
            older_url=f"{base}{number + 1}" if number * PAGE_SIZE < result.total else None,
        )


@router.get("/orgs/{org}/test")
def test_image(request: Request, org: str, image: str = "", action: str = "pull") -> Response:
    with _org(request, org) as (session, visitor, organization):
        chosen = Action.PUSH if action == "push" else Action.PULL
        results: list[dict[str, Any]] = []
        error = normalized = ""
        if image.strip():
            try:
                reference = ImageReference.parse(image.strip())
            except RegwardError as invalid:
                error = _sentence(invalid)
            else:
                normalized = str(reference)
                state = registry_access.get_draft(session, organization)
                draft = registry_access.draft_policy(session, organization)
                applied = registry_access.current_policy(session, organization)
                title = (
                    "Draft, with pending changes" if state.pending else "Draft (same as applied)"
                )
                policies = [(title, draft)]
                if applied is not None:
                    policies.append((f"Applied revision {applied.revision}", applied))
                for heading, policy in policies:
                    decision = evaluate(policy, chosen, reference)
                    entry = decision.entry
                    results.append(
                        {
                            "title": heading,
                            "allowed": decision.allowed,
                            "reason": decision.reason,
                            "entry": str(entry.address)
                            + (f" ({entry.nickname})" if entry.nickname else "")
                            if entry
                            else "",
                        }
                    )
        return render(
            request,
            "test_image.html",
            visitor,
            org=org,
            tab="test",
            title=f"Test an image · {org}",
            status=422 if error else 200,
            image=image,
            action=str(chosen),
            image_error=error,
            normalized=normalized,
            results=results,
        )
