"""A real HTTP server in a thread of this process, for tests that need concurrent requests
(`tests.harness.server.ServerProcess` runs `regward server run` in a child process)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from regward.agent.state import AgentState, Credentials
from regward.server.app import create_app
from regward.server.db import Database
from regward.server.feed_protocol import FeedProtocol
from regward.server.runtime import Server
from regward.server.settings import Settings
from tests.harness.server import free_port
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD, make_users


class ThreadServer:
    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The protocol `regward server run` serves with (the feed's polls held as data).
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", http=FeedProtocol
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="rwsrv-uvicorn", daemon=True)

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        wait_for(
            lambda: self._server.started or not self._thread.is_alive(), 20, "uvicorn to start"
        )
        if not self._server.started:
            raise RuntimeError("uvicorn did not start")
        return self

    def requests_under_way(self) -> int:
        """How many ASGI requests uvicorn is running now (each one a task)."""
        return len(self._server.server_state.tasks)

    def __exit__(self, *_exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)


@contextlib.contextmanager
def live_server(tmp_path: Path) -> Iterator[tuple[Server, httpx.Client, AgentState, Credentials]]:
    """The real server app (SQLite) in a thread; an owner's client (alice); the agent's state
    signed in as bob with the server's key pinned."""
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path}/rw.db")
    database = Database(settings.database_url)
    database.upgrade()
    make_users(database, settings)
    app = create_app(settings, database=database)
    with (
        ThreadServer(app) as live,
        httpx.Client(base_url=live.url + "/api/v1", trust_env=False) as owner,
    ):

        def token(username: str) -> str:
            body = {"username": username, "password": PASSWORD}
            return str(owner.post("/auth/token", json=body).json()["token"])

        owner.headers["Authorization"] = f"Bearer {token('alice')}"
        pinned = owner.get("/signing-key").json()["public_key"]
        state = AgentState(tmp_path / "state", tmp_path / "registry.json")
        credentials = Credentials(live.url, "acme", token("bob"), pinned)
        state.save_credentials(credentials)
        yield app.state.server, owner, state, credentials
    database.dispose()
