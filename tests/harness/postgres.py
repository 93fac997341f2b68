"""A real PostgreSQL 15 cluster for tests and benches, started in a temporary directory.

The cluster runs as the `postgres` user (initdb refuses root), listens on 127.0.0.1 at a free
port and on a unix socket in its own directory, and trusts local connections. One cluster serves a
whole test session; each test gets a fresh database cloned from a migrated template, which takes
a few milliseconds.

    cluster = PostgresCluster.start()
    url = cluster.create_database("t1", template="rwsrv_template")
    ...
    cluster.stop()
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.harness.server import free_port
from tests.harness.wait import wait_for

PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"


def pg_bin() -> Path | None:
    """The bin directory of the newest installed PostgreSQL, or None."""
    if not PG_ROOT.is_dir():
        return None
    versions = sorted(
        (p for p in PG_ROOT.iterdir() if (p / "bin" / "initdb").exists()),
        key=lambda p: int(p.name) if p.name.isdigit() else 0,
    )
    return versions[-1] / "bin" if versions else None


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    if pg_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql-15; make test does it)"
    if os.geteuid() != 0 and os.environ.get("USER") != SUPERUSER:
        return "starting PostgreSQL needs root (to run initdb as the postgres user)"
    return None


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", SUPERUSER, "--", *args]
    return args


@dataclass
class PostgresCluster:
    base: Path
    port: int
    bin: Path

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "sock"

    @classmethod
    def start(cls, prefix: str = "rwsrv-pg-") -> PostgresCluster:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        binary = pg_bin()
        assert binary is not None
        base = Path(tempfile.mkdtemp(prefix=prefix))
        base.chmod(0o755)
        cluster = cls(base=base, port=free_port(), bin=binary)
        cluster.socket_dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(base, SUPERUSER, SUPERUSER)
            shutil.chown(cluster.socket_dir, SUPERUSER, SUPERUSER)
        subprocess.run(
            _as_postgres(
                [
                    str(binary / "initdb"),
                    "-D",
                    str(cluster.datadir),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        cluster.resume()
        return cluster

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.datadir), *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def resume(self) -> None:
        """Start (or start again) the server process and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=300"
        )
        self._pg_ctl("-o", options, "-l", str(self.base / "server.log"), "-w", "start")

        def accepts() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(accepts, 30, f"PostgreSQL to accept connections on port {self.port}")

    def pause(self) -> None:
        """Stop the server process, keeping the data: a database restart mid-run."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def stop(self) -> None:
        """Stop the cluster and remove its directory."""
        try:
            self._pg_ctl("-m", "immediate", "-w", "stop")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL (psycopg 3) for `database` over TCP on loopback."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql.encode())

    def count(self, sql: str, *params: object) -> int:
        """The single number a query answers (e.g. a count from pg_stat_activity)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            row = connection.execute(sql.encode(), params).fetchone()
        return int(row[0]) if row else 0

    def create_database(self, name: str, template: str | None = None) -> str:
        clause = f" TEMPLATE {template}" if template else ""
        self.execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
