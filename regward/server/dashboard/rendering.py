"""How a page reaches the browser: templates, security headers, redirects with a notice, and
the route class that turns early exits and the services' errors into pages.

Every page is plain HTML from a Jinja2 template (autoescaped); every change is a `<form>` post
answered by a redirect (post/redirect/get), or by the same page with the error beside the field
and the user's input kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import urllib.parse
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.exc import DBAPIError, IntegrityError

from regward.errors import RegwardError
from regward.policy.text import shown
from regward.server.dashboard.context import (
    ORG_COOKIE,
    CsrfFailed,
    PasswordChangeRequired,
    SignInRequired,
    Visitor,
    visitor_if_signed_in,
)
from regward.server.dashboard.security import SESSION_COOKIE
from regward.server.dashboard.views import capitalized
from regward.server.db import is_disk_full
from regward.server.errors import ServiceError

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
NOTICE_COOKIE = "regward_notice"
TABS = (
    ("overview", "Overview"),
    ("registry-access", "Registry Access"),
    ("activity", "Activity"),
    ("members", "Members"),
    ("devices", "Devices"),
    ("blocked", "Blocked pulls"),
    ("test", "Test an image"),
    ("sso", "Single sign-on"),
    ("webhooks", "Webhooks"),
)
TAB_KEYS = frozenset(key for key, _ in TABS)
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


class DashboardRoute(APIRoute):
    """Turns the early exits of `context` and the services' errors into pages, and adds the
    security headers to every answer."""

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
            except PasswordChangeRequired:  # the Account page says why
                response = redirect(request, "/account")
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
                response = error_page(request, error.status, heading, sentence(error))
            except IntegrityError:
                response = error_page(
                    request,
                    409,
                    "Changed meanwhile",
                    "Someone else made a conflicting change at the same moment. Nothing of "
                    "yours was saved; go back, reload the page and try again.",
                )
            except DBAPIError as error:
                if is_disk_full(error):
                    log.error("database disk full on %s: %s", request.url.path, error.orig)
                    response = error_page(
                        request,
                        503,
                        "Database disk full",
                        "The server's disk is full, so nothing was saved. Ask the operator to "
                        "free space on it; pages still show, and saving works again by itself "
                        "once there is room.",
                    )
                else:
                    log.warning("database error on %s", request.url.path, exc_info=True)
                    response = error_page(
                        request,
                        503,
                        "Database unavailable",
                        "The database cannot be reached right now. Nothing was changed; try "
                        "again in a moment.",
                    )
            response.headers.update(SECURITY_HEADERS)
            return response

        return route


def page_router() -> APIRouter:
    """A router for one page group: its answers pass through `DashboardRoute`."""
    return APIRouter(route_class=DashboardRoute, include_in_schema=False)


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
    environment.filters["shown"] = shown  # text stored before invisible characters were refused
    return environment


def sentence(error: RegwardError) -> str:
    """The error's message for a page, as a sentence: its field is shown by where it goes."""
    text = capitalized(error.message)
    return text if text.endswith((".", "?", "!")) else text + "."


def org_path(org: str, tab: str = "registry-access") -> str:
    return f"/orgs/{urllib.parse.quote(org, safe='')}/{tab}"


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
        "org_url": (lambda key: org_path(org, key)) if org else (lambda key: "/"),
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
    if FORM_COOKIE in request.cookies and kept_form(request) is None:
        response.delete_cookie(FORM_COOKIE, path="/")  # kept for another page: left it
    if org and visitor:
        response.set_cookie(ORG_COOKIE, org, httponly=True, samesite="lax", path="/")
    return response


def pager(
    path: str, query: dict[str, str], number: int, page_size: int, total: int
) -> dict[str, Any]:
    """The pager's links for page `number` of a list at `path`: each keeps `query` (the
    list's filters), so paging never drops them."""
    kept = {key: value for key, value in query.items() if value}

    def url(n: int) -> str:
        return path + "?" + urllib.parse.urlencode({**kept, "page": n})

    pages = max(1, -(-total // page_size))
    return {
        "newer_url": url(number - 1) if number > 1 else None,
        "older_url": url(number + 1) if number * page_size < total else None,
        "page_number": number,
        "page_count": pages,
    }


def error_page(request: Request, status: int, heading: str, message: str) -> HTMLResponse:
    """The error page, with the header and tabs when a signed-in visitor can use them."""
    visitor = visitor_if_signed_in(request)
    org = request.path_params.get("org")
    in_org = visitor is not None and isinstance(org, str) and visitor.role_in(org) is not None
    return render(
        request,
        "error.html",
        visitor,
        org=org if in_org else None,
        status=status,
        title=heading,
        heading=heading,
        message=message,
    )


def redirect(request: Request, url: str, notice: str | None = None) -> RedirectResponse:
    """303 to `url`, with a one-time notice shown by the next page."""
    response = RedirectResponse(url, status_code=303)
    if FORM_COOKIE in request.cookies:  # a form went through: its refusal is over
        response.delete_cookie(FORM_COOKIE, path="/")
    if notice:
        _set_minute_cookie(request, response, NOTICE_COOKIE, notice)
    return response


def _set_minute_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """A one-minute cookie for the next page only: not for scripts, not sent cross-site."""
    response.set_cookie(
        name,
        value,
        max_age=60,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


FORM_COOKIE = "regward_form"
MAX_KEPT_FORM = 3500
"""Characters of a kept form's cookie value; browsers keep cookies of up to 4,096 bytes."""


@dataclass(frozen=True)
class KeptForm:
    """A refused form, carried to the page its 303 sends the browser to (`refused_redirect`):
    the page shows `error` and the fields as typed, and its address is a GET page that a
    reload shows again (for a minute) instead of sending the form a second time. Another
    page, or a form that goes through, drops it."""

    path: str  # and query: rendering._page
    status: int  # the refusal's: the page answers with it again
    error: str
    values: dict[str, Any]
    errors: dict[str, str]


def refused_redirect(
    request: Request,
    url: str,
    status: int,
    error: str,
    values: dict[str, Any],
    errors: dict[str, str] | None = None,
) -> RedirectResponse | None:
    """303 to `url` (a GET page) with the refusal and the typed `values` (never a password)
    kept for it in a one-time cookie; None when they are too long for one (the caller shows
    the refusal at the form's address instead)."""
    target = urllib.parse.urlsplit(url)
    kept = json.dumps(
        {
            "path": _page(target.path, target.query),
            "status": status,
            "error": error,
            "values": values,
            "errors": errors or {},
        },
        separators=(",", ":"),
    )
    encoded = base64.urlsafe_b64encode(kept.encode()).decode()
    if len(encoded) > MAX_KEPT_FORM:
        return None
    response = RedirectResponse(url, status_code=303)
    _set_minute_cookie(request, response, FORM_COOKIE, encoded)
    return response


def kept_form(request: Request) -> KeptForm | None:
    """The refused form `refused_redirect` kept for this page, or None (none, another page's,
    or a cookie that is not one)."""
    text = request.cookies.get(FORM_COOKIE)
    if not text:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(text.encode()))
        kept = KeptForm(
            path=str(data["path"]),
            status=int(data["status"]),
            error=str(data["error"]),
            values=dict(data["values"]),
            errors={str(k): str(v) for k, v in dict(data["errors"]).items()},
        )
    except (ValueError, KeyError, TypeError):
        return None
    return kept if kept.path == _page(request.url.path, request.url.query) else None


def _page(path: str, query: str) -> str:
    """Which page a kept form belongs to: its path and query (the entry an Edit is of)."""
    return f"{path}?{query}" if query else path


def confirmation(
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
