"""Bad input: 422 naming the field and the value, 413 for oversized bodies, 409 for stale or
conflicting writes, and concurrent applies that lose nothing."""

from __future__ import annotations

import concurrent.futures

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regward.server.errors import InvalidInput
from regward.server.services.names import check_name
from tests.server.changes import revision_or_none
from tests.server.conftest import World
from tests.server.live import ThreadServer

ORG = "/api/v1/orgs/acme"


@pytest.mark.parametrize(
    ("entry", "field", "value"),
    [
        ({"address": "bad host!"}, "address", "bad host!"),
        ({"address": "ghcr.io/acme"}, "address", "ghcr.io/acme"),
        ({"address": "*.com:99999"}, "address", "*.com:99999"),
        ({"address": "ghcr.io", "repositories": ["Acme/*"]}, "repositories", "Acme/*"),
        ({"address": "ghcr.io", "actions": ["delete"]}, "actions", "delete"),
        ({"address": "ghcr.io", "extra_hosts": ["cdn..x"]}, "extra_hosts", "cdn..x"),
        ({"address": "ghcr.io", "nickname": "x" * 101}, "nickname", "xxxxxxxx"),
        ({"address": "ghcr.io", "allowed": "yes"}, "allowed", "yes"),
        ({"address": "ghcr.io", "colour": "red"}, "colour", "colour"),
    ],
)
def test_bad_entry_gets_422_naming_field_and_value(
    world: World, entry: dict[str, object], field: str, value: str
) -> None:
    answer = world.client.post(
        f"{ORG}/registry-access/registries", json={"entry": entry}, headers=world.headers("alice")
    )
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert field in detail
    assert value in detail
    draft = world.client.get(f"{ORG}/registry-access", headers=world.headers("alice")).json()
    assert draft["version"] == 1  # nothing was written


def test_bad_draft_names_the_entry_index(world: World) -> None:
    h = world.headers("alice")
    body = {
        "enabled": True,
        "registries": [{"address": "docker.io"}, {"address": "ghcr.io", "actions": ["pul"]}],
        "version": 1,
    }
    answer = world.client.put(f"{ORG}/registry-access", json=body, headers=h)
    assert answer.status_code == 422
    assert "registries[1].actions" in answer.json()["detail"]
    assert "pul" in answer.json()["detail"]
    twice = {**body, "registries": [{"address": "ghcr.io"}, {"address": "GHCR.IO."}]}
    answer = world.client.put(f"{ORG}/registry-access", json=twice, headers=h)
    assert answer.status_code == 422
    assert "registries[1].address" in answer.json()["detail"]
    missing = world.client.put(f"{ORG}/registry-access", json={"enabled": "maybe"}, headers=h)
    assert missing.status_code == 422
    assert "enabled" in missing.json()["detail"] and "maybe" in missing.json()["detail"]


@pytest.mark.parametrize("name", ["A", "Acme", "-acme", "acme-", "ac me", "x" * 65, "ä"])
def test_bad_organization_names(world: World, name: str) -> None:
    answer = world.client.post("/api/v1/orgs", json={"name": name}, headers=world.headers("bob"))
    assert answer.status_code == 422
    assert repr(name)[:60] in answer.json()["detail"]


def test_oversized_body_is_refused(world: World) -> None:
    huge = {"entry": {"address": "ghcr.io", "nickname": "x" * (2 * 1024 * 1024)}}
    answer = world.client.post(
        f"{ORG}/registry-access/registries", json=huge, headers=world.headers("alice")
    )
    assert answer.status_code == 413
    assert "too large" in answer.json()["detail"]


def test_oversized_chunked_body_is_refused(world: World) -> None:
    def chunks() -> object:
        yield b'{"entry": {"address": "ghcr.io", "nickname": "'
        for _ in range(300):
            yield b"x" * 8192
        yield b'"}}'

    with ThreadServer(world.app) as server:
        answer = httpx.post(
            f"{server.url}{ORG}/registry-access/registries",
            content=chunks(),  # type: ignore[arg-type]
            headers={**world.headers("alice"), "Content-Type": "application/json"},
        )
    assert answer.status_code == 413


