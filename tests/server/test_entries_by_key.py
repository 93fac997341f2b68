"""Several entries for one address, told apart by their repositories (the entry's key).

Over the REST API on SQLite and PostgreSQL: add, apply, the signed feed and what it decides,
update and remove by key, 409 for an ambiguous address and for a duplicate key, and Activity
recording one update for the entry that changed.
"""

from __future__ import annotations

from typing import Any

from regward.policy import (
    Action,
    ImageReference,
    Policy,
    SignedPolicy,
    evaluate,
    public_key_from_text,
    verify,
)
from regward.server.services import registry_access
from tests.server.conftest import World

ORG = "/api/v1/orgs/acme"
ENTRIES = f"{ORG}/registry-access/registries"
EVERYTHING_PULL = {"address": "ghcr.io", "nickname": "GitHub", "actions": ["pull"]}
OURS = {"address": "ghcr.io", "nickname": "Ours", "repositories": ["acme/*"]}


def signed_feed(world: World) -> Policy:
    """The feed as an agent reads it: signature checked against the server's public key."""
    key = world.client.get("/api/v1/signing-key").json()["public_key"]
    answer = world.client.get(f"{ORG}/policy", headers=world.headers("bob_read"))
    assert answer.status_code == 200, answer.text
    return verify(SignedPolicy.from_json(answer.content), public_key_from_text(key))


def allows(policy: Policy, action: Action, image: str) -> bool:
    return evaluate(policy, action, ImageReference.parse(image)).allowed


def registry_events(world: World, revision: int) -> list[dict[str, Any]]:
    log = world.client.get(f"{ORG}/activity?page_size=100", headers=world.headers("alice"))
    return [
        event
        for event in log.json()["logs"]
        if event["data"].get("revision") == revision and "address" in event["data"]
    ]


def test_two_entries_for_one_address_are_published_and_enforced(world: World) -> None:
    c, h = world.client, world.headers("alice")
    assert c.post(ENTRIES, json={"entry": EVERYTHING_PULL}, headers=h).status_code == 201
    added = c.post(ENTRIES, json={"entry": OURS}, headers=h)
    assert added.status_code == 201, added.text
    assert [(e["address"], e["repositories"]) for e in added.json()["registries"]] == [
        ("docker.io", []),
        ("ghcr.io", []),
        ("ghcr.io", ["acme/*"]),
    ]
    pending = added.json()["pending_changes"]
    assert [(p["address"], p["repositories"]) for p in pending] == [
        ("ghcr.io", []),
        ("ghcr.io", ["acme/*"]),
    ]
    assert c.put(f"{ORG}/registry-access/enabled", json={"enabled": True}, headers=h).is_success
    applied = c.post(f"{ORG}/registry-access/apply", headers=h)
    assert applied.status_code == 200, applied.text

    policy = signed_feed(world)
    assert policy.revision == applied.json()["revision"]
    ghcr = [e.to_dict() for e in policy.registries if str(e.address) == "ghcr.io"]
    assert [(e["repositories"], e["actions"]) for e in ghcr] == [
        ([], ["pull"]),
        (["acme/*"], ["pull", "push"]),
    ]
    assert allows(policy, Action.PUSH, "ghcr.io/acme/x:1")
    assert not allows(policy, Action.PUSH, "ghcr.io/other/x:1")
    assert allows(policy, Action.PULL, "ghcr.io/other/x:1")
    assert allows(policy, Action.PULL, "ghcr.io/acme/x:1")


