"""Signing in and out, and the addresses that only lead elsewhere.

GET /            the Overview of the last organization used (or the page saying there is none)
GET|POST /signin, POST /signout
GET /switch?org=&tab=, GET /orgs/{org}
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from regward.server import password_sign_in
from regward.server.dashboard import forms
from regward.server.dashboard.context import CsrfFailed, Form, using
from regward.server.dashboard.rendering import (
    TAB_KEYS,
    org_path,
    page_router,
    redirect,
    render,
    sentence,
)
from regward.server.dashboard.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SIGNIN_CSRF_COOKIE,
    new_signin_csrf,
    same_token,
    start_session,
)
from regward.server.errors import PermissionDenied, Unauthenticated
from regward.server.runtime import server_of
from regward.server.services import auth

router = page_router()


@router.api_route("/", methods=["GET", "HEAD"])
def home(request: Request) -> Response:
    with using(request) as (_, visitor):
        last = visitor.last_org(request)
        if last is None:
            return render(request, "no_orgs.html", visitor, title="No organization")
        return redirect(request, org_path(last, "overview"))


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
        next=forms.safe_next(request.query_params.get("next", "/")),
        username_value=username,
        error=error,
        sso=server_of(request).oidc is not None,
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
    if not same_token(request.cookies.get(SIGNIN_CSRF_COOKIE), forms.text(form, CSRF_FIELD)):
        raise CsrfFailed
    username = forms.text(form, "username").strip()
    password = forms.text(form, "password")
    client = request.client.host if request.client else "unknown"
    server = server_of(request)
    wait = await run_in_threadpool(server.sign_in_limiter.retry_after, username, client)
    if wait:
        return _signin_page(
            request,
            status=429,
            username=username,
            error=f"Too many failed sign-in attempts. Wait {wait} seconds and try again.",
        )
    try:
        signed_in = await password_sign_in.sign_in(server, username, password, client)
    except Unauthenticated:
        return _signin_page(
            request, status=401, username=username, error="Wrong username or password."
        )
    except PermissionDenied as error:  # an organization of the user requires SSO
        return _signin_page(request, status=403, username=username, error=sentence(error))
    response = redirect(request, forms.safe_next(forms.text(form, "next") or "/"))
    start_session(request, response, signed_in.token, server.settings.session_ttl)
    response.delete_cookie(SIGNIN_CSRF_COOKIE, path="/signin")
    return response


@router.post("/signout")
def signout(request: Request, form: Form) -> Response:
    with using(request, write=True, one_time_password=True) as (session, visitor):
        auth.sign_out(session, visitor.caller)
    response = redirect(request, "/signin", "You are signed out.")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/switch")
def switch(request: Request, org: str = "", tab: str = "overview") -> Response:
    return redirect(request, org_path(org, tab if tab in TAB_KEYS else "overview"))


@router.get("/orgs/{org}")
def org_home(request: Request, org: str) -> Response:
    return redirect(request, org_path(org, "overview"))
