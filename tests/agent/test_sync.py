"""Policy sync: only verified, newer revisions of the signed-in organization are applied.

The feed itself is exercised against the real server in test_e2e_server.py; here the signed
documents are made with the real signing code, and the unreachable server is a closed port.
Refusals reaching owners run against the real server app in a thread (SQLite).
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from regward.agent.guard import Guard
from regward.agent.state import AgentState, Credentials
from regward.agent.sync import Syncer, SyncError
from regward.policy import Action, Policy, generate_key, public_key_to_text, sign
from tests.harness.wait import until
from tests.server.changes import publish
from tests.server.live import live_server


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
        await until(lambda: syncer.status.last_error, 10, "the sync to fail")
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
        await until(lambda: syncer.report_failures, 10, "a denial report to fail")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await syncer.aclose()

    asyncio.run(run_briefly())
    assert [r.target for r in guard.denials.drain()] == ["evil.example/x:latest"]


def test_a_state_the_server_missed_is_checked_in_with_the_next_answer(tmp_path: Path) -> None:
    engine: dict[str, bool | None] = {"authz": True, "proxy": None}
    with live_server(tmp_path) as (_, owner, state, credentials):
        syncer = Syncer(
            state,
            Guard(state.enforcement()),
            credentials,
            "agent-1",
            wait=1,
            engine=lambda: dict(engine),
        )

        def on_record() -> object:
            (only,) = owner.get("/orgs/acme/devices").json()["devices"]
            return only["engine"]

        async def steps() -> None:
            try:
                assert await syncer.poll_once(wait=0)  # revision 1, checked in
                assert on_record() == {"authz": True, "proxy": None}
                engine["authz"] = False  # changed while (say) the server was away
                assert not await syncer.poll_once(wait=0)  # the same revision again
                assert on_record() == {"authz": False, "proxy": None}
            finally:
                await syncer.aclose()

        asyncio.run(steps())


def test_a_refused_revision_reaches_the_server_and_a_good_one_clears_it(tmp_path: Path) -> None:
    with live_server(tmp_path) as (server, owner, state, credentials):
        syncer = Syncer(state, Guard(state.enforcement()), credentials, "agent-1", wait=1)

        def device() -> dict[str, object]:
            (only,) = owner.get("/orgs/acme/devices").json()["devices"]
            return dict(only)

        def apply() -> int:
            return publish(owner, "/orgs/acme")

        async def scenario() -> None:
            try:
                await steps()
            finally:
                await syncer.aclose()

        async def steps() -> None:
            assert await syncer.poll_once(wait=0)  # revision 1, checked in
            assert device()["refusal"] is None
            pinned_key = server.signing_key
            server.signing_key = generate_key()  # the server's key changed: 2 cannot verify
            assert apply() == 2
            with pytest.raises(SyncError, match="revision 2"):
                await syncer.poll_once(wait=0)
            refused = device()
            assert refused["applied_revision"] == 1
            assert "revision 2, which does not verify against the pinned key" in str(
                refused["refusal"]
            )
            server.signing_key = pinned_key
            assert apply() == 3
            assert await syncer.poll_once(wait=0)
            accepted = device()
            assert accepted["applied_revision"] == 3
            assert accepted["refusal"] is None

        asyncio.run(scenario())


def test_a_revision_that_ends_the_long_poll_is_checked_in_after_a_random_pause(
    tmp_path: Path,
) -> None:
    """One Save & Apply ends every agent's long-poll at once: each enforces the new revision at
    once, but checks it in a random part of check_in_spread later (no thundering herd)."""
    with live_server(tmp_path) as (_, owner, state, credentials):
        guard = Guard(state.enforcement())
        syncer = Syncer(state, guard, credentials, "agent-1", wait=1, check_in_spread=0.5)

        def on_record() -> object:
            (only,) = owner.get("/orgs/acme/devices").json()["devices"]
            return only["applied_revision"]

        async def steps() -> None:
            try:
                assert await syncer.poll_once(wait=0)  # the first answer: checked in at once
                assert on_record() == 1
                assert publish(owner, "/orgs/acme") == 2
                assert await syncer.poll_once(wait=syncer.wait)  # the long-poll's answer
                enforced = guard.enforcement.policy
                assert enforced is not None and enforced.revision == 2  # enforced: no pause
                assert syncer.check_in_pending
                assert on_record() == 1  # not told yet
                await until(lambda: on_record() == 2, 10, "the spread check-in of revision 2")
                # the server records it before the agent has read the answer
                await until(lambda: not syncer.check_in_pending, 10, "the check-in's answer")
            finally:
                await syncer.aclose()

        asyncio.run(steps())


def test_closing_the_sync_drops_a_check_in_still_waiting_its_turn(tmp_path: Path) -> None:
    with live_server(tmp_path) as (_, owner, state, credentials):
        syncer = Syncer(state, Guard(state.enforcement()), credentials, "a", check_in_spread=3600)

        async def steps() -> None:
            assert await syncer.poll_once(wait=0)
            assert publish(owner, "/orgs/acme") == 2
            assert await syncer.poll_once(wait=1)
            assert syncer.check_in_pending
            await syncer.aclose()  # returns at once, the waiting check-in cancelled
            assert not syncer.check_in_pending

        asyncio.run(steps())
        (only,) = owner.get("/orgs/acme/devices").json()["devices"]
        assert only["applied_revision"] == 1
