"""Faults with real parts (issue 13): `regward server run` killed with SIGKILL while owners Save &
Apply, on SQLite and on PostgreSQL. Afterwards every revision exists whole with its Activity
events or not at all, every apply that was answered exists, and no revision an agent saw is
missing or different."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import httpx
from sqlalchemy import select

from regward.server.db import Database
from regward.server.models import ActivityEvent, Organization, Revision
from tests.harness.server import ServerProcess
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD

ORG = "/api/v1/orgs/acme"


def _init(env: dict[str, str]) -> None:
    command = [sys.executable, "-m", "regward.cli", "server", "init", "--org", "acme"]
    init = subprocess.run(
        [*command, "--owner", "alice", "--password-stdin"],
        input=PASSWORD + "\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stderr


def _token(url: str) -> str:
    body = {"username": "alice", "password": PASSWORD}
    return str(httpx.post(f"{url}/api/v1/auth/token", json=body).json()["token"])


def test_sigkill_during_save_and_apply_loses_nothing_half(
    database_url: str, tmp_path: Path
) -> None:
    env = {"REGWARD_DATA_DIR": str(tmp_path / "data"), "REGWARD_DATABASE_URL": database_url}
    _init(env)
    answered: list[int] = []  # revisions whose apply got its 200
    seen: dict[int, bytes] = {}  # what the long-polling agent received
    stop = threading.Event()
    server = ServerProcess(env, tmp_path / "server.log")
    with server:
        headers = {"Authorization": f"Bearer {_token(server.url)}"}

        def owner() -> None:
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        entry = {"address": f"r{n}.example"}
                        client.post(f"{ORG}/registry-access/registries", json=entry)
                        applied = client.post(f"{ORG}/registry-access/apply")
                    except httpx.HTTPError:
                        return  # the server is gone
                    if applied.status_code == 200:
                        answered.append(int(applied.json()["revision"]))

        def agent() -> None:
            after = 1
            with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
                while not stop.is_set():
                    try:
                        answer = client.get(f"{ORG}/policy?after={after}&wait=5")
                    except httpx.HTTPError:
                        return
                    if answer.status_code == 200:
                        after = int(answer.headers["X-Regward-Revision"])
                        seen[after] = answer.content

        threads = [threading.Thread(target=owner), threading.Thread(target=agent)]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(answered) >= 5 and len(seen) >= 2, 120, "applies under way")
        assert server.process is not None
        server.process.kill()  # SIGKILL, mid-apply or close to it
        server.process.wait()
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    with ServerProcess(env, tmp_path / "server.log") as again:
        newest = httpx.get(
            f"{again.url}{ORG}/policy", headers={"Authorization": f"Bearer {_token(again.url)}"}
        )
        assert newest.status_code == 200
    database = Database(database_url)
    try:
        with database.session() as session:
            revisions = {
                row.revision: row.signed_json.encode()
                for row in session.scalars(
                    select(Revision).join(Organization).where(Organization.name == "acme")
                )
            }
            events = session.scalars(select(ActivityEvent)).all()
    finally:
        database.dispose()
    latest = max(revisions)
    assert int(newest.headers["X-Regward-Revision"]) == latest
    assert sorted(revisions) == list(range(1, latest + 1))  # no gap, no half revision
    applied = sorted(e.data["revision"] for e in events if e.action.endswith(".applied"))
    assert applied == list(range(2, latest + 1))  # every revision has its Apply event
    for event in events:
        if event.action.endswith(".applied"):
            changes = [
                e
                for e in events
                if e.data.get("revision") == event.data["revision"] and e is not event
            ]
            assert len(changes) == event.data["changes"] >= 1
    assert set(answered) <= set(revisions)  # every answered apply survived
    for revision, body in seen.items():  # no agent saw a revision that is missing or other
        assert revisions.get(revision) == body
