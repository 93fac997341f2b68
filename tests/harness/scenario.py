"""The standard registry-access scene on a `Bed`, shared by the agent's and the proxy's e2e tests.

    scene = Scene.create()                  # bed + names + two registries + images pushed
    agent = scene.start_agent(["--policy", str(policy)])   # regward agent run in the namespace
    scene.bed.start_dockerd([f"--authorization-plugin={scene.plugin_name}"])
    scene.bed.docker("pull", scene.image(ALLOWED))

Names (from the namespace's hosts file):

    allowed.registry.test   127.0.0.2:5000   registry "allowed", holds demo/hello:v1
    pullonly.registry.test  127.0.0.2:5000   the same registry under a second name
    blocked.registry.test   127.0.0.3:5000   registry "blocked", holds demo/hello:v1
    regward.test            10.234.N.2       the Regward server, when a test starts one

Every name resolves to loopback or the namespace's own veth, and the namespace has no default
route, so nothing here can reach off the machine.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.bed import PYTHON, Bed, Process

ALLOWED = "allowed.registry.test:5000"
PULL_ONLY = "pullonly.registry.test:5000"
BLOCKED = "blocked.registry.test:5000"
SERVER_HOST = "regward.test"
SERVER_PORT = 8080


@dataclass
class Server:
    process: Process
    url: str  # as the agent inside the namespace reaches it
    api: str  # as the test process on the host reaches it
    data_dir: Path
    org: str
    owner: str
    password: str


@dataclass
class Scene:
    bed: Bed
    agent: Process | None = None
    server: Server | None = None
    agent_args: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, tag: str = "") -> Scene:
        bed = Bed.create(tag)
        try:
            bed.add_host("allowed.registry.test", "127.0.0.2")
            bed.add_host("pullonly.registry.test", "127.0.0.2")
            bed.add_host("blocked.registry.test", "127.0.0.3")
            bed.add_host(SERVER_HOST, bed.ip(2))
            bed.start_registry("allowed", "127.0.0.2:5000")
            bed.start_registry("blocked", "127.0.0.3:5000")
            bed.push(f"http://{ALLOWED}", "demo/hello", "v1")
            bed.push(f"http://{BLOCKED}", "demo/hello", "v1")
        except BaseException:
            bed.close()
            raise
        return cls(bed)

    def close(self) -> None:
        self.bed.close()

    @staticmethod
    def image(registry: str, repository: str = "demo/hello", tag: str = "v1") -> str:
        return f"{registry}/{repository}:{tag}"

    # ---- the agent ----------------------------------------------------------------------
    @property
    def plugin_name(self) -> str:
        return f"{self.bed.name}-authz"

    @property
    def authz_socket(self) -> Path:
        return Path("/run/docker/plugins") / f"{self.plugin_name}.sock"

    @property
    def agent_dir(self) -> Path:
        return self.bed.directory / "agent-state"

    @property
    def registry_json(self) -> Path:
        return self.bed.directory / "registry.json"

    def agent_env(self) -> dict[str, str]:
        return {
            "REGWARD_AGENT_DIR": str(self.agent_dir),
            "REGWARD_REGISTRY_JSON": str(self.registry_json),
            # The bed's dockerd, whose /info tells the agent whether it is protected.
            "DOCKER_HOST": f"unix://{self.bed.docker_socket()}",
        }

    def regward(
        self, *args: str, input: bytes | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run `regward ARGS` inside the namespace with the scene's agent directories."""
        return self.bed.run(
            [str(PYTHON), "-m", "regward.cli", *args],
            input=input,
            env=self.agent_env(),
            timeout=timeout,
        )

    def start_agent(self, args: Sequence[str] = (), proxy_listen: str = "off") -> Process:
        """(Re)start `regward agent run` on the scene's socket; waits until it answers."""
        self.stop_agent()
        self.bed.claim(Path("/run/docker"), self.authz_socket.parent)
        argv = [
            str(PYTHON),
            "-m",
            "regward.cli",
            "agent",
            "run",
            "--authz-socket",
            str(self.authz_socket),
            "--proxy-listen",
            proxy_listen,
            "--log-level",
            "debug",
            *args,
        ]
        self.agent = self.bed.spawn("agent", argv, self.agent_env())
        self.bed.wait_for("the agent", self._plugin_answers, self.agent)
        self.agent_args = list(args)
        return self.agent

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.bed.stop(self.agent)
            self.agent = None

    def _plugin_answers(self) -> bool:
        return b"authz" in plugin_call(self.authz_socket, "/Plugin.Activate", b"")

    def authz(self, request: dict[str, object] | bytes) -> dict[str, object]:
        """One AuthZReq straight to the plugin socket, as dockerd would send it."""
        body = request if isinstance(request, bytes) else json.dumps(request).encode()
        reply = plugin_call(self.authz_socket, "/AuthZPlugin.AuthZReq", body)
        return json.loads(reply.split(b"\r\n\r\n", 1)[1])  # type: ignore[no-any-return]

    # ---- the Regward server -------------------------------------------------------------
    def start_server(self, org: str = "acme", owner: str = "owner") -> Server:
        """`regward server init` then `regward server run` inside the namespace."""
        data_dir = self.bed.directory / "server-data"
        env = {"REGWARD_DATA_DIR": str(data_dir)}
        password = self.server.password if self.server else secrets.token_urlsafe(16)
        if self.server is None:
            init = self.bed.run(
                [
                    str(PYTHON),
                    "-m",
                    "regward.cli",
                    "server",
                    "init",
                    "--org",
                    org,
                    "--owner",
                    owner,
                    "--password-stdin",
                ],
                input=password.encode() + b"\n",
                env=env,
                timeout=120,
            )
            if init.returncode != 0:
                raise RuntimeError(f"regward server init failed: {init.stderr[-2000:]}")
        argv = [
            str(PYTHON),
            "-m",
            "regward.cli",
            "server",
            "run",
            "--host",
            self.bed.ip(2),
            "--port",
            str(SERVER_PORT),
        ]
        process = self.bed.spawn("server", argv, env)
        process.grace = 3  # uvicorn waits for open long-polls; do not wait for them
        api = f"http://{self.bed.ip(2)}:{SERVER_PORT}"
        self.bed.wait_for(
            "the Regward server", lambda: _http_up(self.bed.ip(2), SERVER_PORT), process, timeout=60
        )
        self.server = Server(
            process, f"http://{SERVER_HOST}:{SERVER_PORT}", api, data_dir, org, owner, password
        )
        return self.server

    def stop_server(self) -> None:
        if self.server is not None:
            self.bed.stop(self.server.process, self.server.process.grace)


def plugin_call(path: Path, method: str, body: bytes, timeout: float = 10) -> bytes:
    """POST one plugin call over the unix socket; the raw HTTP response."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(
            f"POST {method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _http_up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False
