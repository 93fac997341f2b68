"""Every writing request takes the SQLite write turn (`Server.write_turn`): sign-ins, API
token routes and dashboard forms among organization routes' writers, with a busy timeout of 0
so that any writer meeting another in SQLite's busy handler fails at once."""

from __future__ import annotations

import concurrent.futures
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from regward.server import db
from regward.server.app import create_app
from regward.server.db import Database
from regward.server.settings import Settings
from tests.server.accounts import PASSWORD
from tests.server.conftest import WorldTemplate
from tests.server.live import ThreadServer
from tests.server.test_dashboard import csrf_of

ROUNDS = 12  # of each kind of writer: 48 writing requests from 16 threads


def test_sign_ins_tokens_and_forms_take_their_turn_among_writers(
    tmp_path: Path, sqlite_world: WorldTemplate, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(sqlite_world.source, tmp_path / "regward.db")
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path}/regward.db")
    sqlite_world.install_key(settings)
    database = Database(settings.database_url)
    with (
        ThreadServer(create_app(settings, database=database)) as live,
        httpx.Client(base_url=live.url, trust_env=False, timeout=60) as api,
        httpx.Client(base_url=live.url, trust_env=False, timeout=60) as browser,
    ):

        def sign_in(name: str) -> int:
            body = {"username": name, "password": PASSWORD}
            return api.post("/api/v1/auth/token", json=body).status_code

        answer = api.post("/api/v1/auth/token", json={"username": "bob", "password": PASSWORD})
        bob = {"Authorization": f"Bearer {answer.json()['token']}"}
        page = browser.get("/signin")
        signed_in = browser.post(
            "/signin",
            data={"csrf_token": csrf_of(page.text), "username": "alice", "password": PASSWORD},
        )
        assert signed_in.status_code == 303, signed_in.text
        csrf = csrf_of(browser.get("/tokens").text)
        # Each token's last use is written now, outside any turn (it never waits: a minute
        # later it is written again), so that only turn-takers write during the herd.
        assert api.get("/api/v1/orgs/acme/policy", headers=bob).status_code == 200
        assert browser.get("/tokens").status_code == 200
        monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 0)

        def check_in(number: int) -> int:
            body = {"agent_id": f"herd-{number}", "revision": 1, "hostname": f"ci-{number}"}
            answer = api.post("/api/v1/orgs/acme/devices/check-in", json=body, headers=bob)
            return answer.status_code

        def create_token(number: int) -> int:
            body = {"name": f"api-{number}", "scope": "read"}
            return api.post("/api/v1/tokens", json=body, headers=bob).status_code

        def form(number: int) -> int:
            data = {"csrf_token": csrf, "name": f"form-{number}", "scope": "read"}
            return browser.post("/tokens/create", data=data).status_code

        def sign_in_in_turn(number: int) -> int:
            return sign_in("alice" if number % 2 else "bob")

        writers: list[tuple[Callable[[int], int], int]] = [
            (check_in, 200),
            (sign_in_in_turn, 200),
            (create_token, 201),
            (form, 200),
        ]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            futures = [
                (write.__name__, expected, pool.submit(write, number))
                for number in range(ROUNDS)
                for write, expected in writers
            ]
            unexpected = [
                (name, future.result())
                for name, expected, future in futures
                if future.result() != expected
            ]
        assert unexpected == []
        tokens = api.get("/api/v1/tokens", headers=bob).json()["tokens"]
        assert sorted(t["name"] for t in tokens if t["name"].startswith("api-")) == sorted(
            f"api-{n}" for n in range(ROUNDS)
        )
    database.dispose()
