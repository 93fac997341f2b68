"""`regward server init|db upgrade` and `regward registries ...` as a user runs them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from regward.server.app import create_app
from regward.server.db import Database
from regward.server.errors import Unauthenticated
from regward.server.services import auth
from regward.server.settings import Settings
from tests.server.conftest import TestClient, World
from tests.server.live import ThreadServer


def regward(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regward.cli", *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_server_init_is_idempotent_and_keeps_secrets_private(
    database_url: str, tmp_path: Path
) -> None:
    env = {"REGWARD_DATA_DIR": str(tmp_path / "data"), "REGWARD_DATABASE_URL": database_url}
    first = regward("server", "init", "--org", "acme", "--owner", "admin", env=env)
    assert first.returncode == 0, first.stderr
    assert "organization 'acme' created, owner 'admin' created" in first.stdout
    password = first.stdout.split("one-time password for 'admin': ")[1].split()[0]
    second = regward("server", "init", "--org", "acme", "--owner", "admin", env=env)
    assert second.returncode == 0, second.stderr
    assert "already exists" in second.stdout
    assert f"with password {password}" in second.stdout  # make run shows it until it changes
    key = tmp_path / "data" / "signing-key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data" / "initial-password").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    other = regward(
        "server",
        "init",
        "--org",
        "beta",
        "--owner",
        "carol",
        "--password-stdin",
        env=env,
        stdin="a chosen password\n",
    )
    assert other.returncode == 0, other.stderr
    assert "one-time password" not in other.stdout
    upgrade = regward("server", "db", "upgrade", env=env)
    assert upgrade.returncode == 0
    assert "up to date" in upgrade.stdout


def test_the_first_password_is_one_time_and_its_file_goes_once_changed(
    database_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    env = {"REGWARD_DATA_DIR": str(data), "REGWARD_DATABASE_URL": database_url}
    first = regward("server", "init", "--org", "acme", "--owner", "admin", env=env)
    password = first.stdout.split("one-time password for 'admin': ")[1].split()[0]
    assert (data / "initial-password").read_text() == f"admin:{password}\n"
    settings = Settings(data_dir=data, database_url=database_url)
    database = Database(database_url)
    try:
        with TestClient(create_app(settings, database=database)) as client:
            body = {"username": "admin", "password": password}
            signed_in = client.post("/api/v1/auth/token", json=body).json()
            assert signed_in["password_change_required"] is True
            bearer = {"Authorization": f"Bearer {signed_in['token']}"}
            change = {"current_password": password, "new_password": "the owner's own"}
            assert (
                client.put("/api/v1/user/password", json=change, headers=bearer).status_code == 204
            )
            assert (
                client.get("/api/v1/user", headers=bearer).json()["password_change_required"]
                is False
            )
    finally:
        database.dispose()
    assert not (data / "initial-password").exists()  # no password, old or working, stays behind
    again = regward("server", "init", "--org", "acme", "--owner", "admin", env=env)
    assert again.returncode == 0 and "sign in as" not in again.stdout


def test_server_init_refuses_bad_names_with_one_line(tmp_path: Path) -> None:
    env = {"REGWARD_DATA_DIR": str(tmp_path / "data")}
    bad = regward("server", "init", "--org", "Acme Corp", "--owner", "admin", env=env)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert "'Acme Corp'" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_registries_commands_over_the_api(world: World) -> None:
    token = world.client.post(
        "/api/v1/tokens", json={"name": "ci", "scope": "read-write"}, headers=world.headers("alice")
    ).json()["token"]
    with ThreadServer(world.app) as server:
        env = {"REGWARD_SERVER": server.url, "REGWARD_TOKEN": token}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return regward("registries", *args, "--org", "acme", env=env)

        added = run(
            "add", "ghcr.io", "--nickname", "GitHub", "--repository", "acme/*", "--action", "pull"
        )
        assert added.returncode == 0, added.stderr
        assert run("update", "docker.io", "--repository", "library/*").returncode == 0
        assert run("enable").returncode == 0
        listing = run("list")
        assert "ghcr.io" in listing.stdout and "GitHub" in listing.stdout
        assert "not applied yet" in listing.stdout
        applied = run("apply")
        assert applied.returncode == 0, applied.stderr
        assert "applied revision 2" in applied.stdout
        again = run("apply")
        assert run("remove", "ghcr.io").returncode == 0
        draft = json.loads(run("list", "--json").stdout)
        bad = run("add", "bad host!")
        no_token = regward(
            "registries",
            "list",
            "--org",
            "acme",
            env={"REGWARD_SERVER": server.url, "REGWARD_TOKEN": ""},
        )
        read_only = regward(
            "registries",
            "apply",
            "--org",
            "acme",
            env={"REGWARD_SERVER": server.url, "REGWARD_TOKEN": world.tokens["alice_read"]},
        )
    assert draft["enabled"] is True
    assert draft["applied_revision"] == 2
    assert [e["address"] for e in draft["registries"]] == ["docker.io"]
    assert draft["registries"][0]["repositories"] == ["library/*"]
    assert [c["action"] for c in draft["pending_changes"]] == ["registry_access.registry_removed"]
    assert again.returncode == 2 and "409: nothing to apply" in again.stderr
    assert bad.returncode == 2
    assert "bad host!" in bad.stderr and "422" in bad.stderr
    assert no_token.returncode == 2 and "REGWARD_TOKEN" in no_token.stderr
    assert read_only.returncode == 2 and "read-only" in read_only.stderr


def test_registries_update_and_remove_pick_one_of_several_entries(world: World) -> None:
    token = world.client.post(
        "/api/v1/tokens", json={"name": "ci", "scope": "read-write"}, headers=world.headers("alice")
    ).json()["token"]
    with ThreadServer(world.app) as server:
        env = {"REGWARD_SERVER": server.url, "REGWARD_TOKEN": token}

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return regward("registries", *args, "--org", "acme", env=env)

        assert run("add", "ghcr.io", "--action", "pull").returncode == 0
        second = run("add", "ghcr.io", "--repository", "acme/*", "--nickname", "Ours")
        assert second.returncode == 0, second.stderr
        duplicate = run("add", "ghcr.io", "--repository", "acme/*")
        ambiguous_update = run("update", "ghcr.io", "--nickname", "Which?")
        ambiguous_remove = run("remove", "GHCR.io")
        updated = run("update", "ghcr.io", "--for-repositories", "acme/*", "--action", "pull")
        unknown = run("remove", "ghcr.io", "--for-repositories", "other/*")
        removed = run("remove", "ghcr.io", "--for-repositories", "")
        listing = run("list")
        draft = json.loads(run("list", "--json").stdout)
    assert duplicate.returncode == 2
    assert "409" in duplicate.stderr and "'ghcr.io' for repositories acme/*" in duplicate.stderr
    for ambiguous in (ambiguous_update, ambiguous_remove):
        assert ambiguous.returncode == 2
        assert ambiguous.stderr.count("\n") == 1
        assert "--for-repositories '' or 'acme/*'" in ambiguous.stderr
        assert "Traceback" not in ambiguous.stderr
    assert updated.returncode == 0, updated.stderr
    assert "updated ghcr.io (acme/*)" in updated.stdout
    assert unknown.returncode == 2 and "other/*" in unknown.stderr
    assert removed.returncode == 0, removed.stderr
    assert "removed ghcr.io from the draft" in removed.stdout
    assert [(e["address"], e["repositories"], e["actions"]) for e in draft["registries"]] == [
        ("docker.io", [], ["pull", "push"]),
        ("ghcr.io", ["acme/*"], ["pull"]),
    ]
    assert draft["registries"][1]["nickname"] == "Ours"
    assert "registry_added ghcr.io (acme/*)" in listing.stdout


def test_reset_password_for_a_user_who_forgot_it(database_url: str, tmp_path: Path) -> None:
    env = {"REGWARD_DATA_DIR": str(tmp_path / "data"), "REGWARD_DATABASE_URL": database_url}
    first = regward("server", "init", "--org", "acme", "--owner", "admin", env=env)
    old = first.stdout.split("one-time password for 'admin': ")[1].split()[0]
    database = Database(database_url)
    try:
        with database.session(write=True) as session:
            signed_in = auth.sign_in(session, "admin", old, 3600)
        reset = regward("server", "reset-password", "admin", env=env)
        assert reset.returncode == 0, reset.stderr
        assert not (tmp_path / "data" / "initial-password").exists()  # init's is void now
        new = reset.stdout.split("one-time password for 'admin': ")[1].split()[0]
        with database.session() as session:
            assert auth.authenticate(session, "admin", new).password_one_time is True
            with pytest.raises(Unauthenticated):
                auth.authenticate(session, "admin", old)
            with pytest.raises(Unauthenticated):  # signed out everywhere
                auth.resolve_token(session, signed_in)
        command = ("server", "reset-password", "admin", "--password-stdin")
        chosen = regward(*command, env=env, stdin="long enough now\n")
        assert chosen.returncode == 0, chosen.stderr
        assert "one-time password" not in chosen.stdout
        with database.session() as session:
            chosen_user = auth.authenticate(session, "admin", "long enough now")
            assert chosen_user.password_one_time is False  # the administrator typed it
    finally:
        database.dispose()
    for argv, stdin, named in (
        (("nobody",), None, "'nobody'"),
        (("admin", "--password-stdin"), "short\n", "password must be"),
    ):
        bad = regward("server", "reset-password", *argv, env=env, stdin=stdin)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
        assert named in bad.stderr and "Traceback" not in bad.stderr
