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
import functools
import logging
from typing import Any, Protocol

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from regward.server.db import Database

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

    async def wait(
        self,
        organization: str,
        after: int,
        timeout: float,
        cancel: asyncio.Future[Any] | None = None,
    ) -> int | None:
        """Wait until a revision newer than `after` may exist, up to `timeout` seconds.

        Returns None at the timeout or when `cancel` (e.g. the client went away) completes
        first; else the newest revision announced for the organization (it may be <= `after`
        when every waiter was woken to re-read, e.g. after a reconnect)."""
        ...

    def waiting(self, organization: str) -> int:
        """How many long-polls of `organization` this process holds now."""
        ...


class _Waiters:
    """Per-organization wake-ups in one event loop; the shared part of both notifiers.

    A waiter is one bare Future (no task), so thousands of idle long-polls stay cheap."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._latest: dict[str, int] = {}
        self._waiting: dict[str, set[asyncio.Future[bool]]] = {}

    def bind(self) -> None:
        self.loop = asyncio.get_running_loop()

    def wake(self, organization: str, revision: int) -> None:
        """Record `revision` and release the organization's waiters (event loop thread only)."""
        if revision > self._latest.get(organization, 0):
            self._latest[organization] = revision
        for waiter in self._waiting.pop(organization, ()):
            if not waiter.done():
                waiter.set_result(True)

    def waiting(self, organization: str) -> int:
        return len(self._waiting.get(organization, ()))

    def wake_all(self) -> None:
        for organization in list(self._waiting):
            self.wake(organization, 0)

    def wake_threadsafe(self, organization: str, revision: int) -> None:
        if self.loop is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.wake, organization, revision)

    async def wait(
        self,
        organization: str,
        after: int,
        timeout: float,
        cancel: asyncio.Future[Any] | None = None,
    ) -> int | None:
        latest = self._latest.get(organization, 0)
        if latest > after:
            return latest
        # The waiter is released by a wake-up (True), the timer or `cancel` (False): a timer
        # handle and a callback, not asyncio.wait's set, futures and callbacks per poll.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        waiting = self._waiting.setdefault(organization, set())
        waiting.add(waiter)
        timer = loop.call_later(timeout, _release, waiter)
        released = functools.partial(_released, waiter)
        if cancel is not None:
            cancel.add_done_callback(released)
        try:
            woken = await waiter
        finally:
            timer.cancel()
            if cancel is not None:
                cancel.remove_done_callback(released)
            waiting.discard(waiter)
            if not waiting and self._waiting.get(organization) is waiting:
                del self._waiting[organization]
        return self._latest.get(organization, 0) if woken else None


def _release(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


def _released(waiter: asyncio.Future[bool], _cancel: asyncio.Future[Any]) -> None:
    _release(waiter)


def _pop(session: Session) -> list[tuple[str, int]]:
    announcements: list[tuple[str, int]] = session.info.pop(_KEY, [])
    return announcements


class _WaitingNotifier:
    """This process's waiters, woken by the notifier that owns them."""

    def __init__(self) -> None:
        self._waiters = _Waiters()

    async def wait(
        self,
        organization: str,
        after: int,
        timeout: float,
        cancel: asyncio.Future[Any] | None = None,
    ) -> int | None:
        return await self._waiters.wait(organization, after, timeout, cancel)

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
