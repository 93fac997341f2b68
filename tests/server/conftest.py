"""Fixtures for server tests: every database test runs on SQLite and on a real PostgreSQL.

PostgreSQL is one cluster per session (tests/harness/postgres.py); each test gets a fresh
database cloned from a migrated template. SQLite tests copy a migrated file.

A test that uses `world` gets its copy from a second template per kind, which holds the
accounts and organizations of tests/server/accounts.py: made once per session, so that each
test does not hash the same passwords again (argon2id, a few hundred milliseconds of CPU).
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
from regward.server.keys import write_private
from regward.server.settings import Settings
from tests.harness.postgres import PostgresCluster, unavailable_reason
from tests.server.accounts import PASSWORD, make_users
from tests.server.changes import publish

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for its test client; httpx works the same here.
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient as TestClient  # re-exported for the tests

TEMPLATE = "rwsrv_template"
WORLD_TEMPLATE = "rwsrv_world_template"
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


@dataclass(frozen=True)
class WorldTemplate:
    """A database holding `make_users`' accounts (a SQLite file, or a PostgreSQL template
    database by name) and the signing key its first revisions are signed with."""

    source: str
    signing_key: bytes

    def install_key(self, settings: Settings) -> None:
        """Write the template's signing key where `settings` keeps it (0600, as the server does)."""
        settings.signing_key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(settings.signing_key_path, self.signing_key)


def _world_template(url: str, source: str, data_dir: Path) -> WorldTemplate:
    settings = Settings(data_dir=data_dir, database_url=url)
    database = Database(url)
    try:
        make_users(database, settings)
    finally:
        database.dispose()  # no connection may stay open on a PostgreSQL template
    return WorldTemplate(source, settings.signing_key_path.read_bytes())


@pytest.fixture(scope="session")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> WorldTemplate:
    base = tmp_path_factory.mktemp("rwsrv-sqlite-world")
    path = base / "world.db"
    shutil.copy(sqlite_template, path)
    return _world_template(f"sqlite:///{path}", str(path), base / "data")


@pytest.fixture(scope="session")
def postgresql_world(
    pg_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory
) -> WorldTemplate:
    url = pg_cluster.create_database(WORLD_TEMPLATE, template=TEMPLATE)
    data_dir = tmp_path_factory.mktemp("rwsrv-postgresql-world") / "data"
    return _world_template(url, WORLD_TEMPLATE, data_dir)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A migrated, empty database of each kind; the world's copy for a test that uses `world`."""
    world: WorldTemplate | None = None
    if "world" in request.fixturenames:
        world = request.getfixturevalue(f"{request.param}_world")
    if request.param == "sqlite":
        path = tmp_path / "regward.db"
        shutil.copy(world.source if world else sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"rwsrv_test_{next(_counter)}"
    yield cluster.create_database(name, template=world.source if world else TEMPLATE)
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
def world(
    request: pytest.FixtureRequest, settings: Settings, database: Database
) -> Iterator[World]:
    kind = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    template: WorldTemplate = request.getfixturevalue(f"{kind}_world")  # database_url copied it
    template.install_key(settings)
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
