"""The device approval page: `regward login` on a machine prints `/device?code=BCDF-GHJK`.

    GET  /device[?code=]   sign in first; then the code's machine and organization, with
                           Approve and Deny (or a box to type the code)
    POST /device           code, decision=approve|deny (CSRF-checked)

Only members of the organization the machine named find its code; wrong codes count toward a
limit per person and per address (regward.server.services.limits), so codes cannot be guessed.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from regward.server.dashboard.routes import (
    DashboardRoute,
    Form,
    _text,
    _using,
    render,
)
from regward.server.errors import InvalidInput, NotFound, TooManyRequests
from regward.server.runtime import server_of
from regward.server.services import device_auth
from regward.server.services.limits import SignInLimiter

router = APIRouter(route_class=DashboardRoute, include_in_schema=False)


def _limiter(request: Request) -> SignInLimiter:
    return server_of(request).device_code_limiter


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _check_limit(request: Request, username: str) -> None:
    wait = _limiter(request).retry_after(username, _client(request))
    if wait:
        raise TooManyRequests(f"too many wrong codes; wait {wait} seconds and try again")


@router.get("/device")
def device_page(request: Request, code: str = "") -> Response:
    code = code.strip()[:40]
    with _using(request) as (session, visitor):
        if not code:
            return render(request, "device.html", visitor, title="Sign in a machine", code="")
        _check_limit(request, visitor.username)
        try:
            pending = device_auth.find(session, visitor.caller, code)
        except (InvalidInput, NotFound) as error:
            failed = error
        else:
            return render(
                request,
                "device.html",
                visitor,
                title="Sign in a machine",
                code=device_auth.display_user_code(device_auth.normalize_user_code(code)),
                request_machine=pending.machine,
                request_org=pending.organization,
            )
    _limiter(request).failed(visitor.username, _client(request))
    return render(
        request,
        "device.html",
        visitor,
        status=failed.status,
        title="Sign in a machine",
        code=code,
        error=str(failed)[:1].upper() + str(failed)[1:],
    )


@router.post("/device")
def decide(request: Request, form: Form) -> Response:
    code = _text(form, "code")
    approve = _text(form, "decision") == "approve"
    with _using(request, write=True) as (session, visitor):
        _check_limit(request, visitor.username)
        pending = device_auth.find(session, visitor.caller, code)
        machine = pending.machine
        organization = device_auth.decide(session, visitor.caller, code, approve=approve)
    if approve:
        done = f"{machine} is signed in to {organization.name}"
        detail = (
            "Go back to its terminal: it finishes by itself. Its token is on your Tokens page "
            "and on the organization's Devices page, where it can be revoked."
        )
    else:
        done = f"{machine} was not signed in"
        detail = "Its terminal says so; nothing was saved."
    # A page, not a redirect: posting the form again finds the code decided, and changes nothing.
    with _using(request) as (_, visitor):
        return render(
            request,
            "device.html",
            visitor,
            title="Sign in a machine",
            code="",
            done=done,
            done_detail=detail,
        )
