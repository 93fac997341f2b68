"""What every route needs: the runtime, the caller behind the bearer token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from regward.server.errors import Unauthenticated
from regward.server.runtime import Server, server_of
from regward.server.services import auth

_bearer = HTTPBearer(auto_error=False, description="A sign-in token or a personal access token")


def current_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> auth.Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("sign in first: send 'Authorization: Bearer TOKEN'")
    with server_of(request).database.session() as session:
        return auth.resolve_token(session, credentials.credentials)


ServerDep = Annotated[Server, Depends(server_of)]
CallerDep = Annotated[auth.Caller, Depends(current_caller)]
