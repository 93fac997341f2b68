"""Sign in with SSO in a real Chromium, against a real OpenID provider process on loopback
(oidc-provider-mock) and a real `regward server run`: joins by email domain and by group,
"SSO required", and the answers that must be refused (a tampered, expired or someone else's ID
token, a state used twice)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.harness.browser import BrowserSession, require_chromium, screenshot
from tests.harness.oidc import AUDIENCE, PASS, TAMPER, OidcProvider, Relay
from tests.harness.server import ServerProcess
from tests.server.accounts import PASSWORD
from tests.server.test_dashboard_browser import api, seed, token_of

pytestmark = pytest.mark.browser
CLIENT_ID = "regward"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcProvider]:
    require_chromium()
    with OidcProvider(tmp_path_factory.mktemp("oidc") / "provider.log") as running:
        yield running


@pytest.fixture(scope="module")
def relay(provider: OidcProvider) -> Iterator[Relay]:
    with Relay(provider.issuer) as running:
        yield running


def regward(tmp: Path, issuer: str) -> ServerProcess:
    """A seeded server (acme: owner alice, member bob) that signs in through `issuer`."""
    seed(tmp / "data")
    secret = tmp / "client-secret"
    secret.write_text("s3cret-for-the-test\n")
    env = {
        "REGWARD_DATA_DIR": str(tmp / "data"),
        "REGWARD_OIDC_ISSUER": issuer,
        "REGWARD_OIDC_CLIENT_ID": CLIENT_ID,
        "REGWARD_OIDC_CLIENT_SECRET_FILE": str(secret),
        "REGWARD_OIDC_SCOPES": "openid email profile groups",
    }
    return ServerProcess(env, tmp / "server.log")


def sso_sign_in(page: Page, server: ServerProcess, subject: str) -> None:
    """Sign in with SSO from the sign-in page, as `subject` on the provider's form."""
    page.goto(server.url + "/signin")
    page.get_by_role("link", name="Sign in with SSO").click()
    page.locator('input[name="sub"]').fill(subject)
    page.get_by_role("button", name="Authorize").click()


def activity(server: ServerProcess, token: str) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = api(server, "GET", "/api/v1/orgs/acme/activity", token=token)[
        "logs"
    ]
    return logs


def test_first_sign_in_joins_by_domain_and_group_and_a_state_works_once(
    provider: OidcProvider, relay: Relay, tmp_path: Path
) -> None:
    with regward(tmp_path, relay.issuer) as server, BrowserSession() as browser:
        alice = token_of(server, "alice")
        rules = {
            "join": [
                {"email_domain": "example.com", "role": "member"},
                {"groups_claim": "platform", "role": "owner"},
            ],
            "required": False,
        }
        assert api(server, "PUT", "/api/v1/orgs/acme/sso", rules, alice) == rules
        provider.set_user(
            "sub-carol",
            {"email": "carol@example.com", "email_verified": True, "preferred_username": "carol"},
        )
        page = browser.page
        callbacks: list[str] = []
        page.on(
            "request", lambda r: callbacks.append(r.url) if "/auth/sso/callback" in r.url else None
        )
        page.goto(server.url + "/signin")
        screenshot(page, "sso-signin")
        sso_sign_in(page, server, "sub-carol")
        expect(page.get_by_text("Signed in as carol")).to_be_visible()
        expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
        members = api(server, "GET", "/api/v1/orgs/acme/members", token=alice)["members"]
        assert {m["username"]: m["role"] for m in members}["carol"] == "member"
        events = activity(server, alice)
        assert [(e["action"], e["actor"]) for e in events[:2]] == [
            ("sso.signed_in", "carol"),
            ("organization.member_added", "sso"),
        ]
        assert events[1]["data"] == {"member": "carol", "via": "sso", "after": {"role": "member"}}

        # The provider's answer, replayed: its state was used up.
        assert len(callbacks) == 1
        page.goto(callbacks[0])
        expect(page.get_by_role("heading", name="Single sign-on did not work")).to_be_visible()
        expect(page.get_by_text("used already")).to_be_visible()

        # A group gives the owner role, and a role the rules change is changed (in Activity).
        provider.set_user(
            "sub-carol",
            {"email": "carol@example.com", "email_verified": True, "groups": ["platform"]},
        )
        page.context.clear_cookies()
        sso_sign_in(page, server, "sub-carol")
        expect(page.get_by_text("Signed in as carol")).to_be_visible()  # the same account
        members = api(server, "GET", "/api/v1/orgs/acme/members", token=alice)["members"]
        assert {m["username"]: m["role"] for m in members}["carol"] == "owner"
        changed = [e for e in activity(server, alice) if e["action"].endswith("role_changed")]
        assert changed[0]["actor"] == "sso" and changed[0]["data"]["after"] == {"role": "owner"}

        # Matched by subject, never by email or name: another subject claiming alice's name.
        provider.set_user(
            "sub-mallory",
            {"email": "alice@elsewhere.org", "email_verified": True, "preferred_username": "alice"},
        )
        page.context.clear_cookies()
        sso_sign_in(page, server, "sub-mallory")
        expect(page.get_by_text("Signed in as alice-2")).to_be_visible()
        expect(page.get_by_role("heading", name="No organization")).to_be_visible()


