"""Device sign-in (RFC 8628) over the API, on SQLite and PostgreSQL: codes, polling answers,
the machine's own token (read scope, bound to its organization and agent id), revocation."""

from __future__ import annotations

import concurrent.futures
import dataclasses

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.server.app import create_app
from regward.server.errors import InvalidInput, NotFound
from regward.server.services import auth, device_auth
from tests.harness.wait import wait_for
from tests.server.conftest import TestClient, World
from tests.server.device import GRANT, ask, decide, poll, signed_in_machine
from tests.server.live import ThreadServer

ORG = "/api/v1/orgs/acme"


def test_a_code_answers_with_rfc_8628_fields(world: World) -> None:
    grant = ask(world)
    assert set(grant) == {
        "device_code",
        "user_code",
        "verification_uri",
        "verification_uri_complete",
        "expires_in",
        "interval",
    }
    assert grant["verification_uri"] == "http://testserver/device"
    code = grant["user_code"]
    assert len(code) == 9 and code[4] == "-"
    assert all(ch in device_auth.ALPHABET for ch in code.replace("-", ""))
    assert grant["verification_uri_complete"] == f"http://testserver/device?code={code}"
    assert grant["expires_in"] == world.settings.device_code_ttl
    assert grant["interval"] == world.settings.device_poll_interval
    assert ask(world)["user_code"] != code


def test_polling_answers(world: World) -> None:
    grant = ask(world)
    first = poll(world, grant["device_code"])
    assert first[0] == 400 and first[1]["error"] == "authorization_pending"
    second = poll(world, grant["device_code"])  # at once: faster than the interval
    assert second[0] == 400 and second[1]["error"] == "slow_down"
    wait = world.settings.device_poll_interval + device_auth.SLOW_DOWN_STEP
    assert f"wait {wait} seconds" in second[1]["error_description"]
    assert poll(world, "not-a-code")[1]["error"] == "invalid_grant"
    wrong_grant = world.client.post(
        "/api/v1/auth/device/token",
        data={"grant_type": "password", "device_code": grant["device_code"]},
    )
    assert wrong_grant.status_code == 400
    assert wrong_grant.json()["error"] == "unsupported_grant_type"


def test_approved_machine_gets_one_read_token_of_its_own(world: World) -> None:
    c = world.client
    grant = ask(world, "build-7", "agent-7")
    decide(world, "bob", grant["user_code"])
    status, body = poll(world, grant["device_code"])
    assert status == 200 and body["scope"] == "read"
    assert body["token_type"] == "Bearer"  # noqa: S105 - a token type, not a secret
    assert (body["organization"], body["username"]) == ("acme", "bob")
    assert poll(world, grant["device_code"])[1]["error"] == "invalid_grant"  # single use
    machine = {"Authorization": f"Bearer {body['access_token']}"}
    assert c.get(f"{ORG}/policy", headers=machine).status_code == 200
    listed = c.get("/api/v1/tokens", headers=world.headers("bob")).json()["tokens"]
    mine = [t for t in listed if t["kind"] == "device"]
    assert [(t["name"], t["scope"], t["organization"], t["agent_id"]) for t in mine] == [
        ("build-7", "read", "acme", "agent-7")
    ]
    assert body["access_token"] not in str(listed)
    # The approval is in Activity.
    events = c.get(f"{ORG}/activity", headers=world.headers("alice")).json()["logs"]
    assert events[0]["action"] == "device.sign_in_approved"
    assert events[0]["actor"] == "bob" and events[0]["data"]["machine"] == "build-7"


