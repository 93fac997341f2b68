"""/healthz and /readyz, for load balancers: the process answers; the server can serve."""

from __future__ import annotations

from pathlib import Path

from regward.server.app import create_app
from regward.server.db import Database, upgrade
from regward.server.health import head_revision
from regward.server.settings import Settings
from tests.harness.server import free_port
from tests.server.conftest import TestClient, World


def test_a_working_server_is_alive_and_ready(world: World) -> None:
    assert world.client.get("/healthz").json() == {"status": "ok"}
    answer = world.client.get("/readyz")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "status": "ready",
        "checks": {"database": "ok", "schema": "ok", "signing_key": "ok"},
    }


def test_a_schema_behind_the_release_is_not_ready(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'old.db'}")
    database = Database(settings.database_url)
    upgrade(database.engine, "0004")
    try:
        client = TestClient(create_app(settings, database=database))
        assert client.get("/healthz").status_code == 200
        answer = client.get("/readyz")
        assert answer.status_code == 503
        checks = answer.json()["checks"]
        assert checks["database"] == "ok"
        assert checks["schema"] == (
            f"at 0004, this release needs {head_revision()}: run `regward server db upgrade`"
        )
        database.upgrade()
        assert client.get("/readyz").status_code == 200
    finally:
        database.dispose()


def test_an_unreachable_database_is_not_ready(tmp_path: Path) -> None:
    """PostgreSQL at a port where nothing listens (the database went away)."""
    url = f"postgresql+psycopg://regward@127.0.0.1:{free_port()}/regward?connect_timeout=2"
    settings = Settings(data_dir=tmp_path, database_url=url)
    database = Database(url)
    try:
        client = TestClient(create_app(settings, database=database))  # no lifespan: no LISTEN
        assert client.get("/healthz").status_code == 200
        answer = client.get("/readyz")
        assert answer.status_code == 503
        checks = answer.json()["checks"]
        assert checks["database"] == "unreachable (OperationalError); see the server log"
        assert checks["schema"] == "unknown: the database did not answer"
        assert checks["signing_key"] == "ok"
    finally:
        database.dispose()
