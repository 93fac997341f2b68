"""A fault with real parts (issue 13): the SQLite database's disk fills up under a running
`regward server run`. Writes answer 503 with a line that says so (API and dashboard), reads keep
working, nothing stored before is lost, and writes work again once space is freed, without a
restart. The disk is a small tmpfs the test mounts (root) and unmounts."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from regward.server.db import DISK_FULL
from tests.harness.server import ServerProcess
from tests.server.accounts import PASSWORD
from tests.server.test_dashboard import csrf_of
from tests.server.test_faults import ORG, _init, _token

pytestmark = pytest.mark.e2e  # mounts a file system: needs root


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "regward-test", str(disk)],
        check=True,
    )
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def _fill(disk: Path) -> Path:
    """Write a file until the disk refuses more; return it (delete it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(chunk)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
        # the last partial blocks: byte by byte until nothing fits
        try:
            while True:
                out.write(b"\0" * 512)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return filler


def test_sqlite_disk_full_answers_503_keeps_everything_and_recovers(
    small_disk: Path, tmp_path: Path
) -> None:
    database = small_disk / "regward.db"
    env = {
        "REGWARD_DATA_DIR": str(small_disk / "data"),
        "REGWARD_DATABASE_URL": f"sqlite:///{database}",
    }
    _init(env)
    server = ServerProcess(env, tmp_path / "server.log")
    with (
        server,
        httpx.Client(base_url=server.url, timeout=30) as api,
        httpx.Client(base_url=server.url, timeout=30) as page,
    ):
        api.base_url = httpx.URL(server.url + ORG)
        api.headers["Authorization"] = f"Bearer {_token(server.url)}"
        signin = page.get("/signin")
        answer = page.post(
            "/signin",
            data={"csrf_token": csrf_of(signin.text), "username": "alice", "password": PASSWORD},
        )
        assert answer.status_code == 303, answer.text
        entry = {"address": "ghcr.io", "repositories": ["acme/*"]}
        assert api.post("/registry-access/registries", json=entry).status_code == 201
        applied = api.post("/registry-access/apply").json()["revision"]
        # Pending, so the apply below has something to publish (an unchanged draft is 409).
        entry = {"address": "quay.io"}
        assert api.post("/registry-access/registries", json=entry).status_code == 201
        before = {
            "draft": api.get("/registry-access").json(),
            "activity": api.get("/activity").json(),
            "policy": api.get("/policy").content,
        }
        form = page.get("/orgs/acme/registry-access")
        csrf = csrf_of(form.text)

        filler = _fill(small_disk)
        writes: list[Callable[[], httpx.Response]] = [
            lambda: api.post("/registry-access/registries", json={"address": "mcr.microsoft.com"}),
            lambda: api.put("/registry-access/enabled", json={"enabled": True}),
            lambda: api.post("/registry-access/apply"),
        ]
        for write in writes:
            refused = write()
            assert refused.status_code == 503, refused.text
            assert refused.json() == {"detail": DISK_FULL}
        shown = page.post(
            "/orgs/acme/registry-access/toggle", data={"csrf_token": csrf, "enabled": "true"}
        )
        assert shown.status_code == 503
        assert "Database disk full" in shown.text and "free space" in shown.text
        # reads keep working, and show exactly what was stored before
        assert api.get("/registry-access").json() == before["draft"]
        assert api.get("/activity").json() == before["activity"]
        assert api.get("/policy").content == before["policy"]

        filler.unlink()
        again = api.post("/registry-access/registries", json={"address": "mcr.microsoft.com"})
        assert again.status_code == 201, again.text
        assert api.post("/registry-access/apply").json()["revision"] == applied + 1
        toggled = page.post(
            "/orgs/acme/registry-access/toggle", data={"csrf_token": csrf, "enabled": "true"}
        )
        assert toggled.status_code == 303, toggled.text
        after = api.get("/activity").json()
        assert after["logs"][-len(before["activity"]["logs"]) :] == before["activity"]["logs"]
        assert api.get(f"/policy?after={applied - 1}").status_code == 200
    with contextlib.closing(sqlite3.connect(database)) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        revisions = [row[0] for row in check.execute("SELECT revision FROM revisions")]
    assert sorted(revisions) == list(range(1, applied + 2))
