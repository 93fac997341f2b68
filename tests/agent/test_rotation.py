"""Signing-key rotation with a real agent and `regward server run` in a child process: the
agent follows `rotate-key` without a new login, keeps enforcing across `retire-key`, and
refuses a rotation whose endorsement is forged."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from regward.agent import sync
from regward.agent.runner import Agent, AgentOptions
from regward.agent.state import AgentState, Credentials
from regward.policy import Action, canonical_json, generate_key
from regward.policy.signing import ENDORSEMENT
from tests.harness.server import ServerProcess, free_port
from tests.harness.wait import until

PASSWORD = "rotating passphrase"  # noqa: S105 - the test owner's


@pytest.fixture(autouse=True)
def _prompt_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent (in this process) retries the restarted server at least every 1.5 s instead
    of backing off to 90 s: these tests are about what it does once it reaches the server
    again, and a backoff that outlasts the restart only adds idle minutes."""
    monkeypatch.setattr(sync, "BACKOFF_MAX", 1.0)


class Bench:
    """A data directory, a server process on a fixed port that can be restarted, an owner."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.env = {"REGWARD_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
        self.port = free_port()
        self.server: ServerProcess | None = None
        self.regward("server", "init", "--org", "acme", "--owner", "alice", "--password-stdin")
        self.start()
        self.owner = httpx.Client(base_url=f"{self.url}/api/v1", trust_env=False, timeout=30)
        body = {"username": "alice", "password": PASSWORD}
        token = self.owner.post("/auth/token", json=body).json()["token"]
        self.owner.headers["Authorization"] = f"Bearer {token}"
        self.owner.put("/orgs/acme/registry-access/enabled", json={"enabled": True})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def regward(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "regward.cli", *args],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        self.server = ServerProcess(self.env, self.tmp / "server.log", port=self.port)
        self.server.__enter__()

    def stop(self) -> None:
        assert self.server is not None
        self.server.__exit__()

    def restart_with(self, *args: str) -> str:
        self.stop()
        out = self.regward("server", *args)
        self.start()
        return out

    def allow(self, address: str) -> int:
        added = self.owner.post("/orgs/acme/registry-access/registries", json={"address": address})
        assert added.status_code == 201, added.text
        applied = self.owner.post("/orgs/acme/registry-access/apply")
        assert applied.status_code == 200, applied.text
        return int(applied.json()["revision"])

    def signing_key(self) -> dict[str, object]:
        return dict(self.owner.get("/signing-key").json())

    def agent_state(self) -> AgentState:
        answer = self.owner.post("/tokens", json={"name": "agent", "scope": "read"})
        state = AgentState(self.tmp / "state", self.tmp / "registry.json")
        pinned = str(self.signing_key()["public_key"])
        state.save_credentials(Credentials(self.url, "acme", answer.json()["token"], pinned))
        return state

    def close(self) -> None:
        self.owner.close()
        self.stop()


def run_agent(bench: Bench, body: Callable[[Agent, AgentState], Awaitable[None]]) -> None:
    state = bench.agent_state()
    options = AgentOptions(
        authz_socket=None,
        proxy_listen=None,
        state_dir=state.directory,
        registry_json=state.registry_json,
        long_poll=5,
    )
    agent = Agent(options)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await until(lambda: agent.ready.is_set() or task.done(), 30, "the agent to start")
            await body(agent, state)
        finally:
            stop.set()
            await task

    try:
        asyncio.run(main())
    finally:
        bench.close()


def allows(agent: Agent, host: str) -> bool:
    return agent.guard.decide(Action.PULL, f"{host}/demo/app:1").allowed


def test_an_agent_follows_a_rotation_without_a_new_login(tmp_path: Path) -> None:
    bench = Bench(tmp_path)

    async def body(agent: Agent, state: AgentState) -> None:
        bench.allow("one.example")
        await until(lambda: allows(agent, "one.example"), 30, "revision 2 to apply")
        old = bench.signing_key()["public_key"]
        out = await asyncio.to_thread(bench.restart_with, "rotate-key")
        assert "endorsed by the old key" in out
        served = bench.signing_key()
        new = served["public_key"]
        assert new != old and isinstance(served["chain"], list) and len(served["chain"]) == 1
        revision = bench.allow("two.example")  # signed by the new key
        await until(lambda: allows(agent, "two.example"), 150, "the agent to follow the new key")
        credentials = state.credentials()
        assert credentials is not None and credentials.public_key == new
        cached = state.cached_policy(credentials)  # what a restarted agent enforces
        assert cached is not None and cached.revision == revision
        assert agent.syncer is not None and agent.syncer.status.refusal is None

        out = await asyncio.to_thread(bench.restart_with, "retire-key")
        assert "retired the old signing key" in out
        assert bench.signing_key()["chain"] == []
        assert not (tmp_path / "data" / "signing-key.retired.pem").exists()
        bench.allow("three.example")
        await until(lambda: allows(agent, "three.example"), 150, "revision 4 under the new key")

    run_agent(bench, body)


def test_a_forged_endorsement_is_refused_and_the_pinned_key_stays(tmp_path: Path) -> None:
    bench = Bench(tmp_path)

    async def body(agent: Agent, state: AgentState) -> None:
        bench.allow("one.example")
        await until(lambda: allows(agent, "one.example"), 30, "revision 2 to apply")
        pinned = bench.signing_key()["public_key"]
        await asyncio.to_thread(bench.stop)
        await asyncio.to_thread(bench.regward, "server", "rotate-key")
        # An attacker who took the data directory, but never had the old key, endorses the new
        # key with a key of their own.
        chain_file = tmp_path / "data" / "signing-key-chain.json"
        chain = json.loads(chain_file.read_text())
        endorsed = {"purpose": ENDORSEMENT, "previous": pinned, "key": chain[0]["key"]}
        forged = generate_key().sign(canonical_json(endorsed))
        chain[0]["signature"] = base64.b64encode(forged).decode()
        chain_file.write_text(json.dumps(chain))
        await asyncio.to_thread(bench.start)
        bench.allow("two.example")

        def refused() -> str | None:
            return agent.syncer.status.refusal if agent.syncer else None

        refusal = await until(refused, 150, "the agent to refuse the forged endorsement")
        assert "is not signed by key" in refusal
        assert allows(agent, "one.example") and not allows(agent, "two.example")
        credentials = state.credentials()
        assert credentials is not None and credentials.public_key == pinned

    run_agent(bench, body)
