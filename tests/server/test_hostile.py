"""What an API fuzzer found (issue 13): each input answers 4xx with one clear line and changes
nothing; on SQLite and on PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Callable

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regward.server.inputs import MAX_JSON_DEPTH, json_problem
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD
from tests.server.conftest import World
from tests.server.device import signed_in_machine
from tests.server.live import ThreadServer

ORG = "/api/v1/orgs/acme"
JSON = {"Content-Type": "application/json"}


def _one_line(answer: httpx.Response, status: int = 422) -> str:
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


def _state(world: World) -> tuple[object, ...]:
    """What a write could have changed: the draft, the feed, Activity, denials and devices."""
    h = world.headers("alice")
    c = world.client
    draft = c.get(f"{ORG}/registry-access", headers=h).json()
    return (
        draft["version"],
        json.dumps(draft["registries"]),
        c.get(f"{ORG}/policy", headers=h).headers["ETag"],
        c.get(f"{ORG}/activity", headers=h).json()["total"],
        c.get(f"{ORG}/denials", headers=h).json()["total"],
        json.dumps(c.get(f"{ORG}/devices", headers=h).json()),
    )


@pytest.mark.parametrize("path", ["activity", "denials"])
@pytest.mark.parametrize("page", ["9223372036854775808", "1000001", "0", "-1", "1e3"])
def test_pages_out_of_range(world: World, path: str, page: str) -> None:
    answer = world.client.get(f"{ORG}/{path}?page={page}", headers=world.headers("alice"))
    assert "page" in _one_line(answer)


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("from=2020-01-01T00:00:00", "time zone"),
        ("to=2020-01-01", "date and time"),
        ("from=9999-12-31T23:59:59-01:00", "outside"),
        ("to=0001-01-01T00:00:00%2B01:00", "outside"),
        ("to=0.5", "date and time"),
        ("from=1700000000", "date and time"),
        ("from=yesterday", "date and time"),
    ],
)
def test_activity_time_filters(world: World, query: str, why: str) -> None:
    detail = _one_line(world.client.get(f"{ORG}/activity?{query}", headers=world.headers("alice")))
    assert why in detail and query.split("=")[0] in detail


def test_activity_time_filters_with_zones_work(world: World) -> None:
    h = world.headers("alice")
    everything = world.client.get(f"{ORG}/activity", headers=h).json()["total"]
    assert everything >= 1
    window = "from=2000-01-01T00:00:00Z&to=9999-12-31T23:59:59%2B00:00"
    assert world.client.get(f"{ORG}/activity?{window}", headers=h).json()["total"] == everything
    assert world.client.get(f"{ORG}/activity?to=2000-01-01T01:00%2B01:00", headers=h).json() == {
        "total": 0,
        "page": 1,
        "page_size": 25,
        "logs": [],
    }


@pytest.mark.parametrize(
    "occurred_at", ["0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00", "soon", 1700000000]
)
def test_denial_report_times(world: World, occurred_at: object) -> None:
    before = _state(world)
    report = {"reference": "ghcr.io/x/y", "action": "pull", "occurred_at": occurred_at}
    answer = world.client.post(f"{ORG}/denials", json=report, headers=world.headers("bob"))
    assert "occurred_at" in _one_line(answer)
    assert _state(world) == before


# JSON text as a client can send it: a lone surrogate escape, in each kind of field.
SURROGATE_BODIES = [
    ("/api/v1/auth/token", None, '{"username":"\\ud800","password":"x"}', "username"),
    ("/api/v1/auth/token", None, '{"username":"bob","password":"\\udfff"}', "password"),
    ("/api/v1/tokens", "alice", '{"name":"\\ud800x","scope":"read"}', "name"),
    (f"{ORG}/registry-access/enabled", "alice", '{"enabled":"\\ud800"}', "enabled"),
    (
        f"{ORG}/devices/check-in",
        "bob",
        '{"agent_id":"a","revision":1,"engine":{"authz":"\\ud800","proxy":null}}',
        "engine.authz",
    ),
    (
        f"{ORG}/registry-access/registries",
        "alice",
        '{"address":"sur.example","nickname":"\\udc00"}',
        "nickname",
    ),
    (
        f"{ORG}/registry-access/registries",
        "alice",
        '{"entry":{"address":"sur.example","repositories":["a/\\udc00"]}}',
        "entry.repositories[0]",
    ),
    (f"{ORG}/denials", "bob", '{"\\ud83d":1}', "'\\ud83d'"),
]


@pytest.mark.parametrize(("path", "who", "body", "field"), SURROGATE_BODIES)
def test_lone_surrogates_are_refused_before_anything_is_stored(
    world: World, path: str, who: str | None, body: str, field: str
) -> None:
    before = _state(world)
    method = world.client.put if path.endswith("/enabled") else world.client.post
    headers = {**JSON, **(world.headers(who) if who else {})}
    detail = _one_line(method(path, content=body.encode(), headers=headers))
    assert detail.startswith(field) and "surrogate" in detail
    assert _state(world) == before
    # The organization's settings still work: read, add, Save & Apply.
    h = world.headers("alice")
    added = world.client.post(
        f"{ORG}/registry-access/registries", json={"address": "ok.example"}, headers=h
    )
    assert added.status_code == 201, added.text
    assert world.client.post(f"{ORG}/registry-access/apply", headers=h).status_code == 200


@pytest.mark.parametrize(
    ("path", "who", "field"),
    [
        ("/api/v1/auth/token", None, "username"),
        ("/api/v1/tokens", "alice", "name"),
        (f"{ORG}/registry-access/enabled", "alice", "enabled"),
        (f"{ORG}/devices/check-in", "bob", "engine"),
    ],
)
def test_deep_nesting_is_refused(world: World, path: str, who: str | None, field: str) -> None:
    before = _state(world)
    deep = "[" * 958 + "]" * 958
    body = f'{{"{field}": {deep}, "password": "x", "agent_id": "a", "revision": 1}}'
    method = world.client.put if path.endswith("/enabled") else world.client.post
    headers = {**JSON, **(world.headers(who) if who else {})}
    detail = _one_line(method(path, content=body.encode(), headers=headers))
    assert detail.startswith(field) and f"deeper than {MAX_JSON_DEPTH}" in detail
    too_deep = "[" * 100_000 + "]" * 100_000  # deeper than Python's parser recurses
    answer = method(path, content=too_deep.encode(), headers=headers)
    assert f"deeper than {MAX_JSON_DEPTH}" in _one_line(answer)
    assert _state(world) == before


@pytest.mark.parametrize(
    ("body", "content_type", "why"),
    [
        (b"username=bob", "application/json", "not JSON"),
        (b'{"username": "b\xffb", "password": "x"}', "application/json", "not UTF-8"),
        ('{"username": "bob"}'.encode("utf-16"), "application/json", "not UTF-8"),
        (b'{"username": NaN, "password": "x"}', "application/json", "NaN"),
        (b'{"username": "bob", "password": "x"', None, "not JSON"),
        (b'{"username": "bob"} trailing', "application/problem+json", "not JSON"),
        (b"hello", "text/plain", "send a JSON object with Content-Type: application/json"),
    ],
)
def test_bodies_that_are_not_json(
    world: World, body: bytes, content_type: str | None, why: str
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    answer = world.client.post("/api/v1/auth/token", content=body, headers=headers)
    assert why in _one_line(answer)


def test_unicode_text_is_kept(world: World) -> None:
    """The checks refuse what is not text, not what is: a nickname in any script, emoji
    (a surrogate pair in JSON's escapes) included, is stored and published as sent."""
    h = world.headers("alice")
    body = '{"address": "uni.example", "nickname": "Cr\\u00e8me \\ud83d\\ude80 \u30c6\u30b9\u30c8"}'
    added = world.client.post(
        f"{ORG}/registry-access/registries", content=body.encode(), headers={**JSON, **h}
    )
    assert added.status_code == 201, added.text
    assert added.json()["registries"][-1]["nickname"] == "Crème 🚀 テスト"
    assert world.client.post(f"{ORG}/registry-access/apply", headers=h).status_code == 200
    assert "Crème 🚀 テスト" in world.client.get(f"{ORG}/policy", headers=h).json()["policy"][
        "registries"
    ][-1].get("nickname", "")


@pytest.mark.parametrize("enabled", ["off", "on", "true", 0, 1, None, [], {}])
def test_booleans_are_strict(world: World, enabled: object) -> None:
    before = _state(world)
    h = world.headers("alice")
    answers = [
        world.client.put(f"{ORG}/registry-access/enabled", json={"enabled": enabled}, headers=h),
        world.client.put(
            f"{ORG}/registry-access",
            json={"enabled": enabled, "registries": [], "version": 1},
            headers=h,
        ),
    ]
    for answer in answers:
        assert "enabled" in _one_line(answer)
    assert _state(world) == before


def test_a_device_belongs_to_who_checked_it_in_first(world: World) -> None:
    c = world.client
    mine = {"agent_id": "bobs-laptop", "revision": 1, "hostname": "laptop", "refusal": "no"}
    assert c.post(f"{ORG}/devices/check-in", json=mine, headers=world.headers("bob")).is_success
    before = _state(world)
    theirs = {"agent_id": "bobs-laptop", "revision": 1, "hostname": "mine now"}
    detail = _one_line(
        c.post(f"{ORG}/devices/check-in", json=theirs, headers=world.headers("alice")), 409
    )
    assert "'bobs-laptop'" in detail and "another user" in detail
    assert _state(world) == before
    # The same user's other credentials are the same owner.
    again = c.post(f"{ORG}/devices/check-in", json=mine, headers=world.headers("bob_read"))
    assert again.status_code == 200, again.text
    devices = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    assert [(d["agent_id"], d["user"], d["refusal"]) for d in devices] == [
        ("bobs-laptop", "bob", "no")
    ]


def test_a_device_its_own_device_token_checked_in_belongs_to_that_machine(world: World) -> None:
    """Once a machine checks in with its device token, its user's personal tokens and sign-ins
    cannot report for it (nor revive a machine whose token an owner revoked); the machine's
    next device token (a new `regward login`) can. A device first checked in with a personal
    token passes to the machine's device token when it signs in."""
    c = world.client
    machine = {"Authorization": f"Bearer {signed_in_machine(world, 'bob', 'build-7', 'agent-7')}"}
    body = {"agent_id": "agent-7", "revision": 1, "hostname": "build-7"}
    assert c.post(f"{ORG}/devices/check-in", json=body, headers=machine).status_code == 200
    before = _state(world)
    forged = {**body, "refusal": None, "hostname": "not the machine"}
    for who in ("bob", "bob_read"):
        answer = c.post(f"{ORG}/devices/check-in", json=forged, headers=world.headers(who))
        detail = _one_line(answer, 409)
        assert "'agent-7' checks in with its own device token" in detail
    assert _state(world) == before
    revoked = c.delete(f"{ORG}/devices/agent-7/token", headers=world.headers("alice"))
    assert revoked.status_code == 204
    after_revoke = _state(world)
    _one_line(c.post(f"{ORG}/devices/check-in", json=forged, headers=world.headers("bob")), 409)
    assert _state(world) == after_revoke
    again = {"Authorization": f"Bearer {signed_in_machine(world, 'bob', 'build-7', 'agent-7')}"}
    assert c.post(f"{ORG}/devices/check-in", json=body, headers=again).status_code == 200

    # first by a personal token, then by the machine's own: the machine takes it over
    old = {"agent_id": "agent-8", "revision": 1}
    assert c.post(f"{ORG}/devices/check-in", json=old, headers=world.headers("bob_read"))
    own = {"Authorization": f"Bearer {signed_in_machine(world, 'bob', 'build-8', 'agent-8')}"}
    assert c.post(f"{ORG}/devices/check-in", json=old, headers=own).status_code == 200
    _one_line(c.post(f"{ORG}/devices/check-in", json=old, headers=world.headers("bob")), 409)
    devices = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    assert sorted((d["agent_id"], d["user"]) for d in devices) == [
        ("agent-7", "bob"),
        ("agent-8", "bob"),
    ]


@pytest.mark.parametrize("revision", [2, 2147483647])
def test_a_revision_never_applied_is_refused(world: World, revision: int) -> None:
    c = world.client
    h = world.headers("bob")
    assert c.post(f"{ORG}/devices/check-in", json={"agent_id": "x", "revision": 1}, headers=h)
    before = _state(world)
    body = {"agent_id": "x", "revision": revision}
    detail = _one_line(c.post(f"{ORG}/devices/check-in", json=body, headers=h))
    assert f"revision: {revision} is newer than the newest applied revision" in detail
    assert _state(world) == before
    devices = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    assert [(d["applied_revision"], d["up_to_date"]) for d in devices] == [(1, True)]


def test_concurrent_first_check_ins_give_the_device_one_owner(world: World) -> None:
    body = {"agent_id": "contested", "revision": 1}
    with (
        ThreadServer(world.app) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        answers = list(
            pool.map(
                lambda who: client.post(
                    f"{ORG}/devices/check-in", json=body, headers=world.headers(who)
                ),
                ["alice", "bob"] * 6,
            )
        )
    owners = {who for who, a in zip(["alice", "bob"] * 6, answers, strict=True) if a.is_success}
    assert len(owners) == 1
    assert all(a.status_code in (200, 409) for a in answers)
    devices = world.client.get(f"{ORG}/devices", headers=world.headers("alice")).json()
    assert [d["user"] for d in devices["devices"]] == list(owners)


def _revoke_pat(world: World, client: httpx.Client) -> None:
    tokens = client.get("/api/v1/tokens", headers=world.headers("bob")).json()["tokens"]
    (read,) = [t["id"] for t in tokens if t["name"] == "bob_read"]
    assert client.delete(f"/api/v1/tokens/{read}", headers=world.headers("bob")).status_code == 204


def _sign_out(world: World, client: httpx.Client) -> None:
    assert client.delete("/api/v1/auth/token", headers=world.headers("bob")).status_code == 204


def _change_password(world: World, client: httpx.Client) -> None:
    other = client.post("/api/v1/auth/token", json={"username": "bob", "password": PASSWORD})
    body = {"current_password": PASSWORD, "new_password": "another horse battery"}
    headers = {"Authorization": f"Bearer {other.json()['token']}"}
    assert client.put("/api/v1/user/password", json=body, headers=headers).status_code == 204


@pytest.mark.parametrize(
    ("credential", "end"),
    [("bob_read", _revoke_pat), ("bob", _sign_out), ("bob", _change_password)],
    ids=["revoked", "signed-out", "password-changed"],
)
@pytest.mark.parametrize("applied", [True, False], ids=["then-applied", "then-timeout"])
def test_a_waiting_poll_of_an_ended_credential_is_refused(
    world: World,
    credential: str,
    end: Callable[[World, httpx.Client], None],
    applied: bool,
) -> None:
    notifier = world.app.state.server.notifier
    with (
        ThreadServer(world.app) as server,
        httpx.Client(base_url=server.url, timeout=60) as client,
        concurrent.futures.ThreadPoolExecutor(2) as pool,
    ):
        wait = 30 if applied else 2
        poll = pool.submit(
            client.get, f"{ORG}/policy?wait={wait}&after=1", headers=world.headers(credential)
        )
        wait_for(lambda: notifier.waiting("acme") == 1, 30, "the poll to wait")
        end(world, client)
        if applied:
            h = world.headers("alice")
            client.post(f"{ORG}/registry-access/registries", json={"address": "x.io"}, headers=h)
            assert client.post(f"{ORG}/registry-access/apply", headers=h).status_code == 200
        answer = poll.result(timeout=60)
    assert answer.status_code == 401, answer.text
    assert answer.content and b"policy" not in answer.content


def test_method_not_allowed_lists_every_method(world: World) -> None:
    h = world.headers("alice")
    answer = world.client.patch(f"{ORG}/registry-access", headers=h)
    assert answer.status_code == 405
    assert answer.headers["Allow"] == "GET, PUT"
    assert "use GET or PUT" in _one_line(answer, 405)
    token = world.client.get("/api/v1/auth/token")
    assert token.headers["Allow"] == "DELETE, POST"
    policy = world.client.post(f"{ORG}/policy", headers=h)
    assert policy.headers["Allow"] == "GET, HEAD"


@pytest.mark.parametrize("query", ["after=", "after=1", "wait=", "after=&wait=0", ""])
def test_head_of_the_feed_answers_as_get_does(world: World, query: str) -> None:
    h = world.headers("bob")
    get = world.client.get(f"{ORG}/policy?{query}", headers=h)
    head = world.client.head(f"{ORG}/policy?{query}", headers=h)
    assert (head.status_code, head.headers.get("ETag")) == (
        get.status_code,
        get.headers.get("ETag"),
    )
    assert head.content == b""
    bad = world.client.head(f"{ORG}/policy?after=x", headers=h)
    assert (
        bad.status_code == world.client.get(f"{ORG}/policy?after=x", headers=h).status_code == 422
    )


def _texts(document: object) -> list[str]:
    if isinstance(document, dict):
        return [*document, *(t for v in document.values() for t in _texts(v))]
    if isinstance(document, list):
        return [t for v in document for t in _texts(v)]
    return [document] if isinstance(document, str) else []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_any_json_document_is_judged_without_error(document: object) -> None:
    """Any JSON text (Python's json writes lone surrogates and NUL as escapes) is refused
    exactly when it holds what no database can store."""
    problem = json_problem(json.dumps(document).encode())
    storable = not any(
        ch == "\x00" or 0xD800 <= ord(ch) <= 0xDFFF for text in _texts(document) for ch in text
    )
    assert (problem is None) == storable, problem


@given(st.binary(max_size=200))
def test_any_bytes_are_judged_without_error(body: bytes) -> None:
    problem = json_problem(body)
    assert problem is None or (problem and "\n" not in problem)