def test_device_token_is_bound_to_its_organization_and_machine(world: World) -> None:
    c = world.client
    # bob also owns `beta`; the machine signed in to acme sees only acme.
    assert c.post("/api/v1/orgs", json={"name": "beta"}, headers=world.headers("bob")).is_success
    machine = {"Authorization": f"Bearer {signed_in_machine(world)}"}
    assert c.get("/api/v1/orgs/beta/policy", headers=machine).status_code == 404
    assert c.get("/api/v1/orgs/beta", headers=machine).status_code == 404
    assert [o["name"] for o in c.get("/api/v1/orgs", headers=machine).json()["organizations"]] == [
        "acme"
    ]
    assert [o["name"] for o in c.get("/api/v1/user", headers=machine).json()["organizations"]] == [
        "acme"
    ]
    check_in = {"agent_id": "agent-7", "revision": 1, "hostname": "build-7"}
    assert c.post(f"{ORG}/devices/check-in", json=check_in, headers=machine).status_code == 200
    other = {**check_in, "agent_id": "someone-else"}
    refused = c.post(f"{ORG}/devices/check-in", json=other, headers=machine)
    assert refused.status_code == 403 and "someone-else" in refused.json()["detail"]
    # Read scope, and nothing about the person who approved it.
    assert c.post("/api/v1/tokens", json={"name": "x"}, headers=machine).status_code == 403
    assert c.get("/api/v1/tokens", headers=machine).status_code == 403
    assert c.post(f"{ORG}/registry-access/apply", headers=machine).status_code == 403


def test_denied_code_answers_access_denied_once(world: World) -> None:
    grant = ask(world)
    decide(world, "alice", grant["user_code"], approve=False)
    assert poll(world, grant["device_code"]) == (
        400,
        {"error": "access_denied", "error_description": "the sign-in was denied in the dashboard"},
    )
    assert poll(world, grant["device_code"])[1]["error"] == "invalid_grant"
    with pytest.raises(NotFound):  # a decided code cannot be decided again
        decide(world, "alice", grant["user_code"])
    events = world.client.get(f"{ORG}/activity", headers=world.headers("alice")).json()["logs"]
    assert events[0]["action"] == "device.sign_in_denied"


def test_only_members_of_the_organization_find_a_code(world: World) -> None:
    grant = ask(world)
    with pytest.raises(NotFound) as outsider:
        decide(world, "eve", grant["user_code"])
    with pytest.raises(NotFound) as unknown:
        decide(world, "eve", "BBBB-BBBB")
    assert str(outsider.value) == str(unknown.value)
    with pytest.raises(InvalidInput):
        decide(world, "bob", "12345678")
    assert poll(world, grant["device_code"])[1]["error"] == "authorization_pending"


def test_an_expired_code_answers_expired_token(world: World) -> None:
    settings = dataclasses.replace(world.settings, device_code_ttl=1)
    with TestClient(create_app(settings, database=world.database)) as client:
        grant = client.post(
            "/api/v1/auth/device",
            data={"organization": "acme", "machine": "m", "agent_id": "a"},
        ).json()

        def expired() -> bool:
            answer = client.post(
                "/api/v1/auth/device/token",
                data={"grant_type": GRANT, "device_code": grant["device_code"]},
            ).json()
            return bool(answer["error"] == "expired_token")

        wait_for(expired, 10, "the code to expire")
    with pytest.raises(NotFound):
        decide(world, "bob", grant["user_code"])


def test_codes_are_rate_limited_per_address(world: World) -> None:
    for n in range(device_auth.MAX_OPEN_PER_CLIENT):
        ask(world, f"m{n}", f"a{n}")
    refused = world.client.post(
        "/api/v1/auth/device", data={"organization": "acme", "machine": "m", "agent_id": "a"}
    )
    assert refused.status_code == 429
    assert "too many sign-in requests" in refused.json()["detail"]


@pytest.mark.parametrize(
    ("field", "value"),
    [("organization", "Not An Org!"), ("machine", "bad\x01name"), ("agent_id", " ")],
)
def test_bad_requests_name_the_field(world: World, field: str, value: str) -> None:
    data = {"organization": "acme", "machine": "m", "agent_id": "a", field: value}
    answer = world.client.post("/api/v1/auth/device", data=data)
    assert answer.status_code == 422 and field in answer.json()["detail"]


