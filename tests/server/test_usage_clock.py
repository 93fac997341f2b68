"""Noting a token's last use is bookkeeping: on SQLite it never waits for the write lock (a
request thread waiting there stalled a herd of check-ins in bench/soak.py), and a use it could
not write is written at the next one."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from sqlalchemy import text

from regward.server.db import BUSY_TIMEOUT_MS, Database
from regward.server.models import Token
from regward.server.services import auth, tokens
from regward.server.settings import Settings
from tests.server.accounts import make_users


def test_last_use_skips_a_taken_write_lock_and_is_written_next_time(tmp_path: Path) -> None:
    path = tmp_path / "rw.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    make_users(database, Settings(data_dir=tmp_path / "data", database_url=database.url))
    with database.session(write=True) as session:
        user = auth.get_user(session, "bob")
        assert user is not None
        token_id = tokens.create(session, user, "laptop", "read")[0].id
    with database.session(write=True, wait=False) as session:
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == 0
    with database.session(write=True) as session:
        assert session.execute(text("PRAGMA busy_timeout")).scalar() == BUSY_TIMEOUT_MS

    def last_used() -> object:
        with database.session() as session:
            return session.get(Token, token_id).last_used_at  # type: ignore[union-attr]

    clock = tokens.UsageClock(database)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as holder:
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        clock.used(token_id)  # no error, no wait (busy_timeout 0 above)
        assert last_used() is None
        holder.execute("ROLLBACK")
    clock.used(token_id)
    assert last_used() is not None
    database.dispose()