def test_stale_version_gets_409_and_keeps_the_other_edit(world: World) -> None:
    c = world.client
    h = world.headers("alice")
    version = c.get(f"{ORG}/registry-access", headers=h).json()["version"]
    first = c.post(
        f"{ORG}/registry-access/registries",
        json={"entry": {"address": "ghcr.io"}, "version": version},
        headers=h,
    )
    assert first.status_code == 201
    stale = c.put(
        f"{ORG}/registry-access",
        json={"enabled": True, "registries": [{"address": "quay.io"}], "version": version},
        headers=h,
    )
    assert stale.status_code == 409
    assert "reload" in stale.json()["detail"]
    draft = c.get(f"{ORG}/registry-access", headers=h).json()
    assert [e["address"] for e in draft["registries"]] == ["docker.io", "ghcr.io"]
    duplicate = c.post(f"{ORG}/registry-access/registries", json={"address": "ghcr.io"}, headers=h)
    assert duplicate.status_code == 409
    gone = c.delete(f"{ORG}/registry-access/registries/nosuch.example", headers=h)
    assert gone.status_code == 404


def test_last_owner_cannot_leave(world: World) -> None:
    c = world.client
    h = world.headers("alice")
    assert c.delete(f"{ORG}/members/alice", headers=h).status_code == 409
    assert c.put(f"{ORG}/members/alice", json={"role": "member"}, headers=h).status_code == 409
    assert c.put(f"{ORG}/members/bob", json={"role": "owner"}, headers=h).status_code == 200
    assert c.put(f"{ORG}/members/alice", json={"role": "member"}, headers=h).status_code == 200


def test_concurrent_edits_and_applies_lose_nothing(world: World) -> None:
    h = world.headers("alice")
    with ThreadServer(world.app) as server, httpx.Client(base_url=server.url, timeout=60) as c:

        def edit_and_apply(index: int) -> int | None:
            added = c.post(
                f"{ORG}/registry-access/registries",
                json={"address": f"r{index}.example.com"},
                headers=h,
            )
            assert added.status_code == 201, added.text
            return revision_or_none(c.post(f"{ORG}/registry-access/apply", headers=h))

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            revisions = [r for r in pool.map(edit_and_apply, range(20)) if r is not None]
        draft = c.get(f"{ORG}/registry-access", headers=h).json()
        policy = c.get(f"{ORG}/policy", headers=h).json()["policy"]
        activity = c.get(
            f"{ORG}/activity?action=registry_access.registry_added&page_size=100", headers=h
        ).json()
    # Revisions strictly increase without gaps, and the last one holds every edit.
    assert sorted(revisions) == list(range(2, 2 + len(revisions)))
    assert policy["revision"] == 1 + len(revisions)
    added = {f"r{i}.example.com" for i in range(20)}
    assert added <= {e["address"] for e in policy["registries"]}
    assert added <= {e["address"] for e in draft["registries"]}
    assert draft["pending_changes"] == []
    assert activity["total"] == 20  # each addition recorded once, by the apply that published it


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=80), st.integers(), st.none(), st.binary(max_size=10)))
def test_check_name_accepts_or_raises_invalid_input(value: object) -> None:
    try:
        name = check_name(value, "name")
    except InvalidInput as error:
        assert "name" in str(error)
    else:
        assert name == value
        assert isinstance(name, str) and name == name.lower() and 2 <= len(name) <= 64


entries = st.dictionaries(
    st.sampled_from(
        ["address", "nickname", "allowed", "repositories", "actions", "extra_hosts", "x"]
    ),
    st.one_of(
        st.text(max_size=30),
        st.booleans(),
        st.lists(st.text(max_size=12), max_size=3),
        st.integers(),
        st.none(),
    ),
    max_size=6,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entry=entries)
