"""The policy feed: signed revisions, ETag / If-None-Match, and long-poll on both databases."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from regward.errors import SignatureError
from regward.policy import SignedPolicy, public_key_from_text, verify
from regward.server.runtime import Server
from tests.harness.wait import wait_for
from tests.server.conftest import World
from tests.server.live import ThreadServer

ORG = "/api/v1/orgs/acme"


def _apply(client: httpx.Client, headers: dict[str, str], address: str) -> int:
    added = client.post(
        f"{ORG}/registry-access/registries", json={"address": address}, headers=headers
    )
    assert added.status_code == 201, added.text
    applied = client.post(f"{ORG}/registry-access/apply", headers=headers)
    assert applied.status_code == 200, applied.text
    return int(applied.json()["revision"])


def test_feed_is_signed_by_the_published_key(world: World) -> None:
    c = world.client
    key = c.get("/api/v1/signing-key").json()
    assert key["algorithm"] == "ed25519"
    answer = c.get(f"{ORG}/policy", headers=world.headers("bob"))
    signed = SignedPolicy.from_json(answer.content)
    policy = verify(signed, public_key_from_text(key["public_key"]))
    assert policy.organization == "acme"
    assert policy.revision == 1
    assert policy.enabled is False
    assert [str(e.address) for e in policy.registries] == ["docker.io"]
    assert answer.headers["X-Regward-Revision"] == "1"
    tampered = answer.content.replace(b'"enabled":false', b'"enabled":true')
    assert tampered != answer.content
    with pytest.raises(SignatureError):
        verify(SignedPolicy.from_json(tampered), public_key_from_text(key["public_key"]))


def test_etag_and_if_none_match(world: World) -> None:
    c = world.client
    h = world.headers("bob")
    first = c.get(f"{ORG}/policy", headers=h)
    etag = first.headers["ETag"]
    again = c.get(f"{ORG}/policy", headers={**h, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    assert c.get(f"{ORG}/policy?after=1", headers=h).status_code == 304
    assert _apply(c, world.headers("alice"), "ghcr.io") == 2
    fresh = c.get(f"{ORG}/policy", headers={**h, "If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh.headers["ETag"] != etag
    assert SignedPolicy.from_json(fresh.content).policy.revision == 2
    assert c.get(f"{ORG}/policy?after=1", headers=h).status_code == 200


def held(world: World) -> int:
    """How many long-polls of acme the server holds now."""
    server: Server = world.app.state.server
    return server.notifier.waiting("acme")


def test_long_poll_times_out_with_304(world: World) -> None:
    with (
        ThreadServer(world.app) as server,
        httpx.Client(base_url=server.url) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        poll = pool.submit(client.get, f"{ORG}/policy?wait=2&after=1", headers=world.headers("bob"))
        wait_for(lambda: held(world) == 1 or poll.done(), 10, "the server to hold the poll")
        assert held(world) == 1  # it waits for a revision...
        answer = poll.result(timeout=30)
    assert answer.status_code == 304  # ...and, none coming, says so when its wait runs out
    assert held(world) == 0


def test_long_poll_answers_when_an_owner_applies(world: World) -> None:
    with (
        ThreadServer(world.app) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        polls = [
            pool.submit(client.get, f"{ORG}/policy?wait=20&after=1", headers=world.headers(who))
            for who in ("bob", "alice", "alice_read", "bob_read")
        ]
        wait_for(lambda: held(world) == 4, 10, "the server to hold the four polls")
        assert not any(p.done() for p in polls)
        revision = _apply(client, world.headers("alice"), "ghcr.io")
        answers = [p.result(timeout=10) for p in polls]
    assert revision == 2
    assert all(a.status_code == 200 for a in answers)
    assert {SignedPolicy.from_json(a.content).policy.revision for a in answers} == {2}


def test_feed_document_is_a_policy_file_for_regward_check(world: World, tmp_path: Path) -> None:
    c = world.client
    h = world.headers("alice")
    c.put(f"{ORG}/registry-access/enabled", json={"enabled": True}, headers=h)
    _apply(c, h, "ghcr.io")
    path = tmp_path / "policy.json"
    path.write_bytes(c.get(f"{ORG}/policy", headers=h).content)
    check = [sys.executable, "-m", "regward.cli", "check", "--policy", str(path)]
    allowed = subprocess.run([*check, "ghcr.io/acme/app:1"], capture_output=True, text=True)
    denied = subprocess.run([*check, "quay.io/acme/app:1"], capture_output=True, text=True)
    assert allowed.returncode == 0, allowed.stderr
    assert denied.returncode == 1, denied.stderr
