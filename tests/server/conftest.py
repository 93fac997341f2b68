"""Fixtures for server tests: every database test runs on SQLite and on a real PostgreSQL.

PostgreSQL is one cluster per session (tests/harness/postgres.py); each test gets a fresh
database cloned from a migrated template. SQLite tests copy a migrated file.
"""

from __future__ import annotations

import io
import itertools
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI

from regward import logs
from regward.server.app import create_app
from regward.server.db import Database
from regward.server.settings import Settings
from tests.harness.postgres import PostgresCluster, unavailable_reason
from tests.server.accounts import PASSWORD, make_users
from tests.server.changes import publish

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for its test client; httpx works the same here.
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient as TestClient  # re-exported for the tests

TEMPLATE = "rwsrv_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = PostgresCluster.start()
    url = cluster.create_database(TEMPLATE)
    template = Database(url)
    template.upgrade()
    template.dispose()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rwsrv-sqlite") / "template.db"
    database = Database(f"sqlite:///{path}")
    database.upgrade()
    database.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A migrated, empty database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "regward.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"rwsrv_test_{next(_counter)}"
    yield cluster.create_database(name, template=TEMPLATE)
    cluster.drop_database(name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    db = Database(settings.database_url)
    yield db
    db.dispose()


@dataclass
class World:
    """A server with an organization `acme` (owner alice, member bob) and an outsider eve."""

    app: FastAPI
    client: TestClient
    database: Database
    settings: Settings
    tokens: dict[str, str]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}

    def publish(self, who: str = "alice") -> int:
        """Save & Apply one real change to acme's draft as `who`; the new revision."""
        return publish(self.client, headers=self.headers(who))


@pytest.fixture
def world(settings: Settings, database: Database) -> Iterator[World]:
    make_users(database, settings)
    app = create_app(settings, database=database)
    with TestClient(app) as client:
        tokens = {}
        for name in ("alice", "bob", "eve"):
            answer = client.post(
                "/api/v1/auth/token", json={"username": name, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            tokens[name] = answer.json()["token"]
        for name, owner in (("alice_read", "alice"), ("bob_read", "bob")):
            answer = client.post(
                "/api/v1/tokens",
                json={"name": name, "scope": "read"},
                headers={"Authorization": f"Bearer {tokens[owner]}"},
            )
            assert answer.status_code == 201, answer.text
            tokens[name] = answer.json()["token"]
        yield World(app=app, client=client, database=database, settings=settings, tokens=tokens)


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What the server logs while the test runs, as REGWARD_LOG_FORMAT=json writes it."""
    stream = io.StringIO()
    handler = logs.make_handler(stream, "json")
    root = logging.getLogger()
    root.addHandler(handler)
    old_level = root.level
    root.setLevel(logging.INFO)
    client_log = logging.getLogger("httpx")  # the test client's own lines, not the server's
    client_level = client_log.level
    client_log.setLevel(logging.WARNING)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        client_log.setLevel(client_level)
