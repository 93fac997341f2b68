"""Backups: `regward server backup` of a running SQLite server and `restore` into a new data
directory serve the same revisions with the same signatures; the PostgreSQL recipe in
docs/operators.md (pg_dump, pg_restore) does the same on the test cluster."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import httpx
import pytest

from regward.server.app import create_app
from regward.server.db import Database
from regward.server.keys import load_or_create
from regward.server.settings import Settings
from tests.harness.postgres import PostgresCluster, _as_postgres, pg_bin
from tests.harness.server import ServerProcess
from tests.server.accounts import PASSWORD, make_users
from tests.server.conftest import TestClient


def regward(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regward.cli", "server", *args],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], **env},
        timeout=120,
    )


def feed(url: str, token: str) -> tuple[bytes, str]:
    headers = {"Authorization": f"Bearer {token}"}
    answer = httpx.get(f"{url}/api/v1/orgs/acme/policy", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    key = httpx.get(f"{url}/api/v1/signing-key", timeout=30).json()["public_key"]
    return answer.content, key


def test_backup_of_a_running_server_restores_the_same_signed_revisions(tmp_path: Path) -> None:
    env = {"REGWARD_DATA_DIR": str(tmp_path / "data")}
    assert (
        regward(env, "init", "--org", "acme", "--owner", "alice", "--password-stdin").returncode
        == 0
    )
    archive = tmp_path / "backups" / "regward.tar"
    with ServerProcess(env, tmp_path / "server.log") as server:
        owner = httpx.Client(base_url=f"{server.url}/api/v1", timeout=30)
        body = {"username": "alice", "password": PASSWORD}
        token = owner.post("/auth/token", json=body).json()["token"]
        owner.headers["Authorization"] = f"Bearer {token}"
        owner.post("/orgs/acme/registry-access/registries", json={"address": "ghcr.io"})
        assert owner.post("/orgs/acme/registry-access/apply").status_code == 200
        before = feed(server.url, token)
        done = regward(env, "backup", str(archive))  # while the server runs
        assert done.returncode == 0, done.stderr
        owner.close()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    with tarfile.open(archive) as opened:
        assert sorted(opened.getnames()) == ["manifest.json", "regward.db", "signing-key.pem"]

    restored = {"REGWARD_DATA_DIR": str(tmp_path / "restored")}
    done = regward(restored, "restore", str(archive))
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "restored" / "signing-key.pem").stat().st_mode) == 0o600
    again = regward(restored, "restore", str(archive))
    assert again.returncode == 2
    assert "already exist(s); pass --force to overwrite" in again.stderr
    assert regward(restored, "restore", "--force", str(archive)).returncode == 0
    with ServerProcess(restored, tmp_path / "restored.log") as server:
        assert feed(server.url, token) == before  # same bytes, same signature, same key


def test_a_foreign_archive_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    with tarfile.open(bogus, "w") as archive:
        archive.add(__file__, arcname="../../etc/cron.d/evil")
    done = regward({"REGWARD_DATA_DIR": str(tmp_path / "data")}, "restore", str(bogus))
    assert done.returncode == 2
    assert "unexpected entry '../../etc/cron.d/evil'; not a Regward backup" in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.postgres
def test_the_postgresql_recipe_restores_the_same_signed_revisions(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    """The commands of docs/operators.md#backups: pg_dump -Fc, then pg_restore into a new
    database; the signing key travels in `regward server backup`'s archive."""
    source = pg_cluster.create_database("rwsrv_backup_source")
    settings = Settings(data_dir=tmp_path / "data", database_url=source)
    database = Database(source)
    database.upgrade()
    make_users(database, settings)
    with TestClient(create_app(settings, database=database)) as client:
        token = client.post(
            "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        ).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        client.put(
            "/api/v1/orgs/acme/registry-access/enabled", json={"enabled": True}, headers=headers
        )
        client.post("/api/v1/orgs/acme/registry-access/apply", headers=headers)
        before = client.get("/api/v1/orgs/acme/policy", headers=headers).content
    database.dispose()
    bin_dir = pg_bin()
    assert bin_dir is not None
    dump = tmp_path / "regward.dump"
    common = ["-h", "127.0.0.1", "-p", str(pg_cluster.port), "-U", "postgres"]
    pg_dump = [str(bin_dir / "pg_dump"), *common, "-Fc", "rwsrv_backup_source"]
    with dump.open("wb") as out:  # pg_dump -Fc ... > regward.dump
        subprocess.run(_as_postgres(pg_dump), stdout=out, check=True, timeout=120)
    target = pg_cluster.create_database("rwsrv_backup_target")
    pg_restore = [str(bin_dir / "pg_restore"), *common, "--no-owner", "-d", "rwsrv_backup_target"]
    with dump.open("rb") as given:  # pg_restore ... < regward.dump
        subprocess.run(_as_postgres(pg_restore), stdin=given, check=True, timeout=120)
    restored = Settings(data_dir=tmp_path / "data", database_url=target)
    load_or_create(restored.signing_key_path)  # the same key file
    database = Database(target)
    try:
        with TestClient(create_app(restored, database=database)) as client:
            assert client.get("/readyz").status_code == 200
            after = client.get("/api/v1/orgs/acme/policy", headers=headers).content
    finally:
        database.dispose()
    assert after == before
