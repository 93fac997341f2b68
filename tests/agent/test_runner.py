"""`regward agent run` in-process: live reload of the policy file and the sign-in, status file."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from regward.agent.runner import Agent, AgentOptions, parse_listen
from regward.agent.state import AgentState, Credentials
from regward.errors import ConfigError
from regward.policy import Action, generate_key, public_key_to_text
from tests.harness.server import free_port
from tests.harness.wait import until

POLICY = "organization: acme\nenabled: true\nregistries:\n  - address: {address}\n"


def run_agent(options: AgentOptions, body: Callable[[Agent], Awaitable[None]]) -> Agent:
    agent = Agent(options)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await started(agent, task)
            await body(agent)
        finally:
            stop.set()
            await task

    asyncio.run(main())
    return agent


async def started(agent: Agent, task: asyncio.Task[None]) -> None:
    """Wait until the agent is up; a start that failed raises its error here."""
    await until(lambda: agent.ready.is_set() or task.done(), 20, "the agent to start")
    if task.done():
        task.result()


async def reloaded(agent: Agent, before: int) -> None:
    """Wait until the agent's watcher has handled a change made after it had seen `before`."""
    await until(lambda: agent.reloads > before, 10, "the agent to re-read its settings")


def options(tmp_path: Path, policy: Path | None) -> AgentOptions:
    return AgentOptions(
        authz_socket=tmp_path / "authz.sock",
        proxy_listen=None,
        policy_file=policy,
        state_dir=tmp_path / "state",
        registry_json=tmp_path / "registry.json",
    )


def test_policy_file_edits_apply_and_broken_ones_keep_the_last_good(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(address="one.example"))

    async def body(agent: Agent) -> None:
        assert agent.guard.decide(Action.PULL, "one.example/a").allowed
        policy.write_text(POLICY.format(address="two.example"))
        await until(
            lambda: agent.guard.decide(Action.PULL, "two.example/a").allowed,
            10,
            "the edited policy file to apply",
        )
        assert not agent.guard.decide(Action.PULL, "one.example/a").allowed
        before = agent.reloads
        policy.write_text("organization: acme\nregistries: [{address: 'bad host'}]\n")
        await reloaded(agent, before)
        assert agent.guard.decide(Action.PULL, "two.example/a").allowed
        (tmp_path / "registry.json").write_text('{"allowedOrgs": ["globex"]}')
        await until(
            lambda: not agent.guard.decide(Action.PULL, "two.example/a").allowed,
            10,
            "registry.json to apply",
        )

    run_agent(options(tmp_path, policy), body)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_proxy_says_once_where_it_listens(
    tmp_path: Path,
    workers: int,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.INFO, logger="regward")
    port = free_port()
    listen = replace(
        options(tmp_path, None), proxy_listen=("127.0.0.1", port), proxy_workers=workers
    )

    async def body(agent: Agent) -> None:
        del agent  # started is all this test needs

    run_agent(listen, body)
    said = [r.getMessage() for r in caplog.records if "proxy listening" in r.getMessage()]
    assert said == [f"proxy listening on 127.0.0.1:{port}"]
    assert "proxy listening" not in capfd.readouterr().err  # nor by each worker process


def test_an_edit_that_removes_a_registry_ends_its_open_proxy_tunnels(tmp_path: Path) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def main() -> None:
        upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
        target = f"127.0.0.1:{upstream.sockets[0].getsockname()[1]}"
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(address=target))
        port = free_port()
        agent = Agent(replace(options(tmp_path, policy), proxy_listen=("127.0.0.1", port)))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await started(agent, task)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"CONNECT {target} HTTP/1.1\r\n\r\nping".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert await reader.readexactly(4) == b"ping"
            policy.write_text(POLICY.format(address="other.example"))
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            stop.set()
            await task
            upstream.close()

    asyncio.run(main())


def test_login_and_logout_apply_to_a_running_agent(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "state", tmp_path / "registry.json")
    key = generate_key()

    async def body(agent: Agent) -> None:
        assert agent.guard.enforcement.mode == "unmanaged"
        state.save_credentials(
            Credentials("http://127.0.0.1:9", "acme", "t", public_key_to_text(key.public_key()))
        )
        await until(lambda: agent.guard.enforcement.mode == "signed-in", 10, "the sign-in")
        decision = agent.guard.decide(Action.PULL, "x.example/a")
        assert not decision.allowed  # signed in, nothing verified: fail closed
        assert "No verified policy of organization 'acme'" in decision.message()
        assert agent.syncer is not None
        state.logout()
        await until(lambda: agent.guard.enforcement.mode == "unmanaged", 10, "the logout")
        assert agent.syncer is None

    run_agent(options(tmp_path, None), body)


def test_status_file_and_clean_stop(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(address="one.example"))

    async def body(agent: Agent) -> None:
        status = json.loads((tmp_path / "state" / "status.json").read_text())
        assert status["running"] is True
        assert status["mode"] == "local"
        assert status["revision"] == 0
        assert status["authz_socket"] == str(tmp_path / "authz.sock")
        assert status["proxy_listen"] is None
        assert (tmp_path / "authz.sock").exists()

    run_agent(options(tmp_path, policy), body)
    status = json.loads((tmp_path / "state" / "status.json").read_text())
    assert status["running"] is False
    assert not (tmp_path / "authz.sock").exists()


def test_a_broken_sign_in_file_fails_closed_and_keeps_running(tmp_path: Path) -> None:
    state = AgentState(tmp_path / "state", tmp_path / "registry.json")

    async def body(agent: Agent) -> None:
        (tmp_path / "registry.json").write_text('{"allowedOrgs": ["acme"]}')
        await until(
            lambda: not agent.guard.decide(Action.PULL, "x.example/a").allowed,
            10,
            "registry.json to apply",
        )
        before = agent.reloads
        state.credentials_path.write_text("{not json")
        await reloaded(agent, before)
        assert not agent.guard.decide(Action.PULL, "x.example/a").allowed
        assert agent.syncer is None

    agent = run_agent(options(tmp_path, None), body)
    assert agent.guard.enforcement.required_orgs == ("acme",)


def test_metrics_are_off_by_default_and_count_decisions_when_on(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(address="one.example"))

    async def off(agent: Agent) -> None:
        assert agent.metrics_address is None

    run_agent(options(tmp_path, policy), off)

    async def on(agent: Agent) -> None:
        assert agent.guard.decide(Action.PULL, "one.example/a").allowed
        assert not agent.guard.decide(Action.PULL, "two.example/a").allowed
        assert agent.metrics_address is not None
        host, port = agent.metrics_address
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=10).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        for result in ("allowed", "denied"):
            key = (("point", "authz"), ("result", result))
            assert samples[("regward_agent_decisions_total", key)] == 1
        assert samples[("regward_agent_policy_revision", ())] == 0  # a file without revision
        assert samples[("regward_agent_denial_reports_queued", ())] == 1
        assert ("regward_agent_seconds_since_last_sync", ()) not in samples  # never synced

    run_agent(replace(options(tmp_path, policy), metrics_listen=("127.0.0.1", free_port())), on)


def test_a_bad_metrics_address_is_named() -> None:
    with pytest.raises(ConfigError, match=r"--metrics-listen: listen address 'nowhere' is not"):
        parse_listen("nowhere", "--metrics-listen")
