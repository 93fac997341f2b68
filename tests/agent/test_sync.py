"""Policy sync: only verified, newer revisions of the signed-in organization are applied.

The feed itself is exercised against the real server in test_e2e_server.py; here the signed
documents are made with the real signing code, and the unreachable server is a closed port.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from regward.agent.guard import Guard
from regward.agent.state import AgentState, Credentials
from regward.agent.sync import Syncer
from regward.policy import Action, Policy, generate_key, public_key_to_text, sign


def policy(revision: int, *addresses: str, organization: str = "acme") -> Policy:
    return Policy.from_dict(
        {
            "organization": organization,
            "revision": revision,
            "enabled": True,
            "registries": [{"address": address} for address in addresses],
        }
    )


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def make(tmp_path: Path, key: Ed25519PrivateKey) -> tuple[AgentState, Guard, Syncer]:
    state = AgentState(tmp_path / "state", tmp_path / "registry.json")
    credentials = Credentials(
        f"http://127.0.0.1:{closed_port()}", "acme", "t", public_key_to_text(key.public_key())
    )
    state.save_credentials(credentials)
    guard = Guard(state.enforcement())
    return state, guard, Syncer(state, guard, credentials, "agent-1", wait=1)


def test_a_verified_newer_revision_is_applied_and_cached(tmp_path: Path) -> None:
    key = generate_key()
    state, guard, syncer = make(tmp_path, key)
    assert not guard.decide(Action.PULL, "x.io/a").allowed  # signed in, nothing verified yet
    raw = sign(policy(2, "x.io"), key).to_json()
    assert syncer.accept(raw) is True
    assert guard.decide(Action.PULL, "x.io/a").allowed
    assert state.policy_path.read_bytes() == raw
    assert syncer.status.revision == 2
    assert syncer.accept(raw) is False  # the same revision again changes nothing


def test_bad_signature_foreign_org_and_rollback_are_refused(tmp_path: Path) -> None:
    key = generate_key()
    state, guard, syncer = make(tmp_path, key)
    good = sign(policy(5, "x.io"), key).to_json()
    assert syncer.accept(good)
    tampered = json.loads(sign(policy(6, "x.io"), key).to_json())
    tampered["policy"]["registries"].append({"address": "evil.example"})
    refused = [
        json.dumps(tampered).encode(),
        sign(policy(7, "evil.example"), generate_key()).to_json(),  # another key
        sign(policy(8, "evil.example", organization="globex"), key).to_json(),
        sign(policy(4, "evil.example"), key).to_json(),  # older: a replay
        b"not json",
    ]
    for raw in refused:
        assert syncer.accept(raw) is False
    assert len(syncer.status.refused_revisions) == len(refused)
    assert "still enforcing revision 5" in (syncer.status.last_error or "")
    assert not guard.decide(Action.PULL, "evil.example/x").allowed
    assert state.policy_path.read_bytes() == good


def test_an_unreachable_server_keeps_the_last_verified_revision(tmp_path: Path) -> None:
    key = generate_key()
    _, guard, syncer = make(tmp_path, key)
    syncer.accept(sign(policy(3, "x.io"), key).to_json())

    async def run_briefly() -> None:
        task = asyncio.create_task(syncer.run())
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await syncer.aclose()

    asyncio.run(run_briefly())
    assert syncer.status.last_error is not None
    assert "cannot reach the server" in syncer.status.last_error
    assert guard.enforcement.policy is not None and guard.enforcement.policy.revision == 3
    assert guard.decide(Action.PULL, "x.io/a").allowed


def test_denials_that_cannot_be_sent_stay_queued(tmp_path: Path) -> None:
    key = generate_key()
    _, guard, syncer = make(tmp_path, key)
    syncer.accept(sign(policy(3, "x.io"), key).to_json())
    guard.decide(Action.PULL, "evil.example/x")

    async def run_briefly() -> None:
        task = asyncio.create_task(syncer.report_denials(interval=0.05))
        await asyncio.sleep(0.3)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await syncer.aclose()

    asyncio.run(run_briefly())
    assert [r.target for r in guard.denials.drain()] == ["evil.example/x:latest"]
