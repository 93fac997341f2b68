"""What every route needs: the runtime, the caller behind the bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from regward.server.errors import Unauthenticated
from regward.server.runtime import Server, server_of
from regward.server.services import auth

_bearer = HTTPBearer(auto_error=False, description="A sign-in token or a personal access token")


def resolve_bearer(session: Session, token: str | None) -> auth.Caller:
    """The caller behind a bearer token; Unauthenticated without one."""
    if not token:
        raise Unauthenticated("sign in first: send 'Authorization: Bearer TOKEN'")
    return auth.resolve_token(session, token)


def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> auth.Caller:
    with server_of(request).database.session() as session:
        return resolve_bearer(session, credentials.credentials if credentials else None)


ServerDep = Annotated[Server, Depends(server_of)]
CallerDep = Annotated[auth.Caller, Depends(current_caller)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
