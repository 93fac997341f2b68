"""Users, passwords and bearer tokens: who is calling, and with which rights.

Passwords are hashed with argon2id. Tokens are 256 random bits; only their SHA-256 is stored,
which is enough for values of that entropy. A sign-in token (`rws_...`) expires after the
session lifetime; personal access tokens (`rwp_...`, see `tokens`) last until revoked.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Select, bindparam, func, select, update
from sqlalchemy.orm import Session

from regward.server.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from regward.server.models import (
    Membership,
    Organization,
    Revision,
    Scope,
    Token,
    TokenKind,
    User,
    utcnow,
)
from regward.server.observe import note_caller
from regward.server.services import sso
from regward.server.services.names import check_name

# argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about 30 ms here, where
# argon2-cffi's default (64 MiB, 4 lanes) takes about a second of a small server's two cores.
_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
PREFIXES = {TokenKind.SESSION: "rws_", TokenKind.PERSONAL: "rwp_", TokenKind.DEVICE: "rwd_"}


@dataclass(frozen=True)
class Caller:
    """The user behind a request and what their credential allows."""

    user: User
    token_id: int | None
    scope: Scope
    # A device token's binding: it reads this organization only, for this agent id only.
    organization_id: int | None = None
    agent_id: str | None = None

    @property
    def can_write(self) -> bool:
        return self.scope is Scope.READ_WRITE

    @property
    def is_device(self) -> bool:
        return self.agent_id is not None


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


def check_password(password: object) -> str:
    if not isinstance(password, str) or not (
        MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
    ):
        raise InvalidInput(
            f"the password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters"
        )
    return password


def generate_password() -> str:
    """A one-time password for a new account, easy to copy: 20 URL-safe characters."""
    return secrets.token_urlsafe(15)


def create_user(session: Session, username: str, password: str, *, one_time: bool = False) -> User:
    """A new account; Conflict when the name is taken. A `one_time` password (generated for
    them) must be changed at the first sign-in to the dashboard."""
    check_name(username, "username")
    if get_user(session, username) is not None:
        raise Conflict(f"username {username!r} is already taken")
    user = User(
        username=username, password_hash=hash_password(password), password_one_time=one_time
    )
    session.add(user)
    session.flush()
    return user


def get_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


@functools.cache
def _dummy_hash() -> str:
    """Checked when the user does not exist, so both cases take the same time."""
    return _hasher.hash("regward-dummy-password")


def authenticate(session: Session, username: str, password: str) -> User:
    """The user whose password this is; Unauthenticated (same words either way) otherwise."""
    checked = verify_password(session, username, password)
    user = session.get(User, checked.user_id)  # read in this session a moment ago
    if user is None:
        raise Unauthenticated("wrong username or password")
    if checked.rehashed:
        user.password_hash = checked.rehashed
    return user


@dataclass(frozen=True)
class CheckedPassword:
    """A password found right, before any write (argon2 is slow: sign-ins check it outside
    the write turn); `sign_in_checked` writes the sign-in if the password is still the same."""

    user_id: int
    password_hash: str
    """The stored hash the password matched."""
    rehashed: str | None
    """A new hash of the password when the stored one's parameters are outdated."""


def verify_password(session: Session, username: str, password: str) -> CheckedPassword:
    """Check `password` for `username` without writing; Unauthenticated (same words either
    way) when either is wrong."""
    user = get_user(session, username) if isinstance(username, str) else None
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        user = None
    if user is None:
        raise Unauthenticated("wrong username or password")
    stale = _hasher.check_needs_rehash(user.password_hash)
    return CheckedPassword(user.id, user.password_hash, _hasher.hash(password) if stale else None)


