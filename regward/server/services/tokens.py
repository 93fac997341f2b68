"""Access tokens: personal ones for scripts, CI and agents, created on purpose (the value is
shown once, then only a hash and its first characters), and machines' device tokens from
`regward login` (device_auth). Names of a user's active personal tokens are unique; when each
token was last used is kept to the minute."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from regward.errors import quote
from regward.policy.schema import VISIBLE_WORDS
from regward.policy.text import refuse_invisible
from regward.server.db import Database
from regward.server.errors import Conflict, InvalidInput, NotFound
from regward.server.models import Scope, Token, TokenKind, User, utcnow
from regward.server.services.auth import new_token_value

MAX_NAME_LENGTH = 100
NAME_SCHEMA: dict[str, Any] = {"minLength": 1, **VISIBLE_WORDS}
"""How the API's schema describes a token's name beside its maxLength (what `create` checks)."""
HINT_LENGTH = 8  # the prefix and four random characters: `rwp_Xy3k`
USE_RESOLUTION = 60.0  # seconds: "last used" is kept to the minute
LISTED = (TokenKind.PERSONAL, TokenKind.DEVICE)  # sign-in sessions are not listed


def create(session: Session, user: User, name: str, scope: Scope | str) -> tuple[Token, str]:
    """A new token for `user`: (the row, the value to show once)."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"token name {quote(name)} must be 1 to {MAX_NAME_LENGTH} characters",
            field="name",
            value=name,
        )
    refuse_invisible(name, "name", InvalidInput)
    try:
        scope = Scope(scope)
    except ValueError:
        raise InvalidInput(
            f"scope {quote(scope)} must be 'read' or 'read-write'", field="scope", value=scope
        ) from None
    name = name.strip()
    taken = session.scalar(
        select(Token.id).where(
            Token.user_id == user.id,
            Token.kind == TokenKind.PERSONAL,
            Token.revoked_at.is_(None),
            func.lower(Token.name) == name.lower(),
        )
    )
    if taken is not None:
        raise Conflict(
            f"you already have a token named {quote(name)}; choose another name, or revoke "
            "that token first",
            field="name",
            value=name,
        )
    value, digest = new_token_value(TokenKind.PERSONAL)
    token = Token(
        user_id=user.id,
        kind=TokenKind.PERSONAL,
        name=name,
        scope=scope,
        token_hash=digest,
        hint=value[:HINT_LENGTH],
    )
    session.add(token)
    session.flush()
    return token, value


def list_for(session: Session, user: User) -> Sequence[Token]:
    """The user's personal access and device tokens, newest first, revoked ones included."""
    return session.scalars(
        select(Token)
        .where(Token.user_id == user.id, Token.kind.in_(LISTED))
        .order_by(Token.id.desc())
    ).all()


def get(session: Session, user: User, token_id: int) -> Token:
    """One of the user's personal access or device tokens; NotFound for anyone else's."""
    token = session.get(Token, token_id)
    if token is None or token.user_id != user.id or token.kind not in LISTED:
        raise NotFound(f"token {token_id} not found")
    return token


def revoke(session: Session, user: User, token_id: int) -> Token:
    """Revoke one of the user's tokens (idempotent); NotFound for anyone else's."""
    token = get(session, user, token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
    return token


class UsageClock:
    """Writes when each token was last used, at most once per `resolution` seconds per token,
    each time in a short write transaction of its own (a read never turns into a write) that
    never waits for SQLite's write lock: when it is taken, the write waits for the next use."""

    def __init__(
        self,
        database: Database,
        resolution: float = USE_RESOLUTION,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolution = resolution
        self._database = database
        self._clock = clock
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def used(self, token_id: int | None) -> None:
        self.used_many([] if token_id is None else [token_id])

    def used_many(self, token_ids: Iterable[int]) -> None:
        """Note that these tokens were used now: one UPDATE for those not written within the
        resolution (the policy feed checks many at once)."""
        now = self._clock()
        due: list[int] = []
        with self._lock:
            for token_id in token_ids:
                last = self._written.get(token_id)
                if last is None or now - last >= self.resolution:
                    self._written[token_id] = now
                    due.append(token_id)
        if not due:
            return
        try:
            # Never waits for SQLite's write lock: a request thread waiting here while the
            # lock's holder waited for a thread stalled hundreds of check-ins (bench/soak.py).
            with self._database.session(write=True, wait=False) as session:
                for start in range(0, len(due), 500):  # within every database's limit
                    session.execute(
                        update(Token)
                        .where(Token.id.in_(due[start : start + 500]))
                        .values(last_used_at=utcnow()),
                        execution_options={"synchronize_session": False},
                    )
        except OperationalError:  # the lock is taken: these tokens are written next time
            with self._lock:
                for token_id in due:
                    if self._written.get(token_id) == now:
                        del self._written[token_id]
