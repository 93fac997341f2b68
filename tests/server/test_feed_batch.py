"""The feed's batched access checks: checks that arrive together share one query, and each
token's answer is its own (a revoked token in a batch gets 401, the others their revision)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from datetime import timedelta

import httpx
import pytest

from regward.server.errors import NotFound, Unauthenticated
from regward.server.feed import FeedAccess
from regward.server.models import Token, utcnow
from regward.server.services import auth
from tests.harness.wait import wait_for
from tests.server.conftest import World
from tests.server.live import ThreadServer

ORG = "/api/v1/orgs/acme"


def personal_tokens(world: World, who: str, count: int) -> list[tuple[int, str]]:
    made = []
    for index in range(count):
        answer = world.client.post(
            "/api/v1/tokens", json={"name": f"batch-{index}"}, headers=world.headers(who)
        )
        assert answer.status_code == 201, answer.text
        made.append((answer.json()["id"], answer.json()["token"]))
    return made


def test_checks_that_arrive_together_share_one_batch_and_keep_their_own_answers(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    (_, good), (revoked_id, revoked), (_, other) = personal_tokens(world, "bob", 3)
    revision = world.publish()
    assert (
        world.client.delete(
            f"/api/v1/tokens/{revoked_id}", headers=world.headers("bob")
        ).status_code
        == 204
    )
    access: FeedAccess = world.app.state.server.feed_access
    batches: list[int] = []
    check_all = access._check_all

    def counted(
        keys: list[tuple[str, str | None]],
    ) -> dict[tuple[str, str | None], auth.FeedGrant]:
        batches.append(len(keys))
        return check_all(keys)

    monkeypatch.setattr(access, "_check_all", counted)

    async def together() -> list[auth.FeedGrant]:
        asks = (good, revoked, other, "rwp_not-a-token", good)
        return await asyncio.gather(*(access.check("acme", token) for token in asks))

    grants = asyncio.run(together())
    assert batches == [4]  # five checks, four distinct tokens, one query round
    assert [grant.revision for grant in grants] == [
        revision,
        0,
        revision,
        0,
        revision,
    ]
    assert isinstance(grants[1].error, Unauthenticated)
    assert isinstance(grants[3].error, Unauthenticated)
    assert all(grants[i].error is None for i in (0, 2, 4))


def test_long_polls_woken_together_answer_each_by_its_own_token(world: World) -> None:
    tokens = personal_tokens(world, "bob", 3)
    after = world.publish()
    server = world.app.state.server
    with (
        ThreadServer(world.app) as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
        concurrent.futures.ThreadPoolExecutor(len(tokens)) as pool,
    ):
        held = [
            pool.submit(
                client.get,
                f"{ORG}/policy?wait=20&after={after}",
                headers={"Authorization": f"Bearer {token}"},
            )
            for _, token in tokens
        ]
        wait_for(lambda: server.notifier.waiting("acme") == len(tokens), 10, "the polls to wait")
        revoked_id = tokens[1][0]
        bob = world.headers("bob")
        assert client.delete(f"/api/v1/tokens/{revoked_id}", headers=bob).status_code == 204
        added = client.post(
            f"{ORG}/registry-access/registries",
            json={"address": "quay.io"},
            headers=world.headers("alice"),
        )
        assert added.status_code == 201, added.text
        applied = client.post(f"{ORG}/registry-access/apply", headers=world.headers("alice"))
        assert applied.status_code == 200, applied.text
        answers = [future.result(timeout=20) for future in held]
    assert [answer.status_code for answer in answers] == [200, 401, 200]
    assert answers[0].content == answers[2].content
    assert answers[0].headers["etag"].startswith(f'"{after + 1}-')


def test_a_batch_tells_expired_tokens_from_those_still_valid(world: World) -> None:
    (past_id, past), (future_id, future), (_, lasting) = personal_tokens(world, "bob", 3)
    ((_, outsider),) = personal_tokens(world, "eve", 1)
    revision = world.publish()
    now = utcnow()
    with world.database.session(write=True) as session:
        session.get_one(Token, past_id).expires_at = now - timedelta(seconds=1)
        session.get_one(Token, future_id).expires_at = now + timedelta(minutes=5)
    access: FeedAccess = world.app.state.server.feed_access

    async def together() -> list[auth.FeedGrant]:
        asks = (past, future, lasting, outsider)
        return await asyncio.gather(*(access.check("acme", token) for token in asks))

    expired, valid, lasts, outside = asyncio.run(together())
    assert isinstance(expired.error, Unauthenticated)
    assert "expired" in str(expired.error)
    assert expired.token_id == past_id
    assert (valid.error, valid.revision, valid.token_id) == (None, revision, future_id)
    assert (lasts.error, lasts.revision) == (None, revision)
    assert isinstance(outside.error, NotFound)
