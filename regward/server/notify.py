"""Waking long-polls when a revision is applied, in this process or in any other.

Services call `announce(session, org, revision)` inside the transaction that applies it; the
notifier installed on the database turns that into a wake-up once the transaction commits:

- `LocalNotifier` (SQLite, one process): after commit, wakes this process's waiters.
- `PostgresNotifier` (several processes on one PostgreSQL): `pg_notify` inside the transaction
  (PostgreSQL delivers it only on commit), and a named background task `LISTEN`s and wakes this
  process's waiters, its own announcements included. After a lost connection it reconnects with
  backoff and wakes every waiter to re-read the database, since notifications may have been missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from regward.server.db import Database

if TYPE_CHECKING:
    from regward.server.long_polls import Poll

log = logging.getLogger(__name__)
CHANNEL = "regward_policy"
_KEY = "regward.announcements"


def announce(session: Session, organization: str, revision: int) -> None:
    """Once this session's transaction commits, wake waiters: `organization` is at `revision`."""
    session.info.setdefault(_KEY, []).append((organization, revision))


class Notifier(Protocol):
    def install(self, database: Database) -> None:
        """Hook into the database's sessions (call once, before serving)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def on_release(self, release: Callable[[str, list[Poll]], None]) -> None:
        """Call `release(organization, polls)` with the parked polls of an organization when a
        revision of it is announced (every organization's, when all must re-read)."""

    def park(self, organization: str, poll: Poll) -> None:
        """Hold `poll` until the next announcement for `organization`."""

    def unpark(self, organization: str, poll: Poll) -> None:
        """Forget `poll` (its wait ended otherwise); no-op when it is not parked."""

    def latest(self, organization: str) -> int:
        """The newest revision announced for `organization` in this process's life (0: none)."""
        ...

    def waiting(self, organization: str) -> int:
        """How many long-polls of `organization` this process holds now."""
        ...


class _Waiters:
    """Per-organization parked long-polls in one event loop; the shared part of both notifiers.

    A parked poll is data (regward.server.long_polls.Poll), not a suspended request: a wake-up
    hands all of an organization's polls at once to the release callback."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._latest: dict[str, int] = {}
        self._parked: dict[str, set[Poll]] = {}
        self.release: Callable[[str, list[Poll]], None] | None = None

    def bind(self) -> None:
        self.loop = asyncio.get_running_loop()

    def wake(self, organization: str, revision: int) -> None:
        """Record `revision` and release the organization's polls (event loop thread only)."""
        if revision > self._latest.get(organization, 0):
            self._latest[organization] = revision
        parked = self._parked.pop(organization, None)
        if parked and self.release is not None:
            self.release(organization, list(parked))

    def park(self, organization: str, poll: Poll) -> None:
        self._parked.setdefault(organization, set()).add(poll)

    def unpark(self, organization: str, poll: Poll) -> None:
        parked = self._parked.get(organization)
        if parked is not None:
            parked.discard(poll)
            if not parked:
                del self._parked[organization]

    def latest(self, organization: str) -> int:
        return self._latest.get(organization, 0)

    def waiting(self, organization: str) -> int:
        return len(self._parked.get(organization, ()))

    def wake_all(self) -> None:
        for organization in list(self._parked):
            self.wake(organization, 0)

    def wake_threadsafe(self, organization: str, revision: int) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.wake, organization, revision)


def _pop(session: Session) -> list[tuple[str, int]]:
    announcements: list[tuple[str, int]] = session.info.pop(_KEY, [])
    return announcements


class _WaitingNotifier:
    """This process's parked polls, released by the notifier that owns them."""

    def __init__(self) -> None:
        self._waiters = _Waiters()

    def on_release(self, release: Callable[[str, list[Poll]], None]) -> None:
        self._waiters.release = release

    def park(self, organization: str, poll: Poll) -> None:
        self._waiters.park(organization, poll)

    def unpark(self, organization: str, poll: Poll) -> None:
        self._waiters.unpark(organization, poll)

    def latest(self, organization: str) -> int:
        return self._waiters.latest(organization)

    def waiting(self, organization: str) -> int:
        return self._waiters.waiting(organization)


class LocalNotifier(_WaitingNotifier):
    """Wakes the waiters of this process only: right for SQLite, which one process serves."""

    def install(self, database: Database) -> None:
        def after_commit(session: Session) -> None:
            for organization, revision in _pop(session):
                self._waiters.wake_threadsafe(organization, revision)

        def after_rollback(session: Session) -> None:
            _pop(session)

        for sessions in (database.write_sessions, database.read_sessions):
            event.listen(sessions, "after_commit", after_commit)
            event.listen(sessions, "after_soft_rollback", _discard)
            event.listen(sessions, "after_rollback", after_rollback)

    async def start(self) -> None:
        self._waiters.bind()

    async def stop(self) -> None:
        self._waiters.wake_all()


def _discard(session: Session, _previous: Any) -> None:
    _pop(session)


class PostgresNotifier(_WaitingNotifier):
    """LISTEN/NOTIFY on one PostgreSQL: an apply in any process wakes waiters in all of them."""

    def __init__(self, conninfo: str) -> None:
        super().__init__()
        self._conninfo = conninfo
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    def install(self, database: Database) -> None:
        def before_commit(session: Session) -> None:
            for organization, revision in _pop(session):
                session.execute(select(func.pg_notify(CHANNEL, f"{revision}:{organization}")))

        for sessions in (database.write_sessions, database.read_sessions):
            event.listen(sessions, "before_commit", before_commit)
            event.listen(sessions, "after_soft_rollback", _discard)

    async def start(self) -> None:
        self._waiters.bind()
        self._task = asyncio.create_task(self._listen(), name="regward-pg-listen")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._waiters.wake_all()

    async def _listen(self) -> None:
        import psycopg

        delay = 0.1
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    delay = 0.1
                    # Anything applied while we were away: make every waiter re-read.
                    self._waiters.wake_all()
                    async for note in connection.notifies():
                        revision, _, organization = note.payload.partition(":")
                        if revision.isdigit():
                            self._waiters.wake(organization, int(revision))
            except psycopg.Error as error:
                self.connected.clear()
                log.warning("policy notifications: %s; reconnecting in %.1fs", error, delay)
            except Exception:
                # Never let the listener die: without it, other processes' applies go unheard.
                self.connected.clear()
                log.exception("policy notifications failed; reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def notifier_for(database: Database) -> Notifier:
    """The notifier that fits the database: LISTEN/NOTIFY on PostgreSQL, in-process on SQLite."""
    if database.is_sqlite:
        return LocalNotifier()
    url = database.engine.url.set(drivername="postgresql")
    return PostgresNotifier(url.render_as_string(hide_password=False))