def set_password(
    session: Session, user: User, password: str, keep: int | None, *, one_time: bool = False
) -> None:
    """Set a new password for `user` (who may come from another session) and end the user's
    other sign-ins: whoever signed in with the old password is signed out. `keep` is the token
    of the sign-in that made the change; access tokens stay (they are revoked one by one).
    A `one_time` password (an owner's or the administrator's reset) must be changed at the next
    sign-in to the dashboard; the user's own choice clears that."""
    row = session.get(User, user.id)
    if row is None:
        raise Unauthenticated(f"user {user.username!r} no longer exists")
    row.password_hash = hash_password(password)
    row.password_one_time = one_time
    session.execute(
        update(Token)
        .where(
            Token.user_id == row.id,
            Token.kind == TokenKind.SESSION,
            Token.revoked_at.is_(None),
            Token.id != (keep if keep is not None else -1),
        )
        .values(revoked_at=utcnow())
    )
    session.flush()


def change_own_password(session: Session, caller: Caller, current: str, new: str) -> bool:
    """The caller replaces their password, proving the current one (Unauthenticated when it is
    wrong); their other sign-ins end. Whether the old one was one-time."""
    user = authenticate(session, caller.user.username, current)
    one_time = user.password_one_time
    if one_time and new == current:
        raise InvalidInput("choose a password of your own, not the one-time one")
    set_password(session, user, new, caller.token_id)
    return one_time


def new_token_value(kind: TokenKind) -> tuple[str, str]:
    """(the value shown once, its stored hash)."""
    value = PREFIXES[kind] + secrets.token_urlsafe(32)
    return value, token_hash(value)


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def sign_in(session: Session, username: str, password: str, lifetime: int) -> str:
    """Check the password (and that no organization of the user requires single sign-on);
    return a new sign-in token (read-write, lasts `lifetime` seconds)."""
    return sign_in_checked(session, verify_password(session, username, password), lifetime)


def sign_in_checked(session: Session, checked: CheckedPassword, lifetime: int) -> str:
    """`sign_in` for a password checked before this (write) session: Unauthenticated when the
    password changed since (the old one must not sign in)."""
    user = session.get(User, checked.user_id)
    if user is None or user.password_hash != checked.password_hash:
        raise Unauthenticated("wrong username or password")
    if checked.rehashed:
        user.password_hash = checked.rehashed
    sso.check_password_sign_in(session, user)
    return new_session(session, user, lifetime)


def new_session(session: Session, user: User, lifetime: int) -> str:
    """A new sign-in token for `user` (read-write, lasts `lifetime` seconds)."""
    value, digest = new_token_value(TokenKind.SESSION)
    session.add(
        Token(
            user_id=user.id,
            kind=TokenKind.SESSION,
            name="sign-in",
            scope=Scope.READ_WRITE,
            token_hash=digest,
            expires_at=utcnow() + timedelta(seconds=lifetime),
        )
    )
    session.flush()
    return value


def resolve_token(session: Session, value: str) -> Caller:
    """The caller a bearer token stands for; Unauthenticated if unknown, expired or revoked."""
    if not value.startswith(tuple(PREFIXES.values())) or len(value) > 200:
        raise Unauthenticated("invalid token; sign in again or create a new access token")
    token = session.scalar(select(Token).where(Token.token_hash == token_hash(value)))
    if token is None or token.revoked_at is not None:
        raise Unauthenticated("invalid token; sign in again or create a new access token")
    if token.expires_at is not None and token.expires_at <= utcnow():
        raise Unauthenticated("your sign-in has expired; sign in again")
    note_caller(token.user.username, token.id)
    return Caller(
        user=token.user,
        token_id=token.id,
        scope=Scope(token.scope),
        organization_id=token.organization_id,
        agent_id=token.agent_id,
    )


def sign_out(session: Session, caller: Caller) -> None:
    """Revoke the token the caller used."""
    if caller.token_id is not None:
        token = session.get(Token, caller.token_id)
        if token is not None and token.revoked_at is None:
            token.revoked_at = utcnow()
            session.flush()


def require_write(caller: Caller) -> None:
    """PermissionDenied unless the caller's credential may change things."""
    if not caller.can_write:
        raise PermissionDenied("this token is read-only; use a read-write token")


def require_person(caller: Caller) -> None:
    """PermissionDenied for a machine's device token: it reads its organization's policy and
    reports its device, nothing about the person who approved it."""
    if caller.is_device:
        raise PermissionDenied(
            "a device token only reads its organization's policy; sign in as a person"
        )