def test_any_entry_is_accepted_or_refused_with_422(world: World, entry: dict[str, object]) -> None:
    answer = world.client.post(
        f"{ORG}/registry-access/registries", json={"entry": entry}, headers=world.headers("alice")
    )
    assert answer.status_code in (201, 409, 422), answer.text
    assert isinstance(answer.json().get("detail", ""), str)


denial_items = st.dictionaries(
    st.sampled_from(["reference", "action", "revision", "reason", "agent_id", "occurred_at", "x"]),
    st.one_of(
        st.text(max_size=40),
        st.sampled_from(["pull", "push", "ubuntu", "ghcr.io/a/b:1", "2026-01-01T00:00:00+00:00"]),
        st.integers(min_value=-5, max_value=10**12),
        st.booleans(),
        st.none(),
    ),
    max_size=7,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=st.lists(denial_items, max_size=3))
def test_any_denial_report_is_stored_or_refused_with_422(
    world: World, items: list[dict[str, object]]
) -> None:
    answer = world.client.post(
        f"{ORG}/denials", json={"denials": items}, headers=world.headers("bob_read")
    )
    assert answer.status_code in (201, 422), answer.text
    if answer.status_code == 201:
        assert answer.json() == {"stored": len(items)}


@pytest.mark.parametrize(("refusal", "shown"), [("x" * 501, "xxxxxxxx"), (7, "7"), ([], "[]")])
def test_bad_refusal_in_a_check_in_gets_422(world: World, refusal: object, shown: str) -> None:
    answer = world.client.post(
        f"{ORG}/devices/check-in",
        json={"agent_id": "laptop-1", "revision": 1, "refusal": refusal},
        headers=world.headers("bob_read"),
    )
    assert answer.status_code == 422, answer.text
    assert "refusal" in answer.json()["detail"] and shown in answer.json()["detail"]
    devices = world.client.get(f"{ORG}/devices", headers=world.headers("alice")).json()
    assert devices["devices"] == []  # nothing was written


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    refusal=st.one_of(
        st.text(max_size=520),
        st.text(alphabet="\x00ab<>&'\"", max_size=10),
        st.text(alphabet="ab", min_size=495, max_size=505),  # around the bound
        st.integers(),
        st.booleans(),
        st.none(),
    )
)
def test_any_refusal_is_stored_as_sent_or_refused_with_422(world: World, refusal: object) -> None:
    c = world.client
    agent = world.headers("bob_read")
    before = {"agent_id": "laptop-1", "revision": 1, "refusal": "refused revision 2"}
    assert c.post(f"{ORG}/devices/check-in", json=before, headers=agent).status_code == 200
    answer = c.post(
        f"{ORG}/devices/check-in",
        json={"agent_id": "laptop-1", "revision": 1, "refusal": refusal},
        headers=agent,
    )
    valid = refusal is None or (
        isinstance(refusal, str) and len(refusal) <= 500 and "\x00" not in refusal
    )
    assert answer.status_code == (200 if valid else 422), answer.text
    (device,) = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    if valid:
        assert device["refusal"] == (refusal or None)
    else:
        assert "refusal" in answer.json()["detail"] or "NUL" in answer.json()["detail"]
        assert device["refusal"] == "refused revision 2"  # nothing was written


@pytest.mark.parametrize(
    ("engine", "field", "shown"),
    [
        ({"authz": "true", "proxy": True}, "engine.authz", "'true'"),
        ({"authz": 1, "proxy": None}, "engine.authz", "1"),
        ({"authz": True, "proxy": 0}, "engine.proxy", "0"),
        ({"authz": True}, "engine.proxy", "'authz': True"),  # both keys, always
        ({"authz": True, "proxy": None, "plugin": "x"}, "engine.plugin", "'x'"),
        (True, "engine", "True"),
        ("protected", "engine", "'protected'"),
    ],
)
def test_bad_engine_in_a_check_in_gets_422(
    world: World, engine: object, field: str, shown: str
) -> None:
    answer = world.client.post(
        f"{ORG}/devices/check-in",
        json={"agent_id": "laptop-1", "revision": 1, "engine": engine},
        headers=world.headers("bob_read"),
    )
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert f"{field}:" in detail and shown in detail, detail
    devices = world.client.get(f"{ORG}/devices", headers=world.headers("alice")).json()
    assert devices["devices"] == []  # nothing was written


