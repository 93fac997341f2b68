"""The dashboard's Single sign-on page (owners set join rules and "SSO required") and the
Devices page's machine tokens (owners revoke them), through the real app and its forms."""

from __future__ import annotations

from tests.server.conftest import TestClient
from tests.server.test_dashboard import client, csrf_of, sign_in

__all__ = ["client"]  # the fixture, used by name


def test_owner_sets_rules_and_requires_sso(client: TestClient) -> None:
    sign_in(client, "alice")
    page = client.get("/orgs/acme/sso")
    assert page.status_code == 200 and "No rules" in page.text
    csrf = csrf_of(page.text)
    added = client.post(
        "/orgs/acme/sso/add",
        data={"csrf_token": csrf, "kind": "email_domain", "value": "Example.com", "role": "member"},
    )
    assert added.status_code == 303
    bad = client.post(
        "/orgs/acme/sso/add",
        data={"csrf_token": csrf, "kind": "email_domain", "value": "not a domain"},
    )
    assert bad.status_code == 422 and "email_domain" in bad.text
    required = client.post("/orgs/acme/sso/required", data={"csrf_token": csrf, "required": "true"})
    assert required.status_code == 303
    page = client.get("/orgs/acme/sso")
    assert "@example.com" in page.text and "SSO required: on" in page.text
    token = client.cookies.get("regward_session")
    api = client.get("/api/v1/orgs/acme/sso", headers={"Authorization": f"Bearer {token}"})
    assert api.json() == {
        "join": [{"email_domain": "example.com", "role": "member"}],
        "required": True,
    }
    removed = client.post("/orgs/acme/sso/remove", data={"csrf_token": csrf, "index": "0"})
    assert removed.status_code == 303
    assert "No rules" in client.get("/orgs/acme/sso").text


def test_members_read_the_page_but_cannot_change_it(client: TestClient) -> None:
    sign_in(client, "bob")
    page = client.get("/orgs/acme/sso")
    assert page.status_code == 200 and "Add rule" not in page.text
    refused = client.post(
        "/orgs/acme/sso/required", data={"csrf_token": csrf_of(page.text), "required": "true"}
    )
    assert refused.status_code == 403


def test_owner_revokes_a_machine_token_on_devices(client: TestClient) -> None:
    grant = client.post(
        "/api/v1/auth/device", data={"organization": "acme", "machine": "ci-9", "agent_id": "a-9"}
    ).json()
    sign_in(client, "bob")
    page = client.get(f"/device?code={grant['user_code']}")
    decided = client.post(
        "/device",
        data={"csrf_token": csrf_of(page.text), "code": grant["user_code"], "decision": "approve"},
    )
    assert decided.status_code == 200 and "ci-9 is signed in to acme" in decided.text
    token = client.post(
        "/api/v1/auth/device/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": grant["device_code"],
        },
    ).json()["access_token"]
    machine = {"Authorization": f"Bearer {token}"}
    check_in = {"agent_id": "a-9", "revision": 1, "hostname": "ci-9"}
    assert client.post(
        "/api/v1/orgs/acme/devices/check-in", json=check_in, headers=machine
    ).is_success
    client.cookies.clear()
    sign_in(client, "alice")
    page = client.get("/orgs/acme/devices")
    assert 'data-token-state="active"' in page.text
    csrf = csrf_of(page.text)
    asked = client.post("/orgs/acme/devices/revoke", data={"csrf_token": csrf, "agent_id": "a-9"})
    assert asked.status_code == 200 and "Revoke the token of a-9?" in asked.text
    done = client.post(
        "/orgs/acme/devices/revoke",
        data={"csrf_token": csrf, "agent_id": "a-9", "confirmed": "yes"},
    )
    assert done.status_code == 303
    assert client.get("/api/v1/orgs/acme/policy", headers=machine).status_code == 401
    assert 'data-token-state="revoked"' in client.get("/orgs/acme/devices").text
