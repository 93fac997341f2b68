"""The SQLite file holds password hashes and token digests: owner-only, with its WAL files."""

from __future__ import annotations

import stat
from pathlib import Path

from sqlalchemy import text

from regward.server.db import Database


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_sqlite_file_and_its_wal_files_are_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "regward.db"
    database = Database(f"sqlite:///{path}")
    try:
        with database.session(write=True) as session:
            session.execute(text("CREATE TABLE t (x INTEGER)"))
            session.execute(text("INSERT INTO t VALUES (1)"))
        wal = path.with_name("regward.db-wal")
        shm = path.with_name("regward.db-shm")
        assert wal.exists() and shm.exists()  # WAL mode, open connection
        assert (mode(path.parent), mode(path), mode(wal), mode(shm)) == (
            0o700,
            0o600,
            0o600,
            0o600,
        )
    finally:
        database.dispose()


def test_a_database_file_left_readable_by_others_is_made_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "regward.db"
    path.touch(mode=0o644)
    path.chmod(0o644)  # whatever the umask: as an older version left it
    database = Database(f"sqlite:///{path}")
    try:
        assert mode(path) == 0o600
        with database.session() as session:
            assert session.execute(text("SELECT 1")).scalar() == 1
    finally:
        database.dispose()
