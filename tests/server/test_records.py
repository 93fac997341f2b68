"""Activity (filters, pages, before/after), devices and denials, and the migrations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from regward.server.db import Database
from regward.server.models import Base
from tests.server.conftest import World

ORG = "/api/v1/orgs/acme"


def test_migrations_match_the_models(database: Database) -> None:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection)
        assert compare_metadata(context, Base.metadata) == []


def test_activity_records_applied_changes_with_before_and_after(world: World) -> None:
    c = world.client
    h = world.headers("alice")
    c.post(
        f"{ORG}/registry-access/registries",
        json={"address": "ghcr.io", "nickname": "GH"},
        headers=h,
    )
    c.put(f"{ORG}/registry-access/enabled", json={"enabled": True}, headers=h)
    c.post(f"{ORG}/registry-access/apply", headers=h)
    c.put(
        f"{ORG}/registry-access/registries/ghcr.io",
        json={"address": "ghcr.io", "nickname": "GitHub", "actions": ["pull"]},
        headers=h,
    )
    c.delete(f"{ORG}/registry-access/registries/docker.io", headers=h)
    c.post(f"{ORG}/registry-access/apply", headers=h)

    everything = c.get(f"{ORG}/activity?page_size=100", headers=h).json()
    actions = [e["action"] for e in everything["logs"]]
    assert actions[:6] == [
        "registry_access.applied",
        "registry_access.registry_removed",
        "registry_access.registry_updated",
        "registry_access.applied",
        "registry_access.registry_added",
        "registry_access.enabled",
    ]
    updated = everything["logs"][2]
    assert updated["actor"] == "alice"
    assert updated["account"] == "acme"
    assert updated["action_description"] == "Registry Access Management registry updated"
    assert updated["data"]["before"]["nickname"] == "GH"
    assert updated["data"]["after"]["nickname"] == "GitHub"
    assert updated["data"]["after"]["actions"] == ["pull"]
    assert updated["data"]["revision"] == 3
    removed = everything["logs"][1]
    assert removed["data"]["before"]["address"] == "docker.io"
    assert removed["data"]["after"] is None

    only = c.get(f"{ORG}/activity?action=registry_access.applied", headers=h).json()
    assert only["total"] == 2
    assert {e["data"]["revision"] for e in only["logs"]} == {2, 3}
    prefix = c.get(f"{ORG}/activity?action=organization.*", headers=h).json()
    assert {e["action"] for e in prefix["logs"]} == {
        "organization.created",
        "organization.member_added",
    }
    assert c.get(f"{ORG}/activity?actor=bob", headers=h).json()["total"] == 0
    page1 = c.get(f"{ORG}/activity?page=1&page_size=4", headers=h).json()
    page2 = c.get(f"{ORG}/activity?page=2&page_size=4", headers=h).json()
    assert page1["total"] == page2["total"] == everything["total"]
    assert [e["id"] for e in page1["logs"] + page2["logs"]] == [
        e["id"] for e in everything["logs"]
    ][:8]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert c.get(f"{ORG}/activity", params={"from": future}, headers=h).json()["total"] == 0
    assert (
        c.get(f"{ORG}/activity", params={"to": future}, headers=h).json()["total"]
        == everything["total"]
    )
    bad = c.get(f"{ORG}/activity?from=yesterday", headers=h)
    assert bad.status_code == 422 and "yesterday" in bad.json()["detail"]


def test_each_applied_change_names_the_owner_who_made_it_in_the_draft(world: World) -> None:
    """Bob drafts, Alice toggles and applies: Activity credits each change to its author."""
    c = world.client
    alice, bob = world.headers("alice"), world.headers("bob")
    promoted = c.put(f"{ORG}/members/bob", json={"role": "owner"}, headers=alice)
    assert promoted.status_code == 200, promoted.text
    added = c.post(f"{ORG}/registry-access/registries", json={"address": "quay.io"}, headers=bob)
    assert added.status_code == 201, added.text
    c.put(f"{ORG}/registry-access/enabled", json={"enabled": True}, headers=alice)
    # Alice edits bob's entry after him: the last author of an entry is the one credited.
    edited = {"address": "ghcr.io", "actions": ["pull"]}
    c.post(f"{ORG}/registry-access/registries", json={"address": "ghcr.io"}, headers=bob)
    c.put(f"{ORG}/registry-access/registries/ghcr.io", json=edited, headers=alice)
    c.delete(f"{ORG}/registry-access/registries/docker.io", headers=bob)
    pending = c.get(f"{ORG}/registry-access", headers=alice).json()["pending_changes"]
    assert {(p["action"], p["address"], p["edited_by"]) for p in pending} == {
        ("registry_access.enabled", None, "alice"),
        ("registry_access.registry_added", "quay.io", "bob"),
        ("registry_access.registry_added", "ghcr.io", "alice"),
        ("registry_access.registry_removed", "docker.io", "bob"),
    }
    assert c.post(f"{ORG}/registry-access/apply", headers=alice).status_code == 200
    logs = c.get(f"{ORG}/activity?page_size=100", headers=alice).json()["logs"]
    credited = {(e["action"], e["data"].get("address"), e["actor"]) for e in logs}
    assert {
        ("registry_access.applied", None, "alice"),
        ("registry_access.enabled", None, "alice"),
        ("registry_access.registry_added", "quay.io", "bob"),
        ("registry_access.registry_added", "ghcr.io", "alice"),
        ("registry_access.registry_removed", "docker.io", "bob"),
    } <= credited
    # Applied: nothing is pending, and the next apply credits only what is drafted after it.
    assert c.get(f"{ORG}/registry-access", headers=alice).json()["pending_changes"] == []
    c.put(f"{ORG}/registry-access/enabled", json={"enabled": False}, headers=bob)
    assert c.post(f"{ORG}/registry-access/apply", headers=alice).status_code == 200
    logs = c.get(f"{ORG}/activity?page_size=2", headers=alice).json()["logs"]
    assert [(e["action"], e["actor"]) for e in logs] == [
        ("registry_access.applied", "alice"),
        ("registry_access.disabled", "bob"),
    ]


def test_apply_with_nothing_pending_publishes_nothing(world: World) -> None:
    """Save & Apply of a draft that is the applied revision: 409 with one line, no revision,
    no Activity event; a change turned back before applying counts as nothing too."""
    c, h = world.client, world.headers("alice")
    before = c.get(f"{ORG}/activity?page_size=100", headers=h).json()["total"]
    refused = c.post(f"{ORG}/registry-access/apply", headers=h)
    assert refused.status_code == 409
    assert refused.json() == {
        "detail": "nothing to apply: the draft is the same as revision 1, which machines "
        "enforce already; change the draft first"
    }
    c.put(f"{ORG}/registry-access/enabled", json={"enabled": True}, headers=h)
    c.put(f"{ORG}/registry-access/enabled", json={"enabled": False}, headers=h)
    assert c.post(f"{ORG}/registry-access/apply", headers=h).status_code == 409
    assert c.get(f"{ORG}/policy", headers=h).json()["policy"]["revision"] == 1
    assert c.get(f"{ORG}/activity?page_size=100", headers=h).json()["total"] == before
    # A stale version is the first thing said: the owner's view is out of date.
    stale = c.post(f"{ORG}/registry-access/apply", json={"version": 1}, headers=h)
    assert stale.status_code == 409 and "changed since you loaded them" in stale.json()["detail"]
    assert world.publish() == 2


def test_two_owners_editing_entries_of_one_address_are_each_credited(world: World) -> None:
    c = world.client
    alice, bob = world.headers("alice"), world.headers("bob")
    c.put(f"{ORG}/members/bob", json={"role": "owner"}, headers=alice)
    for team in ("a", "b"):
        body = {"address": "ghcr.io", "nickname": f"Team {team}", "repositories": [f"{team}/*"]}
        assert (
            c.post(f"{ORG}/registry-access/registries", json=body, headers=alice).status_code == 201
        )
    c.post(f"{ORG}/registry-access/apply", headers=alice)
    moved = {"address": "ghcr.io", "nickname": "Team b", "repositories": ["c/*"]}
    entry = f"{ORG}/registry-access/registries/ghcr.io"
    assert c.put(f"{entry}?repositories=b/*", json=moved, headers=alice).status_code == 200
    assert c.delete(f"{entry}?repositories=a/*", headers=bob).status_code == 200
    assert c.post(f"{ORG}/registry-access/apply", headers=alice).status_code == 200
    logs = c.get(f"{ORG}/activity?page_size=3", headers=alice).json()["logs"]
    assert [(e["action"], e["data"]["repositories"], e["actor"]) for e in logs[1:]] == [
        ("registry_access.registry_removed", ["a/*"], "bob"),
        ("registry_access.registry_updated", ["c/*"], "alice"),
    ]


def test_devices_report_compliance_and_denials_are_listed(world: World) -> None:
    c = world.client
    bob = world.headers("bob_read")  # an agent with a read-only token
    checked = c.post(
        f"{ORG}/devices/check-in",
        json={"agent_id": "laptop-1", "revision": 1, "hostname": "l1"},
        headers=bob,
    )
    assert checked.json() == {"agent_id": "laptop-1", "applied_revision": 1, "current_revision": 1}
    c.post(f"{ORG}/devices/check-in", json={"agent_id": "ci-7", "revision": 1}, headers=bob)
    assert world.publish() == 2
    c.post(f"{ORG}/devices/check-in", json={"agent_id": "ci-7", "revision": 2}, headers=bob)
    devices = {
        d["agent_id"]: d
        for d in c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    }
    assert devices["ci-7"]["up_to_date"] is True
    assert devices["laptop-1"]["up_to_date"] is False
    assert devices["laptop-1"]["current_revision"] == 2
    assert devices["laptop-1"]["user"] == "bob"

    batch = {
        "denials": [
            {
                "reference": "quay.io/org/tool:1",
                "action": "pull",
                "revision": 2,
                "agent_id": "ci-7",
            },
            {"reference": "ghcr.io/x/y", "action": "push", "revision": 2, "reason": "not allowed"},
        ]
    }
    assert c.post(f"{ORG}/denials", json=batch, headers=bob).json() == {"stored": 2}
    listed = c.get(f"{ORG}/denials", headers=world.headers("alice")).json()
    assert listed["total"] == 2
    assert listed["denials"][1]["registry"] == "quay.io"
    assert listed["denials"][0]["action"] == "push"
    bad = c.post(f"{ORG}/denials", json={"reference": "x", "action": "delete"}, headers=bob)
    assert bad.status_code == 422 and "delete" in bad.json()["detail"]
    bad = c.post(f"{ORG}/devices/check-in", json={"agent_id": "", "revision": -1}, headers=bob)
    assert bad.status_code == 422


def test_a_refused_revision_stays_with_the_device_until_a_good_one(world: World) -> None:
    c = world.client
    agent = world.headers("bob_read")
    refusal = (
        "refused revision 2, which does not verify against the pinned key: <b>bad</b>; "
        "still enforcing revision 1"
    )

    def listed() -> dict[str, object]:
        answer = c.get(f"{ORG}/devices", headers=world.headers("alice"))
        (device,) = answer.json()["devices"]
        return dict(device)

    def page() -> str:
        c.cookies.set("regward_session", world.tokens["alice"])
        return str(c.get("/orgs/acme/devices").text)

    assert "refused the last policy revision" not in page()
    checked = c.post(
        f"{ORG}/devices/check-in",
        json={"agent_id": "laptop-1", "revision": 1, "refusal": refusal},
        headers=agent,
    )
    assert checked.status_code == 200, checked.text
    assert listed()["refusal"] == refusal
    assert listed()["applied_revision"] == 1
    shown = page()
    assert "1 device refused the last policy revision" in shown
    assert 'data-state="refused"><span class="tag tag-bad">Refused a revision</span>' in shown
    assert "Refused revision 2, which does not verify against the pinned key" in shown
    assert "&lt;b&gt;bad&lt;/b&gt;" in shown and "<b>bad</b>" not in shown  # agent's words escaped

    assert world.publish() == 2
    c.post(f"{ORG}/devices/check-in", json={"agent_id": "laptop-1", "revision": 2}, headers=agent)
    assert listed()["refusal"] is None
    assert "refused the last policy revision" not in page()
    empty = {"agent_id": "laptop-1", "revision": 2, "refusal": ""}
    assert c.post(f"{ORG}/devices/check-in", json=empty, headers=agent).status_code == 200
    assert listed()["refusal"] is None


def test_an_unprotected_docker_engine_is_marked_with_the_reason(world: World) -> None:
    c = world.client
    agent = world.headers("bob_read")

    def check_in(agent_id: str, **fields: object) -> None:
        body = {"agent_id": agent_id, "revision": 1, **fields}
        answer = c.post(f"{ORG}/devices/check-in", json=body, headers=agent)
        assert answer.status_code == 200, answer.text

    def listed() -> dict[str, object]:
        answer = c.get(f"{ORG}/devices", headers=world.headers("alice"))
        return {device["agent_id"]: device["engine"] for device in answer.json()["devices"]}

    def page() -> str:
        c.cookies.set("regward_session", world.tokens["alice"])
        return str(c.get("/orgs/acme/devices").text)

    check_in("old-agent")  # an agent too old to report
    check_in("no-engine", engine=None)
    check_in("protected", engine={"authz": True, "proxy": True})
    check_in("no-proxy-agent", engine={"authz": True, "proxy": None})
    assert listed() == {
        "old-agent": None,
        "no-engine": None,
        "protected": {"authz": True, "proxy": True},
        "no-proxy-agent": {"authz": True, "proxy": None},
    }
    shown = page()
    assert "Docker Engine" in shown and "NOT protected" not in shown
    assert "does not protect" not in shown
    assert shown.count('data-engine="unknown"') == 2
    assert shown.count('data-engine="protected"') == 2
    assert "AuthZ plugin only: the agent&#39;s proxy is off" in shown

    check_in("bare-dockerd", engine={"authz": False, "proxy": False})
    check_in("no-proxy-dockerd", engine={"authz": True, "proxy": False})
    assert listed()["bare-dockerd"] == {"authz": False, "proxy": False}
    shown = page()
    assert "2 devices run a Docker Engine that Regward does not protect" in shown
    assert shown.count('data-engine="not protected"') == 2
    assert shown.count("NOT protected</span>") == 2
    assert (
        "Docker Engine not protected: dockerd does not use the agent&#39;s AuthZ plugin, so its "
        "pulls, pushes and runs are not checked; dockerd does not send registry traffic through "
        "the agent&#39;s proxy, so pulls inside builds are not checked. On the machine, run "
        "regward agent install and restart dockerd"
    ) in shown
    assert (
        'data-engine-problem="no-proxy-dockerd">✖ Docker Engine not protected: dockerd does '
        "not send registry traffic"
    ) in shown

    check_in("bare-dockerd", engine={"authz": True, "proxy": True})  # fixed and restarted
    check_in("no-proxy-dockerd")  # downgraded to an agent that does not tell: unknown
    assert listed()["bare-dockerd"] == {"authz": True, "proxy": True}
    assert listed()["no-proxy-dockerd"] is None
    assert "does not protect" not in page()


def test_feed_query_is_checked(world: World) -> None:
    h = world.headers("bob")
    for query in ("wait=soon", "after=-1", "wait=nan"):
        answer = world.client.get(f"{ORG}/policy?{query}", headers=h)
        assert answer.status_code == 422, query
        assert query.split("=")[1] in answer.json()["detail"]
    assert world.client.head(f"{ORG}/policy", headers=h).status_code == 200
    assert (
        world.client.get(f"{ORG}/policy", headers={"Authorization": "Bearer rwp_nope"}).status_code
        == 401
    )