def test_same_key_twice_is_refused_naming_it(world: World) -> None:
    c, h = world.client, world.headers("alice")
    assert c.post(ENTRIES, json={"entry": OURS}, headers=h).status_code == 201
    # The same patterns in another spelling and order are the same key.
    again = {"address": "GHCR.io.", "repositories": ["acme/*", "acme/*"]}
    answer = c.post(ENTRIES, json={"entry": again}, headers=h)
    assert answer.status_code == 409
    assert "'ghcr.io' for repositories acme/*" in answer.json()["detail"]
    hub = c.post(ENTRIES, json={"entry": {"address": "index.docker.io"}}, headers=h)
    assert hub.status_code == 409
    assert "'docker.io' for every repository" in hub.json()["detail"]
    # An edit may not turn one entry into another's key either.
    c.post(ENTRIES, json={"entry": EVERYTHING_PULL}, headers=h)
    clash = c.put(f"{ENTRIES}/ghcr.io?repositories=", json={"entry": OURS}, headers=h)
    assert clash.status_code == 409
    assert "acme/*" in clash.json()["detail"]
    # The whole-draft PUT refuses a repeated key, and accepts one address twice.
    draft = c.get(f"{ORG}/registry-access", headers=h).json()
    body = {"enabled": True, "version": draft["version"]}
    twice = c.put(f"{ORG}/registry-access", json={**body, "registries": [OURS, OURS]}, headers=h)
    assert twice.status_code == 422
    assert "registries[1]" in twice.json()["detail"]
    fine = c.put(
        f"{ORG}/registry-access",
        json={**body, "registries": [OURS, EVERYTHING_PULL]},
        headers=h,
    )
    assert fine.status_code == 200, fine.text


def test_an_ambiguous_address_gets_409_naming_the_choices(world: World) -> None:
    c, h = world.client, world.headers("alice")
    c.post(ENTRIES, json={"entry": EVERYTHING_PULL}, headers=h)
    c.post(ENTRIES, json={"entry": OURS}, headers=h)
    for answer in (
        c.put(f"{ENTRIES}/ghcr.io", json={"entry": OURS}, headers=h),
        c.delete(f"{ENTRIES}/ghcr.io", headers=h),
    ):
        assert answer.status_code == 409
        detail = answer.json()["detail"]
        assert "'ghcr.io' has 2 entries" in detail
        assert "'' or 'acme/*'" in detail
    missing = c.delete(f"{ENTRIES}/ghcr.io?repositories=other/*", headers=h)
    assert missing.status_code == 404
    assert "other/*" in missing.json()["detail"]
    bad = c.delete(f"{ENTRIES}/ghcr.io?repositories=Not%20A%20Pattern", headers=h)
    assert bad.status_code == 422
    assert "Not A Pattern" in bad.json()["detail"]
    # A unique address still needs no selector.
    assert c.delete(f"{ENTRIES}/docker.io", headers=h).status_code == 200
    registries = c.get(f"{ORG}/registry-access", headers=h).json()["registries"]
    assert len(registries) == 2


def test_update_and_remove_one_entry_by_key_records_the_right_events(world: World) -> None:
    c, h = world.client, world.headers("alice")
    c.post(ENTRIES, json={"entry": EVERYTHING_PULL}, headers=h)
    c.post(ENTRIES, json={"entry": {**OURS, "repositories": ["acme/*", "acme/tools"]}}, headers=h)
    c.put(f"{ORG}/registry-access/enabled", json={"enabled": True}, headers=h)
    c.post(f"{ORG}/registry-access/apply", headers=h)

    # Patterns in any order name the entry; only that one changes.
    edited = {**OURS, "nickname": "Ours, pull only", "actions": ["pull"]}
    edited["repositories"] = ["acme/tools", "acme/*"]
    answer = c.put(
        f"{ENTRIES}/ghcr.io",
        params={"repositories": "acme/tools,acme/*"},
        json={"entry": edited},
        headers=h,
    )
    assert answer.status_code == 200, answer.text
    ghcr = [e for e in answer.json()["registries"] if e["address"] == "ghcr.io"]
    assert [e["nickname"] for e in ghcr] == ["GitHub", "Ours, pull only"]
    applied = c.post(f"{ORG}/registry-access/apply", headers=h).json()
    assert [(ch["action"], ch["repositories"]) for ch in applied["changes"]] == [
        ("registry_access.registry_updated", ["acme/*", "acme/tools"])
    ]
    [event] = registry_events(world, applied["revision"])
    assert event["action"] == "registry_access.registry_updated"
    assert event["data"]["address"] == "ghcr.io"
    assert event["data"]["repositories"] == ["acme/*", "acme/tools"]
    assert event["data"]["before"]["nickname"] == "Ours"
    assert event["data"]["after"]["actions"] == ["pull"]

    # Narrowing the repositories of one entry is one update too, not a remove and an add.
    narrower = {**edited, "repositories": ["acme/tools"]}
    answer = c.put(
        f"{ENTRIES}/ghcr.io?repositories=acme/*,acme/tools", json={"entry": narrower}, headers=h
    )
    assert answer.status_code == 200, answer.text
    applied = c.post(f"{ORG}/registry-access/apply", headers=h).json()
    [event] = registry_events(world, applied["revision"])
    assert event["action"] == "registry_access.registry_updated"
    assert event["data"]["before"]["repositories"] == ["acme/tools", "acme/*"]  # as edited
    assert event["data"]["after"]["repositories"] == ["acme/tools"]

    # `repositories=` (empty) is the entry for every repository.
    removed = c.delete(f"{ENTRIES}/ghcr.io", params={"repositories": ""}, headers=h)
    assert removed.status_code == 200, removed.text
    assert [(e["address"], e["repositories"]) for e in removed.json()["registries"]] == [
        ("docker.io", []),
        ("ghcr.io", ["acme/tools"]),
    ]
    applied = c.post(f"{ORG}/registry-access/apply", headers=h).json()
    [event] = registry_events(world, applied["revision"])
    assert event["action"] == "registry_access.registry_removed"
    assert event["data"]["repositories"] == []
    assert event["data"]["before"]["nickname"] == "GitHub"
    policy = signed_feed(world)
    assert not allows(policy, Action.PULL, "ghcr.io/other/x")
    assert allows(policy, Action.PULL, "ghcr.io/acme/tools")


