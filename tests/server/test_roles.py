"""Every API route, called by anonymous, outsider, member, owner and read-only-token callers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.server.conftest import World
from tests.server.device import signed_in_machine

CALLERS = ("anonymous", "outsider", "member", "readonly", "owner")  # owner last: it may delete
WHO = {
    "anonymous": "",
    "outsider": "eve",
    "member": "bob",
    "readonly": "alice_read",
    "owner": "alice",
}
OK = "ok"

# access class -> caller -> expected status (OK means the route's success status)
EXPECTED: dict[str, dict[str, int | str]] = {
    "public": dict.fromkeys(CALLERS, OK),
    "user": {"anonymous": 401, "outsider": OK, "member": OK, "readonly": OK, "owner": OK},
    "user_write": {"anonymous": 401, "outsider": OK, "member": OK, "readonly": 403, "owner": OK},
    "own_token": {"anonymous": 401, "outsider": 404, "member": 404, "readonly": 403, "owner": OK},
    "org_read": {"anonymous": 401, "outsider": 404, "member": OK, "readonly": OK, "owner": OK},
    "org_owner_read": {
        "anonymous": 401,
        "outsider": 404,
        "member": 403,
        "readonly": OK,
        "owner": OK,
    },
    "org_owner_write": {
        "anonymous": 401,
        "outsider": 404,
        "member": 403,
        "readonly": 403,
        "owner": OK,
    },
}


@dataclass
class Call:
    method: str
    route: str
    access: str
    success: int
    path: Callable[[World, str], str]
    body: Callable[[World, str], Any] = lambda _w, _c: None


def _version(world: World) -> int:
    draft = world.client.get("/api/v1/orgs/acme/registry-access", headers=world.headers("alice"))
    return int(draft.json()["version"])


def _alice_token_id(world: World) -> int:
    answer = world.client.post(
        "/api/v1/tokens", json={"name": "victim", "scope": "read"}, headers=world.headers("alice")
    )
    return int(answer.json()["id"])


def _webhook(world: World) -> str:
    """A new webhook of acme (to nothing that listens: port 9 on loopback), as its path."""
    answer = world.client.post(
        "/api/v1/orgs/acme/webhooks",
        json={"url": "http://127.0.0.1:9/hook"},
        headers=world.headers("alice"),
    )
    return f"/api/v1/orgs/acme/webhooks/{answer.json()['id']}"


def fixed(path: str) -> Callable[[World, str], str]:
    return lambda _w, _c: path


ORG = "/api/v1/orgs/acme"
CALLS = [
    Call("GET", "/api/v1/health", "public", 200, fixed("/api/v1/health")),
    Call("GET", "/healthz", "public", 200, fixed("/healthz")),
    Call("GET", "/readyz", "public", 200, fixed("/readyz")),
    Call("GET", "/api/v1/signing-key", "public", 200, fixed("/api/v1/signing-key")),
    Call("GET", "/api/v1/user", "user", 200, fixed("/api/v1/user")),
    Call(
        "PUT",
        "/api/v1/user/password",
        "user_write",
        204,
        fixed("/api/v1/user/password"),
        lambda _w, _c: {
            "current_password": "correct horse battery",
            "new_password": "correct horse battery",
        },
    ),
    Call("GET", "/api/v1/tokens", "user", 200, fixed("/api/v1/tokens")),
    Call(
        "POST",
        "/api/v1/tokens",
        "user_write",
        201,
        fixed("/api/v1/tokens"),
        lambda _w, c: {"name": f"t-{c}", "scope": "read"},
    ),
    Call(
        "DELETE",
        "/api/v1/tokens/{token_id}",
        "own_token",
        204,
        lambda w, _c: f"/api/v1/tokens/{_alice_token_id(w)}",
    ),
    Call("GET", "/api/v1/orgs", "user", 200, fixed("/api/v1/orgs")),
    Call(
        "POST",
        "/api/v1/orgs",
        "user_write",
        201,
        fixed("/api/v1/orgs"),
        lambda _w, c: {"name": f"org-{c}"},
    ),
    Call("GET", "/api/v1/orgs/{org}", "org_read", 200, fixed(ORG)),
    Call("GET", "/api/v1/orgs/{org}/members", "org_read", 200, fixed(f"{ORG}/members")),
    Call(
        "POST",
        "/api/v1/orgs/{org}/members",
        "org_owner_write",
        201,
        fixed(f"{ORG}/members"),
        lambda _w, c: {"username": f"new-{c}", "role": "member"},
    ),
    Call(
        "PUT",
        "/api/v1/orgs/{org}/members/{username}",
        "org_owner_write",
        200,
        fixed(f"{ORG}/members/bob"),
        lambda _w, _c: {"role": "member"},
    ),
    Call(
        "DELETE",
        "/api/v1/orgs/{org}/members/{username}",
        "org_owner_write",
        204,
        fixed(f"{ORG}/members/dave"),
    ),
    Call("GET", "/api/v1/orgs/{org}/activity", "org_owner_read", 200, fixed(f"{ORG}/activity")),
    Call("GET", "/api/v1/orgs/{org}/sso", "org_owner_read", 200, fixed(f"{ORG}/sso")),
    Call(
        "PUT",
        "/api/v1/orgs/{org}/sso",
        "org_owner_write",
        200,
        fixed(f"{ORG}/sso"),
        lambda _w, _c: {"join": [{"email_domain": "example.com", "role": "member"}]},
    ),
    Call("GET", "/api/v1/orgs/{org}/webhooks", "org_owner_read", 200, fixed(f"{ORG}/webhooks")),
    Call(
        "POST",
        "/api/v1/orgs/{org}/webhooks",
        "org_owner_write",
        201,
        fixed(f"{ORG}/webhooks"),
        lambda _w, _c: {"url": "http://127.0.0.1:9/hook"},
    ),
    Call(
        "POST",
        "/api/v1/orgs/{org}/webhooks/{webhook_id}/test",
        "org_owner_write",
        202,
        lambda w, _c: f"{_webhook(w)}/test",
    ),
    Call(
        "GET",
        "/api/v1/orgs/{org}/webhooks/{webhook_id}/deliveries",
        "org_owner_read",
        200,
        lambda w, _c: f"{_webhook(w)}/deliveries",
    ),
    Call(
        "DELETE",
        "/api/v1/orgs/{org}/webhooks/{webhook_id}",
        "org_owner_write",
        204,
        lambda w, _c: _webhook(w),
    ),
    Call(
        "POST",
        "/api/v1/orgs/{org}/devices/check-in",
        "org_read",
        200,
        fixed(f"{ORG}/devices/check-in"),
        lambda _w, c: {"agent_id": f"agent-{c}", "revision": 1, "hostname": "ci-1"},
    ),
    Call("GET", "/api/v1/orgs/{org}/devices", "org_owner_read", 200, fixed(f"{ORG}/devices")),
    Call(
        "DELETE",
        "/api/v1/orgs/{org}/devices/{agent_id}/token",
        "org_owner_write",
        204,
        fixed(f"{ORG}/devices/agent-7/token"),
    ),
    Call(
        "POST",
        "/api/v1/orgs/{org}/denials",
        "org_read",
        201,
        fixed(f"{ORG}/denials"),
        lambda _w, _c: {"reference": "quay.io/x/y:1", "action": "pull", "revision": 1},
    ),
    Call("GET", "/api/v1/orgs/{org}/denials", "org_owner_read", 200, fixed(f"{ORG}/denials")),
    Call(
        "GET",
        "/api/v1/orgs/{org}/registry-access",
        "org_read",
        200,
        fixed(f"{ORG}/registry-access"),
    ),
    Call(
        "PUT",
        "/api/v1/orgs/{org}/registry-access",
        "org_owner_write",
        200,
        fixed(f"{ORG}/registry-access"),
        lambda w, _c: {
            "enabled": True,
            "registries": [{"address": "docker.io"}, {"address": "quay.io"}],
            "version": _version(w),
        },
    ),
    Call(
        "PUT",
        "/api/v1/orgs/{org}/registry-access/enabled",
        "org_owner_write",
        200,
        fixed(f"{ORG}/registry-access/enabled"),
        lambda _w, _c: {"enabled": True},
    ),
    Call(
        "POST",
        "/api/v1/orgs/{org}/registry-access/registries",
        "org_owner_write",
        201,
        fixed(f"{ORG}/registry-access/registries"),
        lambda _w, c: {"entry": {"address": f"{c}.example.com"}},
    ),
    Call(
        "PUT",
        "/api/v1/orgs/{org}/registry-access/registries/{address}",
        "org_owner_write",
        200,
        fixed(f"{ORG}/registry-access/registries/docker.io"),
        lambda _w, _c: {"entry": {"address": "docker.io", "nickname": "Hub"}},
    ),
    Call(
        "DELETE",
        "/api/v1/orgs/{org}/registry-access/registries/{address}",
        "org_owner_write",
        200,
        fixed(f"{ORG}/registry-access/registries/quay.io"),
    ),
    Call(
        "GET",
        "/api/v1/orgs/{org}/registry-access/file",
        "org_read",
        200,
        fixed(f"{ORG}/registry-access/file?revision=1"),
    ),
    Call(  # a JSON file, read as YAML: JSON is YAML too; a change, so apply has one
        "PUT",
        "/api/v1/orgs/{org}/registry-access/file",
        "org_owner_write",
        200,
        fixed(f"{ORG}/registry-access/file"),
        lambda _w, _c: {"organization": "acme", "enabled": True, "registries": []},
    ),
    Call(
        "POST",
        "/api/v1/orgs/{org}/registry-access/apply",
        "org_owner_write",
        200,
        fixed(f"{ORG}/registry-access/apply"),
    ),
    Call("GET", "/api/v1/orgs/{org}/policy", "org_read", 200, fixed(f"{ORG}/policy")),
    Call("HEAD", "/api/v1/orgs/{org}/policy", "org_read", 200, fixed(f"{ORG}/policy")),
    # Signing out revokes the token used; checked with throw-away tokens below.
    Call("DELETE", "/api/v1/auth/token", "user", 204, fixed("/api/v1/auth/token")),
    Call("POST", "/api/v1/auth/token", "public", 200, fixed("/api/v1/auth/token")),
    # A machine's form posts; walked in test_device_sign_in.py.
    Call("POST", "/api/v1/auth/device", "public", 200, fixed("/api/v1/auth/device")),
    Call("POST", "/api/v1/auth/device/token", "public", 400, fixed("/api/v1/auth/device/token")),
]
WALKED_ELSEWHERE = {"/api/v1/auth/token", "/api/v1/auth/device", "/api/v1/auth/device/token"}


def _prepare(world: World) -> None:
    c = world.client
    h = world.headers("alice")
    assert c.post(f"{ORG}/members", json={"username": "dave"}, headers=h).status_code == 201
    answer = c.post(f"{ORG}/registry-access/registries", json={"address": "quay.io"}, headers=h)
    assert answer.status_code == 201
    signed_in_machine(world, "bob", "build-7", "agent-7")


def test_every_route_is_in_the_matrix(world: World) -> None:
    """The OpenAPI schema lists every API route; each one must be walked below."""
    paths = world.app.openapi()["paths"]
    routes = {(method.upper(), path) for path, item in paths.items() for method in item}
    assert routes == {(call.method, call.route) for call in CALLS}


@pytest.mark.parametrize("who", CALLERS)
def test_role_matrix(world: World, who: str) -> None:
    _prepare(world)
    failures = []
    for call in CALLS:
        if call.route in WALKED_ELSEWHERE:
            continue  # below, and in test_device_sign_in.py
        expected = EXPECTED[call.access][who]
        want = call.success if expected == OK else expected
        answer = world.client.request(
            call.method,
            call.path(world, who),
            json=call.body(world, who),
            headers=world.headers(WHO[who]),
        )
        if answer.status_code != want:
            failures.append(
                f"{call.method} {call.route}: {answer.status_code} != {want}: {answer.text}"
            )
        if answer.status_code >= 400 and call.method != "HEAD":
            assert isinstance(answer.json()["detail"], str)  # one readable line
    assert not failures, "\n".join(failures)


def test_outsider_cannot_tell_a_hidden_org_from_a_missing_one(world: World) -> None:
    hidden = world.client.get(f"{ORG}/registry-access", headers=world.headers("eve"))
    missing = world.client.get("/api/v1/orgs/nosuch/registry-access", headers=world.headers("eve"))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["detail"].replace("acme", "X") == missing.json()["detail"].replace(
        "nosuch", "X"
    )


def test_sign_in_and_sign_out(world: World) -> None:
    c = world.client
    bad = c.post("/api/v1/auth/token", json={"username": "alice", "password": "wrong password"})
    assert bad.status_code == 401
    unknown = c.post(
        "/api/v1/auth/token", json={"username": "nobody", "password": "wrong password"}
    )
    assert unknown.status_code == 401
    assert bad.json() == unknown.json()
    token = c.post(
        "/api/v1/auth/token", json={"username": "bob", "password": "correct horse battery"}
    ).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert c.get("/api/v1/user", headers=headers).json()["username"] == "bob"
    assert c.delete("/api/v1/auth/token", headers=headers).status_code == 204
    assert c.get("/api/v1/user", headers=headers).status_code == 401
    assert c.delete("/api/v1/auth/token").status_code == 401


def test_repeated_failed_sign_ins_are_slowed_down(world: World) -> None:
    c = world.client
    wrong = {"username": "bob", "password": "not the password"}
    answers = [c.post("/api/v1/auth/token", json=wrong).status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]
    right = c.post("/api/v1/auth/token", json={**wrong, "password": "correct horse battery"})
    assert right.status_code == 429
    assert int(right.headers["Retry-After"]) > 0
    assert "try again" in right.json()["detail"]


def test_revoked_personal_token_stops_working(world: World) -> None:
    c = world.client
    created = c.post(
        "/api/v1/tokens", json={"name": "ci", "scope": "read-write"}, headers=world.headers("alice")
    ).json()
    headers = {"Authorization": f"Bearer {created['token']}"}
    assert c.get(f"{ORG}/policy", headers=headers).status_code == 200
    listed = c.get("/api/v1/tokens", headers=world.headers("alice")).json()["tokens"]
    assert created["token"] not in str(listed)  # the value is shown once only
    assert (
        c.delete(f"/api/v1/tokens/{created['id']}", headers=world.headers("alice")).status_code
        == 204
    )
    assert c.get(f"{ORG}/policy", headers=headers).status_code == 401