def test_sso_required_refuses_password_sign_in_except_owners_break_glass(
    provider: OidcProvider, relay: Relay, tmp_path: Path
) -> None:
    with regward(tmp_path, relay.issuer) as server, BrowserSession() as browser:
        alice = token_of(server, "alice")
        api(server, "PUT", "/api/v1/orgs/acme/sso", {"join": [], "required": True}, alice)
        page = browser.page
        page.goto(server.url + "/signin")
        page.get_by_label("Username").fill("bob")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_contain_text(
            "Organization 'acme' requires single sign-on: use Sign in with SSO"
        )
        screenshot(page, "sso-required")
        refused = httpx.post(
            f"{server.url}/api/v1/auth/token", json={"username": "bob", "password": PASSWORD}
        )
        assert refused.status_code == 403
        # alice owns acme: her password still works, and Activity says so.
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_text("Signed in as alice")).to_be_visible()
        events = activity(server, token_of(server, "alice"))
        assert events[0]["action"] == "sso.break_glass_sign_in"
        assert events[0]["actor"] == "alice"


@pytest.mark.parametrize("mode", [TAMPER, AUDIENCE])
def test_a_tampered_or_someone_elses_id_token_is_refused(
    provider: OidcProvider, relay: Relay, tmp_path: Path, mode: str
) -> None:
    provider.set_user("sub-erin", {"email": "erin@example.com", "email_verified": True})
    with regward(tmp_path, relay.issuer) as server, BrowserSession() as browser:
        page = browser.page
        relay.mode = mode
        try:
            sso_sign_in(page, server, "sub-erin")
            expect(page.get_by_text("ID token was refused")).to_be_visible()
        finally:
            relay.mode = PASS
        screenshot(page, f"sso-refused-{mode}")
        expect(page.get_by_text("Signed in as")).to_have_count(0)
        # The same flow through an unspoilt relay signs in: the refusal was the token's.
        sso_sign_in(page, server, "sub-erin")
        expect(page.get_by_text("Signed in as erin")).to_be_visible()


def test_an_expired_id_token_is_refused(tmp_path: Path) -> None:
    require_chromium()
    with (
        OidcProvider(tmp_path / "expired.log", token_max_age=-600) as expired,
        regward(tmp_path, expired.issuer) as server,
        BrowserSession() as browser,
    ):
        page = browser.page
        sso_sign_in(page, server, "sub-frank")
        expect(page.get_by_text("ID token was refused")).to_be_visible()
        expect(page.get_by_text("expired")).to_be_visible()