def test_owner_revokes_a_machine_and_its_sync_stops(world: World) -> None:
    c = world.client
    machine = {"Authorization": f"Bearer {signed_in_machine(world)}"}
    check_in = {"agent_id": "agent-7", "revision": 1, "hostname": "build-7"}
    assert c.post(f"{ORG}/devices/check-in", json=check_in, headers=machine).is_success
    listed = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    assert listed[0]["token"]["name"] == "build-7" and listed[0]["token"]["active"]
    gone = c.delete(f"{ORG}/devices/agent-7/token", headers=world.headers("alice"))
    assert gone.status_code == 204
    assert c.get(f"{ORG}/policy", headers=machine).status_code == 401
    listed = c.get(f"{ORG}/devices", headers=world.headers("alice")).json()["devices"]
    assert listed[0]["token"]["active"] is False
    again = c.delete(f"{ORG}/devices/agent-7/token", headers=world.headers("alice"))
    assert again.status_code == 404
    events = c.get(f"{ORG}/activity", headers=world.headers("alice")).json()["logs"]
    assert events[0]["action"] == "device.token_revoked"
    assert events[0]["data"] == {"agent_id": "agent-7", "machine": "build-7"}


def test_the_person_revokes_their_machine_on_tokens(world: World) -> None:
    c = world.client
    machine = {"Authorization": f"Bearer {signed_in_machine(world)}"}
    listed = c.get("/api/v1/tokens", headers=world.headers("bob")).json()["tokens"]
    token_id = next(t["id"] for t in listed if t["kind"] == "device")
    assert c.delete(f"/api/v1/tokens/{token_id}", headers=world.headers("bob")).status_code == 204
    assert c.get(f"{ORG}/policy", headers=machine).status_code == 401


def test_a_poll_waiting_when_revoked_gets_no_newer_revision(world: World) -> None:
    machine = {"Authorization": f"Bearer {signed_in_machine(world)}"}
    server = world.app.state.server
    with (
        ThreadServer(world.app) as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        held = pool.submit(client.get, f"{ORG}/policy?wait=20&after=1", headers=machine)
        wait_for(lambda: server.notifier.waiting("acme"), 10, "the poll to wait")
        owner = world.headers("alice")
        assert client.delete(f"{ORG}/devices/agent-7/token", headers=owner).status_code == 204
        added = client.post(
            f"{ORG}/registry-access/registries", json={"address": "ghcr.io"}, headers=owner
        )
        assert added.status_code == 201
        assert client.post(f"{ORG}/registry-access/apply", headers=owner).status_code == 200
        answer = held.result(timeout=20)
    assert answer.status_code == 401


@given(st.text(max_size=20))
def test_user_codes_parse_to_eight_letters_or_an_error(text: str) -> None:
    try:
        letters = device_auth.normalize_user_code(text)
    except InvalidInput as error:
        assert "code" in str(error)
        return
    assert len(letters) == 8 and set(letters) <= set(device_auth.ALPHABET)
    shown = device_auth.display_user_code(letters)
    assert device_auth.normalize_user_code(shown.lower()) == letters


@given(st.text(alphabet=device_auth.ALPHABET, min_size=8, max_size=8))
def test_user_codes_are_typed_in_any_case_with_or_without_the_dash(letters: str) -> None:
    for typed in (
        letters,
        letters.lower(),
        f"{letters[:4]}-{letters[4:]}",
        f"{letters[:4]} {letters[4:]}",
    ):
        assert device_auth.normalize_user_code(typed) == letters


def test_caller_of_a_device_token_is_marked(world: World) -> None:
    token = signed_in_machine(world)
    with world.database.session() as session:
        caller = auth.resolve_token(session, token)
    assert caller.is_device and caller.agent_id == "agent-7" and not caller.can_write