def test_the_devices_service_checks_the_engine_itself() -> None:
    from regward.server.services.devices import Engine

    assert Engine.parse(None) is None
    assert Engine.parse({"authz": False, "proxy": None}) == Engine(False, None)
    for bad, field in [
        ({"authz": 1, "proxy": True}, "engine.authz"),
        ({"authz": True, "proxy": "no"}, "engine.proxy"),
        ({"authz": True}, "engine"),
        ([True, True], "engine"),
    ]:
        with pytest.raises(InvalidInput, match=field):
            Engine.parse(bad)


_flags = st.one_of(st.booleans(), st.none(), st.integers(-1, 2), st.text(max_size=5))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    engine=st.one_of(
        st.none(),
        st.fixed_dictionaries({"authz": _flags, "proxy": _flags}),
        st.dictionaries(st.sampled_from(["authz", "proxy", "Authz", "extra"]), _flags),
        st.booleans(),
        st.text(max_size=10),
        st.lists(st.booleans(), max_size=2),
    )
)
def test_any_engine_is_stored_as_sent_or_refused_with_422(world: World, engine: object) -> None:
    c = world.client
    agent = world.headers("bob_read")
    before = {"agent_id": "laptop-1", "revision": 1, "engine": {"authz": False, "proxy": False}}
    assert c.post(f"{ORG}/devices/check-in", json=before, headers=agent).status_code == 200
    answer = c.post(
        f"{ORG}/devices/check-in",
        json={"agent_id": "laptop-1", "revision": 1, "engine": engine},
        headers=agent,
    )
    valid = engine is None or (
        isinstance(engine, dict)
        and set(engine) == {"authz", "proxy"}
        and isinstance(engine["authz"], bool)
        and (engine["proxy"] is None or isinstance(engine["proxy"], bool))
    )
    assert answer.status_code == (200 if valid else 422), answer.text
    (device,) = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    if valid:
        assert device["engine"] == engine
    else:
        # The input guard refuses NUL (and its text forms) anywhere in a body before that.
        assert "engine" in answer.json()["detail"] or "NUL" in answer.json()["detail"]
        assert device["engine"] == {"authz": False, "proxy": False}  # nothing was written


def test_text_that_only_spells_nul_is_kept_as_typed(world: World) -> None:
    """`%00` in JSON and a backslash before `u0000` are text, not NUL: stored as sent."""
    c = world.client
    agent = world.headers("bob_read")
    for text in ("quota 100%00", "a \\u0000 b", "\\\\u0000"):
        body = {"agent_id": "laptop-1", "revision": 1, "refusal": text}
        assert c.post(f"{ORG}/devices/check-in", json=body, headers=agent).status_code == 200
        (device,) = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
        assert device["refusal"] == text
    # The escape itself, after an escaped backslash, is NUL again.
    raw = b'{"agent_id": "laptop-1", "revision": 1, "refusal": "x\\\\\\u0000"}'
    headers = {**agent, "content-type": "application/json"}
    answer = c.post(f"{ORG}/devices/check-in", content=raw, headers=headers)
    assert answer.status_code == 422 and "NUL" in answer.json()["detail"]


