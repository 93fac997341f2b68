from __future__ import annotations

from tests.server.accounts import PASSWORD
from tests.server.conftest import World


def test_owner_adds_and_applies(world: World) -> None:
    c = world.client
    h = world.headers("alice")
    draft = c.get("/api/v1/orgs/acme/registry-access", headers=h).json()
    assert draft["enabled"] is False
    assert [e["address"] for e in draft["registries"]] == ["docker.io"]
    r = c.post(
        "/api/v1/orgs/acme/registry-access/registries", json={"address": "ghcr.io"}, headers=h
    )
    assert r.status_code == 201, r.text
    r = c.put("/api/v1/orgs/acme/registry-access/enabled", json={"enabled": True}, headers=h)
    assert r.status_code == 200, r.text
    r = c.post("/api/v1/orgs/acme/registry-access/apply", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["revision"] == 2
    feed = c.get("/api/v1/orgs/acme/policy", headers=world.headers("bob"))
    assert feed.status_code == 200
    assert feed.json()["policy"]["revision"] == 2
    log = c.get("/api/v1/orgs/acme/activity", headers=h).json()
    assert [e["action"] for e in log["logs"]][:3] == [
        "registry_access.applied",
        "registry_access.registry_added",
        "registry_access.enabled",
    ]


def test_a_new_password_ends_the_other_sign_ins_but_not_access_tokens(world: World) -> None:
    c = world.client

    def sign_in(password: str) -> dict[str, str]:
        answer = c.post("/api/v1/auth/token", json={"username": "alice", "password": password})
        assert answer.status_code == 200, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}

    here, elsewhere, token = sign_in(PASSWORD), sign_in(PASSWORD), world.headers("alice_read")
    new = "a much longer passphrase"
    answer = c.put(
        "/api/v1/user/password",
        json={"current_password": PASSWORD, "new_password": new},
        headers=here,
    )
    assert answer.status_code == 204, answer.text
    assert c.get("/api/v1/user", headers=here).status_code == 200
    assert c.get("/api/v1/user", headers=elsewhere).status_code == 401
    assert c.get("/api/v1/user", headers=token).status_code == 200
    assert sign_in(new)
