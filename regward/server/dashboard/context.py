"""Who is asking and for what: the signed-in visitor, their organization, the checked form.

    Visitor                 the signed-in user, their session token and organizations
    using(request)          a session and the visitor (SignInRequired without a valid session,
                            PasswordChangeRequired while their password is one-time)
    org_access(request, n)  with the organization `n` checked for the visitor (NotFound for
                            outsiders), optionally as its owner in a write session
    Form                    the posted form, refused (CsrfFailed) without this session's token;
                            the route runs in the write turn (`Server.write_turn`)
    owner_write(...)        one change by an owner; the page with the reason when refused

`SignInRequired`, `PasswordChangeRequired` and `CsrfFailed` end a request early;
`rendering.DashboardRoute` turns them into a redirect to the sign-in page, one to the Account
page, and an error page.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from regward.server.dashboard.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    csrf_for_session,
    same_token,
)
from regward.server.errors import Conflict, InvalidInput, ServiceError, Unauthenticated
from regward.server.models import Organization, Role
from regward.server.runtime import server_of
from regward.server.services import auth, orgs
from regward.server.services.auth import Caller

ORG_COOKIE = "regward_org"
T = TypeVar("T")


class SignInRequired(Exception):
    """No valid session: send the browser to the sign-in page, then back."""


class PasswordChangeRequired(Exception):
    """The visitor signed in with a one-time password: the Account page first."""


class CsrfFailed(Exception):
    """A form post without this session's CSRF token."""


@dataclass
class Visitor:
    """The signed-in user of this request, their session and organizations."""

    caller: Caller
    session_token: str
    orgs: list[tuple[str, Role]]
    last_used: str | None = None
    """The organization whose pages they opened last, on any browser."""

    @property
    def username(self) -> str:
        return self.caller.user.username

    @property
    def csrf_token(self) -> str:
        return csrf_for_session(self.session_token)

    def role_in(self, org: str) -> Role | None:
        return next((role for name, role in self.orgs if name == org), None)

    def is_owner(self, org: str) -> bool:
        return self.role_in(org) is Role.OWNER

    def last_org(self, request: Request) -> str | None:
        """The organization last opened in this browser (its cookie), else the one last opened
        anywhere, if still theirs; else their first one."""
        names = [name for name, _ in self.orgs]
        for last in (request.cookies.get(ORG_COOKIE), self.last_used):
            if last in names:
                return last
        return names[0] if names else None


def _visitor(request: Request, session: Session) -> Visitor:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise SignInRequired
    try:
        caller = auth.resolve_token(session, token)
    except Unauthenticated:
        raise SignInRequired from None
    memberships = orgs.list_for_user(session, caller.user)
    last = next(
        (org.name for org, _ in memberships if org.id == caller.user.last_organization_id), None
    )
    return Visitor(caller, token, [(org.name, role) for org, role in memberships], last)


def visitor_if_signed_in(request: Request) -> Visitor | None:
    """The visitor when the request carries a valid session (for an error page), else None;
    never raises for a database that cannot be reached."""
    try:
        with server_of(request).database.session() as session:
            return _visitor(request, session)
    except (SignInRequired, DBAPIError):
        return None


@contextmanager
def using(
    request: Request, *, write: bool = False, one_time_password: bool = False
) -> Iterator[tuple[Session, Visitor]]:
    """A session (committed when the block ends normally) and the visitor. A visitor whose
    password is one-time gets PasswordChangeRequired, except where `one_time_password` says
    the page is one they need (the Account page, signing out)."""
    with server_of(request).database.session(write=write) as session:
        visitor = _visitor(request, session)
        if visitor.caller.user.password_one_time and not one_time_password:
            raise PasswordChangeRequired
        yield session, visitor


@contextmanager
def org_access(
    request: Request, name: str, *, owner: bool = False, write: bool | None = None
) -> Iterator[tuple[Session, Visitor, Organization]]:
    """The organization `name` for this visitor (NotFound for outsiders); with `owner`, owner
    rights and (unless `write=False`, for an owner-only page) a write session."""
    with using(request, write=owner if write is None else write) as (session, visitor):
        organization = orgs.access(
            session, visitor.caller, name, role=Role.OWNER if owner else Role.MEMBER, write=owner
        )
        yield session, visitor, organization
    if visitor.last_used != organization.name:
        # Its own short write: a page read stays a read (SQLite would refuse the upgrade). A
        # page view holds no write turn: it never waits for the lock, and when another writer
        # holds it the page is remembered at the next view.
        try:
            with server_of(request).database.session(write=True, wait=False) as session:
                orgs.remember_last(session, visitor.caller.user, organization)
        except OperationalError:
            pass


async def checked_form(request: Request) -> AsyncIterator[FormData]:
    """The posted form, refused unless it carries this session's CSRF token; the route runs in
    the write turn (`Server.write_turn`), taken once the form is read and checked."""
    form = await request.form()
    session_token = request.cookies.get(SESSION_COOKIE)
    given = form.get(CSRF_FIELD)
    if not session_token or not isinstance(given, str):
        raise CsrfFailed
    if not same_token(csrf_for_session(session_token), given):
        raise CsrfFailed
    async with server_of(request).write_turn():
        yield form


# scope="function": the turn is left once the route has returned (and committed)
Form = Annotated[FormData, Depends(checked_form, scope="function")]


def owner_write(
    request: Request,
    name: str,
    write: Callable[[Session, Visitor, Organization], T],
    then: Callable[[T], Response],
    refused: Callable[[ServiceError, Session, Visitor, Organization], Response],
    *,
    catch: tuple[type[ServiceError], ...] = (Conflict, InvalidInput),
) -> Response:
    """One change by an owner of `name` in one write session, answered by `then` of what
    `write` returned once it is committed. When the services refuse it with one of `catch` (a
    stale version, bad input), nothing is written and `refused` shows the page with the reason;
    other errors become error pages."""
    try:
        with org_access(request, name, owner=True) as (session, visitor, organization):
            result = write(session, visitor, organization)
    except catch as error:
        with org_access(request, name) as (session, visitor, organization):
            return refused(error, session, visitor, organization)
    return then(result)
