"""Device sign-in for `regward login` (RFC 8628): the machine asks for a code, then polls.

    POST /api/v1/auth/device        organization, machine, agent_id (form fields)
        -> device_code, user_code, verification_uri, verification_uri_complete,
           expires_in, interval
    POST /api/v1/auth/device/token  grant_type=urn:ietf:params:oauth:grant-type:device_code,
                                    device_code
        -> 200 access_token (read scope, bound to the machine), or 400 with `error`:
           authorization_pending, slow_down, access_denied, expired_token, invalid_grant

A person approves the code on the dashboard's `/device` page.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse

from regward.policy.schema import VISIBLE_WORDS
from regward.server.api.deps import ServerDep
from regward.server.runtime import WriteTurnDep
from regward.server.services import device_auth, names

router = APIRouter()
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
DEVICE_PAGE = "/device"


def verification_uri(request: Request, public_url: str | None) -> str:
    base = (public_url or str(request.base_url)).rstrip("/")
    return base + DEVICE_PAGE


@router.post(
    "/auth/device",
    summary="A machine asks to sign in: a code for a person to approve (RFC 8628)",
    responses={429: {"description": "too many open sign-in requests from this address"}},
)
def start(
    request: Request,
    server: ServerDep,
    organization: Annotated[str, Form(max_length=200, json_schema_extra=names.NAME_SCHEMA)],
    machine: Annotated[
        str,
        Form(
            min_length=1,
            max_length=device_auth.MAX_MACHINE_LENGTH,
            json_schema_extra=VISIBLE_WORDS,
        ),
    ],
    agent_id: Annotated[
        str,
        Form(
            min_length=1,
            max_length=device_auth.MAX_AGENT_ID_LENGTH,
            json_schema_extra=VISIBLE_WORDS,
        ),
    ],
    _turn: WriteTurnDep,
) -> JSONResponse:
    settings = server.settings
    client = request.client.host if request.client else "unknown"
    with server.database.session(write=True) as session:
        started = device_auth.start(
            session,
            organization,
            machine,
            agent_id,
            client,
            ttl=settings.device_code_ttl,
            interval=settings.device_poll_interval,
        )
    uri = verification_uri(request, settings.public_url)
    query = urllib.parse.urlencode({"code": started.user_code})
    return JSONResponse(
        {
            "device_code": started.device_code,
            "user_code": started.user_code,
            "verification_uri": uri,
            "verification_uri_complete": f"{uri}?{query}",
            "expires_in": started.expires_in,
            "interval": started.interval,
        },
        headers=NO_STORE,
    )


@router.post(
    "/auth/device/token",
    summary="The machine polls for its token (RFC 8628 §3.4)",
    responses={400: {"description": "RFC 8628 error: authorization_pending, slow_down, ..."}},
)
def token(
    server: ServerDep,
    grant_type: Annotated[str, Form(min_length=1, max_length=200)],
    device_code: Annotated[str, Form(min_length=1, max_length=200)],
    _turn: WriteTurnDep,
) -> JSONResponse:
    if grant_type != device_auth.GRANT_TYPE:
        return _refused(
            device_auth.Refused(
                "unsupported_grant_type",
                f"grant_type: {grant_type!r} must be {device_auth.GRANT_TYPE}",
            )
        )
    with server.database.session(write=True) as session:
        answer = device_auth.poll(session, device_code)
    if isinstance(answer, device_auth.Refused):
        return _refused(answer)
    return JSONResponse(
        {
            "access_token": answer.token,
            "token_type": "Bearer",
            "scope": "read",
            "organization": answer.organization,
            "username": answer.username,
        },
        headers=NO_STORE,
    )


def _refused(refused: device_auth.Refused) -> JSONResponse:
    return JSONResponse(
        {"error": refused.code, "error_description": refused.description},
        status_code=400,
        headers=NO_STORE,
    )