@functools.cache
def _feed_query() -> Select[Any]:
    """Built once: constructing this statement costs more than running it on SQLite. One row
    per token found among `token_hashes` (a list, expanded), of plain values decided in the
    database (no timestamps to read back): thousands are read at once."""
    newest = (
        select(func.max(Revision.revision))
        .where(Revision.organization_id == Organization.id)
        .scalar_subquery()
    )
    return (
        select(
            Token.token_hash,
            Token.id,
            Token.revoked_at.is_not(None),
            Token.expires_at <= bindparam("now"),
            Token.organization_id,
            Organization.id,
            Membership.role.is_not(None),
            newest,
        )
        .select_from(Token)
        .outerjoin(Organization, Organization.name == bindparam("organization"))
        .outerjoin(
            Membership,
            (Membership.user_id == Token.user_id) & (Membership.organization_id == Organization.id),
        )
        .where(Token.token_hash.in_(bindparam("token_hashes", expanding=True)))
    )


class FeedGrant(NamedTuple):
    """The outcome of one feed access check: the organization id and its newest revision, or
    the error to answer; `token_id` whenever the token exists (for the access log)."""

    token_id: int | None
    organization_id: int = 0
    revision: int = 0
    error: ServiceError | None = None

    def unwrap(self) -> tuple[int, int, int]:
        """(organization id, revision, token id), noting the caller; or raise the error."""
        if self.token_id is not None:
            note_caller(None, self.token_id)
        if self.error is not None or self.token_id is None:
            raise self.error or Unauthenticated(_INVALID)
        return self.organization_id, self.revision, self.token_id


_INVALID = "invalid token; sign in again or create a new access token"
FEED_BATCH = 500  # tokens per query: well under SQLite's and PostgreSQL's parameter limits
_PREFIXES = tuple(PREFIXES.values())


def feed_access_many(
    session: Session, organization: str, tokens: Iterable[str | None]
) -> dict[str | None, FeedGrant]:
    """The policy feed's check, polled by every agent, for many tokens at once: the checks of
    `resolve_token` and `orgs.access` (member, any scope) and the newest revision number, in
    one query per `FEED_BATCH` tokens. Errors are Unauthenticated or NotFound as those
    functions raise them."""
    grants: dict[str | None, FeedGrant] = {}
    by_hash: dict[str, str] = {}
    for token in tokens:
        if not token or len(token) > 200 or not token.startswith(_PREFIXES):
            grants[token] = FeedGrant(None, error=Unauthenticated(_INVALID))
        else:
            by_hash[token_hash(token)] = token
    hashes = list(by_hash)
    query = _feed_query()
    connection = session.connection()  # rows as tuples, past the ORM's loading
    values = {"organization": organization, "now": utcnow()}
    for start in range(0, len(hashes), FEED_BATCH):
        values["token_hashes"] = hashes[start : start + FEED_BATCH]
        for row in connection.execute(query, values):
            grants[by_hash[row[0]]] = _grant(row, organization)
    for token in by_hash.values():
        if token not in grants:
            grants[token] = FeedGrant(None, error=Unauthenticated(_INVALID))
    return grants


def _grant(row: Any, organization: str) -> FeedGrant:
    _hash, token_id, revoked, expired, bound_to, organization_id, member, revision = row
    if revoked:
        return FeedGrant(None, error=Unauthenticated(_INVALID))
    if expired:
        return FeedGrant(token_id, error=Unauthenticated("your sign-in has expired; sign in again"))
    bound_elsewhere = bound_to is not None and bound_to != organization_id
    if organization_id is None or not member or revision is None or bound_elsewhere:
        return FeedGrant(token_id, error=NotFound(f"organization {organization!r} not found"))
    return FeedGrant(token_id, organization_id, revision)


def feed_access(session: Session, token: str | None, organization: str) -> tuple[int, int, int]:
    """`feed_access_many` for one token: (organization id, revision, token id), or raises."""
    return feed_access_many(session, organization, [token])[token].unwrap()
