"""`regward server run` as a child process on a free loopback port, for tests and benches.

    with ServerProcess({"REGWARD_DATA_DIR": str(data)}, log=tmp / "server.log") as server:
        httpx.get(f"{server.url}/api/v1/health")

The child starts from this process's environment without any `REGWARD_*` or proxy variable,
plus `env`; `REGWARD_PUBLIC_URL` is its own address. It is stopped by its PID. With
`probed=True` it runs tests/harness/probed_server.py, which adds one route for tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.harness.wait import wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    def __init__(
        self,
        env: Mapping[str, str],
        log: Path,
        probed: bool = False,
        port: int | None = None,
        module: str | None = None,
    ) -> None:
        self.probed = probed  # with tests.harness.probed_server's route: long_polls()
        self.module = module  # another script in place of `python -m regward.cli` (benches)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("REGWARD_") and not key.upper().endswith("_PROXY")
        }
        self.env.update(env)
        self.env.setdefault("REGWARD_PUBLIC_URL", self.url)
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        module = "tests.harness.probed_server" if self.probed else "regward.cli"
        program = [self.module] if self.module else ["-m", module]
        command = [sys.executable, *program, "server", "run"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        process = self.process

        def answered() -> bool:
            if process.poll() is not None:
                raise AssertionError("the server exited")
            try:
                return httpx.get(f"{self.url}/api/v1/health", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_for(answered, 90, "the server to answer")
        except AssertionError as error:
            self.__exit__()
            raise RuntimeError(f"{error}: {self.log.read_text()[-2000:]}") from None
        return self

    def long_polls(self, organization: str) -> int:
        """How many long-polls of `organization` this process holds now (probed only)."""
        answer = httpx.get(f"{self.url}/_test/long-polls/{organization}", timeout=10)
        answer.raise_for_status()
        return int(answer.json()["held"])

    def __exit__(self, *_exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
