"""A real HTTP server in a thread of this process, for tests that need concurrent requests
(`tests.harness.server.ServerProcess` runs `regward server run` in a child process)."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI

from tests.harness.server import free_port


class ThreadServer:
    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="rwsrv-uvicorn", daemon=True)

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=20)
