from __future__ import annotations

from regward.server.app import create_app
from regward.server.services.limits import PER_USER
from tests.server.accounts import PASSWORD
from tests.server.conftest import TestClient, World


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


def test_failed_sign_ins_count_across_server_processes(world: World) -> None:
    """Two processes behind a load balancer share the count: a guesser gains nothing by
    spreading attempts over replicas (nor by waiting for a restart)."""
    other = create_app(world.settings, database=world.database)  # its own memory, same database
    wrong = {"username": "alice", "password": "wrong-guess"}
    with TestClient(other) as replica:
        for number in range(PER_USER):
            client = (world.client, replica)[number % 2]
            assert client.post("/api/v1/auth/token", json=wrong).status_code == 401
        for client in (world.client, replica):
            answer = client.post(
                "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
            )
            assert answer.status_code == 429
            assert 0 < int(answer.headers["Retry-After"]) <= 300
        assert (
            replica.post(
                "/api/v1/auth/token", json={"username": "bob", "password": PASSWORD}
            ).status_code
            == 200
        )
