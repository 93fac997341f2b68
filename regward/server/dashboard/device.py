"""The device approval page: `regward login` on a machine prints `/device?code=BCDF-GHJK`.

    GET  /device[?code=]   sign in first; then the code's machine and organization, with
                           Approve and Deny (or a box to type the code)
    POST /device           code, decision=approve|deny (CSRF-checked)

Only members of the organization the machine named find its code; wrong codes count toward a
limit per person and per address (regward.server.services.limits), so codes cannot be guessed.
"""

from __future__ import annotations

from fastapi import Request, Response

from regward.server.dashboard.context import Form, using
from regward.server.dashboard.forms import text
from regward.server.dashboard.rendering import page_router, render, sentence
from regward.server.errors import InvalidInput, NotFound, TooManyRequests
from regward.server.runtime import server_of
from regward.server.services import device_auth
from regward.server.services.limits import SignInLimiter

router = page_router()


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
    with using(request) as (session, visitor):
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
        error=sentence(failed),
    )


@router.post("/device")
def decide(request: Request, form: Form) -> Response:
    code = text(form, "code")
    approve = text(form, "decision") == "approve"
    with using(request, write=True) as (session, visitor):
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
    with using(request) as (_, visitor):
        return render(
            request,
            "device.html",
            visitor,
            title="Sign in a machine",
            code="",
            done=done,
            done_detail=detail,
        )