def test_openapi_documents_the_repositories_selector(world: World) -> None:
    schema = world.client.get("/api/v1/openapi.json").json()
    path = schema["paths"]["/api/v1/orgs/{org}/registry-access/registries/{address}"]
    for method in ("put", "delete"):
        [parameter] = [p for p in path[method]["parameters"] if p["name"] == "repositories"]
        assert parameter["in"] == "query"
        assert parameter["required"] is False
        assert "comma-separated" in parameter["description"]
        assert "409" in parameter["description"]


def policy_of(*entries: dict[str, Any]) -> Policy:
    return Policy.from_dict({"organization": "acme", "registries": list(entries)})


def test_diff_keys_entries_by_address_and_repositories() -> None:
    quay_team = {"address": "quay.io", "repositories": ["team/*"]}
    secret = {"address": "quay.io", "repositories": ["team/secret"], "allowed": False}
    old = policy_of(EVERYTHING_PULL, OURS, quay_team, secret)
    # One of two ghcr.io entries changes: one update, for that entry.
    new = policy_of(EVERYTHING_PULL, {**OURS, "nickname": "Acme"}, quay_team, secret)
    [change] = registry_access.diff(old, new)
    assert (change.action, change.address, change.repositories) == (
        "registry_access.registry_updated",
        "ghcr.io",
        ("acme/*",),
    )
    assert change.before is not None and change.before["nickname"] == "Ours"
    # Reordering is no change; removing one of two quay.io entries removes that one.
    assert registry_access.diff(old, policy_of(secret, quay_team, OURS, EVERYTHING_PULL)) == [
        c for c in registry_access.diff(old, old)
    ]
    [removed] = registry_access.diff(old, policy_of(EVERYTHING_PULL, OURS, quay_team))
    assert (removed.action, removed.repositories) == (
        "registry_access.registry_removed",
        ("team/secret",),
    )
    # A new entry for a listed address is an addition, the old one untouched.
    extra = {"address": "ghcr.io", "repositories": ["acme/tools"], "actions": ["pull"]}
    [added] = registry_access.diff(old, policy_of(EVERYTHING_PULL, OURS, extra, quay_team, secret))
    assert (added.action, added.repositories) == (
        "registry_access.registry_added",
        ("acme/tools",),
    )


def test_an_edit_of_the_repositories_pairs_with_the_entry_it_changed() -> None:
    """Of two entries at one address, the one whose repositories changed is the update and the
    other the removal, whatever their order: the entry alike in everything else is the same."""
    first = {"address": "ghcr.io", "nickname": "Team A", "repositories": ["a/*"]}
    second = {"address": "ghcr.io", "nickname": "Team B", "repositories": ["b/*"]}
    changed = {**second, "repositories": ["c/*"]}
    changes = registry_access.diff(policy_of(first, second), policy_of(changed))
    assert [(c.action, c.repositories, (c.before or {}).get("nickname")) for c in changes] == [
        ("registry_access.registry_updated", ("c/*",), "Team B"),
        ("registry_access.registry_removed", ("a/*",), "Team A"),
    ]
