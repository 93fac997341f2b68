"""Sign-in, the caller's account, personal access tokens, and the public signing key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from regward.server import first_password, password_sign_in
from regward.server.api.deps import CallerDep, ServerDep
from regward.server.models import MAX_REVISION, Scope, Token
from regward.server.runtime import WriteTurnDep
from regward.server.services import auth, orgs, tokens

router = APIRouter()


class Credentials(BaseModel):
    username: str = Field(max_length=200)
    password: str = Field(max_length=1024)


class NewToken(BaseModel):
    name: str = Field(max_length=tokens.MAX_NAME_LENGTH, json_schema_extra=tokens.NAME_SCHEMA)
    scope: Scope = Scope.READ


class NewPassword(BaseModel):
    current_password: str = Field(max_length=1024)
    new_password: str = Field(
        max_length=auth.MAX_PASSWORD_LENGTH,
        json_schema_extra={"minLength": auth.MIN_PASSWORD_LENGTH},
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def token_dict(token: Token) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "scope": token.scope,
        "kind": token.kind,
        # A device token's machine: its organization and agent id (None for personal tokens).
        "organization": token.organization.name if token.organization else None,
        "agent_id": token.agent_id,
        "created_at": _iso(token.created_at),
        "revoked_at": _iso(token.revoked_at),
        "hint": token.hint,
        "last_used_at": _iso(token.last_used_at),
        "active": token.revoked_at is None,
    }


class TokenOut(BaseModel):
    token: str = Field(examples=["rws_3q2..."])
    password_change_required: bool = Field(
        description="the password is one-time (generated for this user): the dashboard asks "
        "for a new one before anything else; this token works regardless"
    )


@router.post(
    "/auth/token",
    summary="Sign in with a password; returns a bearer token",
    response_model=TokenOut,
    responses={429: {"description": "too many failed attempts; see Retry-After"}},
)
async def sign_in(body: Credentials, request: Request, server: ServerDep) -> Response:
    client = request.client.host if request.client else "unknown"
    wait = await run_in_threadpool(server.sign_in_limiter.retry_after, body.username, client)
    if wait:
        return JSONResponse(
            {"detail": f"too many failed sign-ins; try again in {wait} seconds"},
            status_code=429,
            headers={"Retry-After": str(wait)},
        )
    signed_in = await password_sign_in.sign_in(server, body.username, body.password, client)
    return JSONResponse(
        {"token": signed_in.token, "password_change_required": signed_in.password_one_time}
    )


@router.delete("/auth/token", status_code=204, summary="Sign out: revoke the token used")
def sign_out(caller: CallerDep, server: ServerDep, _turn: WriteTurnDep) -> None:
    with server.database.session(write=True) as session:
        auth.sign_out(session, caller)


@router.get("/user", summary="The caller, and their organizations")
def me(caller: CallerDep, server: ServerDep) -> dict[str, Any]:
    with server.database.session() as session:
        memberships = orgs.list_for_caller(session, caller)
    return {
        "username": caller.user.username,
        "scope": caller.scope,
        # A password someone else chose: the dashboard asks for a new one first; the API and
        # tokens keep working.
        "password_change_required": caller.user.password_one_time,
        "organizations": [{"name": org.name, "role": role} for org, role in memberships],
    }


@router.put("/user/password", status_code=204, summary="Change the caller's password")
def change_password(
    body: NewPassword, caller: CallerDep, server: ServerDep, _turn: WriteTurnDep
) -> None:
    auth.require_person(caller)
    with server.database.session(write=True) as session:
        auth.require_write(caller)
        auth.change_own_password(session, caller, body.current_password, body.new_password)
    first_password.forget(server.settings.data_dir, caller.user.username)


@router.get("/signing-key", summary="The Ed25519 public key that signs every revision")
def signing_key(server: ServerDep) -> dict[str, Any]:
    """`chain`: after `regward server rotate-key`, each new key endorsed by the one before
    (`{"previous", "key", "signature"}`), so agents that pinned an older key follow."""
    return {
        "algorithm": "ed25519",
        "public_key": server.public_key,
        "chain": list(server.key_chain),
    }


@router.get("/tokens", summary="The caller's personal access tokens and machines' device tokens")
def list_tokens(caller: CallerDep, server: ServerDep) -> dict[str, Any]:
    auth.require_person(caller)
    with server.database.session() as session:
        return {"tokens": [token_dict(t) for t in tokens.list_for(session, caller.user)]}


@router.post("/tokens", status_code=201, summary="Create a personal access token (shown once)")
def create_token(
    body: NewToken, caller: CallerDep, server: ServerDep, _turn: WriteTurnDep
) -> dict[str, Any]:
    auth.require_write(caller)
    with server.database.session(write=True) as session:
        token, value = tokens.create(session, caller.user, body.name, body.scope)
        return {**token_dict(token), "token": value}


@router.delete(
    "/tokens/{token_id}", status_code=204, summary="Revoke a personal access or device token"
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=MAX_REVISION)],
    caller: CallerDep,
    server: ServerDep,
    _turn: WriteTurnDep,
) -> None:
    auth.require_write(caller)
    with server.database.session(write=True) as session:
        tokens.revoke(session, caller.user, token_id)
