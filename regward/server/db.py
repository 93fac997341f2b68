"""The database: one engine per process, short sessions, migrations by Alembic.

SQLite runs in WAL mode with a busy timeout. Write sessions on SQLite begin with
`BEGIN IMMEDIATE`, so two writers queue instead of failing half-way when one of them read
first; read sessions stay deferred and never block. PostgreSQL rows are locked where it
matters (`SELECT ... FOR UPDATE` in services) and drafts use optimistic versions.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

MIGRATIONS = Path(__file__).parent / "migrations"
BUSY_TIMEOUT_MS = 30_000  # how long a SQLite transaction waits for the write lock
T = TypeVar("T")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url` with the pragmas and pooling each backend needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_file(Path(parsed.database))
        # As many connections as request threads (Starlette's pool has 40): with SQLAlchemy's
        # default 15, writers waiting for SQLite's lock held them all and reads timed out.
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 30)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    # Up to 40 connections: one per request thread (Starlette's pool has 40), none waits.
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30, **kwargs)


def _private_file(database: Path) -> None:
    """Create the SQLite file owner-only (0600) before SQLite does (with 0644), in an
    owner-only directory: it holds password hashes and token digests. SQLite gives its -wal
    and -shm files the database file's mode. A file left readable by an older version is
    made owner-only too."""
    database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(database, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        found = database.stat()
        if found.st_mode & 0o077 and found.st_uid == os.geteuid():
            database.chmod(0o600)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        options = connection.get_execution_options()
        # Every transaction sets how long it waits for the write lock: a session that must
        # not wait (Database.session(wait=False)) shares the pool with those that do.
        busy = BUSY_TIMEOUT_MS if options.get("sqlite_wait", True) else 0
        connection.exec_driver_sql(f"PRAGMA busy_timeout={busy}")
        connection.exec_driver_sql(f"BEGIN {options.get('sqlite_begin', 'DEFERRED')}")


UNAVAILABLE = "the database is unavailable right now; try again in a moment"
DISK_FULL = (
    "the database's disk is full, so nothing was changed; an operator must free space on the "
    "server's disk. Reading still works, and writing works again by itself once there is room"
)
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_PG_DISK_FULL = "53100"  # SQLSTATE disk_full


def is_unavailable(error: DBAPIError) -> bool:
    """Whether `error` means the database cannot be reached now (worth a retry: 503)."""
    return error.connection_invalidated or isinstance(error, OperationalError | InterfaceError)


def is_disk_full(error: DBAPIError) -> bool:
    """Whether `error` is the database's disk (or its quota) being full: SQLite's SQLITE_FULL
    or PostgreSQL's disk_full."""
    original = error.orig
    return (
        getattr(original, "sqlite_errorcode", None) == _SQLITE_FULL
        or getattr(original, "sqlstate", None) == _PG_DISK_FULL
    )


def unavailable_reason(error: DBAPIError) -> str:
    """The one line a client (API or dashboard) gets for an unavailable database."""
    return DISK_FULL if is_disk_full(error) else UNAVAILABLE


class Database:
    """The engine and session factories of one server process."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        writer = (
            self.engine.execution_options(sqlite_begin="IMMEDIATE")
            if self.is_sqlite
            else self.engine
        )
        self.read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.write_sessions = sessionmaker(writer, expire_on_commit=False)
        self.unwaiting_write_sessions = sessionmaker(
            writer.execution_options(sqlite_wait=False), expire_on_commit=False
        )

    @contextmanager
    def session(self, *, write: bool = False, wait: bool = True) -> Iterator[Session]:
        """A session that commits when the block ends normally and rolls back otherwise.

        `wait=False` (writes only): on SQLite, fail at once with OperationalError when another
        transaction holds the write lock, instead of waiting up to BUSY_TIMEOUT_MS; for
        bookkeeping that may skip a turn and must never hold a request."""
        if write:
            factory = self.write_sessions if wait else self.unwaiting_write_sessions
        else:
            factory = self.read_sessions
        with factory() as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    def upgrade(self) -> None:
        """Bring the schema to the newest migration."""
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


class WriteTurn:
    """The one-writer turn of a server process on SQLite: held around every write session
    that the event loop starts (every writing route and dashboard form through
    `runtime.WriteTurnDep`, the webhook queue); `async with turn():`, or `await
    turn.run(work)` for sync work in a worker thread. PostgreSQL locks rows: no turn.

    A route's write session spans three worker-thread hops (open, route, commit) while it
    holds SQLite's write lock. Waiting for the lock in a worker thread instead, a herd of
    writers (hundreds of agents checking in after an apply) took every thread while the
    holder waited for one to commit: all stalled until SQLite's 30 s busy timeout. Here they
    wait in the event loop, holding no thread, and hand the lock on in order; a writer that
    waited in SQLite's busy handler beside them (which polls, in no order) could lose every
    hand-over until the timeout: `database is locked`."""

    def __init__(self, database: Database) -> None:
        self._sqlite = database.is_sqlite
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if not self._sqlite:
            yield
            return
        async with self._lock:
            yield

    async def run(self, work: Callable[[], T]) -> T:
        """`work()` (which opens its own write session) in a worker thread, in the turn."""
        async with self():
            return await run_in_threadpool(work)


def alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the packaged Alembic migrations against `engine` up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
