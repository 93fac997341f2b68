"""What every route needs: the runtime, the caller behind the bearer token, and for routes
under `/orgs/{org}` the organization with the caller's access to it checked.

    CallerDep        the caller (Unauthenticated without a valid token)
    MemberDep        read session; any member (outsiders get NotFound)
    OwnerDep         read session; owners only
    ReportDep        write session; any member, any token scope (agents' check-ins, denials)
    OwnerWriteDep    write session; owners with a read-write credential

The organization dependencies hold their session for the route's body and commit (or roll
back on an error) when the route returns, before the answer is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from regward.server.errors import Unauthenticated
from regward.server.models import Organization, Role
from regward.server.runtime import Server, WriteTurnDep, server_of
from regward.server.services import auth, names, orgs

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
    server = server_of(request)
    with server.database.session() as session:
        caller = resolve_bearer(session, credentials.credentials if credentials else None)
    server.token_usage.used(caller.token_id)
    return caller


ServerDep = Annotated[Server, Depends(server_of)]
CallerDep = Annotated[auth.Caller, Depends(current_caller)]
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


@dataclass
class OrgAccess:
    """An organization route's session, caller and organization (access already checked)."""

    session: Session
    caller: auth.Caller
    organization: Organization
    _committed: list[Callable[[], None]] = field(default_factory=list)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the session has committed (never when it rolls back)."""
        self._committed.append(callback)


OrgPath = Annotated[str, Path(json_schema_extra=names.NAME_SCHEMA)]
"""An organization's name in a path: the schema says what a name looks like."""


def _org_access(
    role: Role, *, write: bool, writes_settings: bool
) -> Callable[..., Iterator[OrgAccess]]:
    """A dependency opening a session (`write`) on the organization in the path for `role`;
    `writes_settings` also refuses read-only tokens. A write session waits for its turn
    first (`Server.write_turn`)."""

    def dependency(org: OrgPath, server: ServerDep, caller: CallerDep) -> Iterator[OrgAccess]:
        with server.database.session(write=write) as session:
            organization = orgs.access(session, caller, org, role=role, write=writes_settings)
            access = OrgAccess(session, caller, organization)
            yield access
        for callback in access._committed:
            callback()

    def write_dependency(
        org: OrgPath, server: ServerDep, caller: CallerDep, _turn: WriteTurnDep
    ) -> Iterator[OrgAccess]:
        yield from dependency(org, server, caller)

    return write_dependency if write else dependency


def _org_dep(role: Role, *, write: bool = False, writes_settings: bool = False) -> Any:
    # scope="function": the session commits when the route returns, before the answer is sent
    return Depends(
        _org_access(role, write=write, writes_settings=writes_settings), scope="function"
    )


MemberDep = Annotated[OrgAccess, _org_dep(Role.MEMBER)]
OwnerDep = Annotated[OrgAccess, _org_dep(Role.OWNER)]
ReportDep = Annotated[OrgAccess, _org_dep(Role.MEMBER, write=True)]
OwnerWriteDep = Annotated[OrgAccess, _org_dep(Role.OWNER, write=True, writes_settings=True)]