def test_nul_characters_are_refused_everywhere(world: World) -> None:
    c = world.client
    bob = world.headers("bob")
    answers = [
        c.post("/api/v1/auth/token", json={"username": "a\x00b", "password": "x" * 10}),
        c.post(
            f"{ORG}/denials",
            json={"reference": "ubuntu", "action": "pull", "reason": "\x00"},
            headers=bob,
        ),
        c.post("/api/v1/tokens", json={"name": "a\x00b"}, headers=bob),
        c.post(
            f"{ORG}/devices/check-in",
            json={"agent_id": "laptop-1", "revision": 1, "refusal": "a\x00b"},
            headers=bob,
        ),
        c.get("/api/v1/orgs/a%00b/policy", headers=bob),
        c.get(f"{ORG}/activity?actor=a%00b", headers=world.headers("alice")),
        c.post("/api/v1/auth/token", content=b'{"username": "a\x00", "password": "x"}'),
    ]
    assert [a.status_code for a in answers] == [422] * len(answers)
    assert all("NUL" in a.json()["detail"] for a in answers)


def test_422_carries_the_field_as_data_and_quotes_a_short_prefix(world: World) -> None:
    h = world.headers("alice")
    long = "a" * 300 + "/acme"
    answer = world.client.post(
        f"{ORG}/registry-access/registries", json={"entry": {"address": long}}, headers=h
    )
    assert answer.status_code == 422
    body = answer.json()
    assert body["field"] == "address"
    assert not body["detail"].startswith("entry.")
    assert "a" * 50 in body["detail"] and "a" * 100 not in body["detail"]
    assert f"({len(long)} characters)" in body["detail"]
    twice = {"enabled": True, "registries": [{"address": "ghcr.io"}, {"address": "GHCR.IO"}]}
    answer = world.client.put(f"{ORG}/registry-access", json={**twice, "version": 1}, headers=h)
    assert answer.json()["field"] == "registries[1].address"


@pytest.mark.parametrize(
    ("content_type", "body", "said"),
    [
        (
            "application/x-www-form-urlencoded",
            "address=ghcr.io",
            "application/x-www-form-urlencoded",
        ),
        ("text/plain", '{"address": "ghcr.io"}', "text/plain"),
        ("application/xml", "<entry/>", "application/xml"),
    ],
)
def test_a_body_that_is_not_sent_as_json_says_to_send_json(
    world: World, content_type: str, body: str, said: str
) -> None:
    """`curl -d` without `-H 'content-type: application/json'` sends a form: the answer says
    what to send instead of quoting Python bytes."""
    answer = world.client.post(
        f"{ORG}/registry-access/registries",
        content=body,
        headers={**world.headers("alice"), "Content-Type": content_type},
    )
    assert answer.status_code == 422
    assert answer.json() == {
        "detail": "body: send a JSON object with Content-Type: application/json "
        f"(this request's Content-Type: {said!r})"
    }


@pytest.mark.parametrize("text", ["\u202eexe.nottodb", "laptop\u200b", "ci\n7", "a\x07b"])
def test_text_shown_to_owners_holds_no_invisible_characters(world: World, text: str) -> None:
    """A right-to-left override, a zero-width space or a control character in a hostname, an
    agent id, a machine or a token name would show owners something other than what it is."""
    bob = world.headers("bob_read")
    answers = {
        "hostname": world.client.post(
            f"{ORG}/devices/check-in",
            json={"agent_id": "laptop-1", "revision": 1, "hostname": text},
            headers=bob,
        ),
        "agent_id": world.client.post(
            f"{ORG}/devices/check-in", json={"agent_id": text, "revision": 1}, headers=bob
        ),
        "machine": world.client.post(
            "/api/v1/auth/device",
            data={"organization": "acme", "machine": text, "agent_id": "laptop-1"},
        ),
        "name": world.client.post(
            "/api/v1/tokens", json={"name": text, "scope": "read"}, headers=world.headers("alice")
        ),
    }
    code = f"U+{ord(next(c for c in text if not c.isalnum() and c not in '.')):04X}"
    for field, answer in answers.items():
        assert answer.status_code == 422, (field, answer.text)
        assert answer.json()["detail"].startswith(f"{field}: "), answer.text
        assert code in answer.json()["detail"], answer.text
