"""The dashboard in a real Chromium against a real server process on loopback.

One server (SQLite in a temporary data directory) serves the whole module: organization `acme`
with owner alice and member bob, and `evilcorp` owned by eve. Tests that change the draft apply
or undo their own changes. Screenshots of every page, at laptop and phone widths, are saved
under test-artifacts/ for a person to look at.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Page, expect

from regward.server.db import Database
from regward.server.settings import Settings
from tests.harness.browser import (
    ARTIFACTS,
    LAPTOP,
    PHONE,
    BrowserSession,
    no_horizontal_scroll,
    require_chromium,
    screenshot,
)
from tests.harness.receiver import Receiver
from tests.harness.server import ServerProcess
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD, make_users
from tests.server.test_webhooks import verify

pytestmark = pytest.mark.browser


def seed(data_dir: Path) -> None:
    settings = Settings.from_env({"REGWARD_DATA_DIR": str(data_dir)})
    database = Database(settings.database_url)
    database.upgrade()
    make_users(database, settings)
    database.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_chromium()
    root = tmp_path_factory.mktemp("rwdash-server")
    seed(root / "data")
    with ServerProcess({"REGWARD_DATA_DIR": str(root / "data")}, root / "server.log") as live:
        yield live


def api(server: ServerProcess, method: str, path: str, body: Any = None, token: str = "") -> Any:
    """A REST call, as a script or an agent would make it."""
    answer = httpx.request(
        method,
        server.url + path,
        json=body,
        headers={"Authorization": f"Bearer {token}"} if token else {},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json() if answer.content else None


def token_of(server: ServerProcess, username: str) -> str:
    answer = api(server, "POST", "/api/v1/auth/token", {"username": username, "password": PASSWORD})
    token: str = answer["token"]
    return token


def sign_in(
    page: Page, server: ServerProcess, username: str, then: str = "Registry Access"
) -> None:
    """Sign in at the home page, land on the Overview, and open the tab `then` ("" stays)."""
    page.goto(server.url + "/")
    expect(page).to_have_url(f"{server.url}/signin?next=%2F")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text(f"Signed in as {username}")).to_be_visible()
    expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
    if then:
        page.locator("nav.tabs").get_by_role("link", name=then, exact=True).click()
        expect(page.get_by_role("heading", name=then, exact=True)).to_be_visible()


def row(page: Page, address: str) -> Any:
    return page.locator(f'#registries tr[data-address="{address}"]')


def fail_on_dialog(dialog: Dialog) -> None:
    message = dialog.message
    dialog.dismiss()
    raise AssertionError(f"unexpected dialog: {message!r}")


def test_owner_adds_ghcr_applies_and_finds_it_in_activity(server: ServerProcess) -> None:
    with BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "alice")
        expect(page.get_by_role("heading", name="Registry Access", exact=True)).to_be_visible()
        # A new organization: Docker Hub listed, Registry Access off, nothing pending.
        expect(row(page, "docker.io")).to_contain_text("Docker Hub")
        expect(
            page.get_by_role("heading", name="Registry Access Management is off")
        ).to_be_visible()
        expect(page.locator("#pending")).to_have_count(0)

        page.get_by_label("Registry address").fill("ghcr.io")
        page.get_by_label("Nickname").fill("GitHub Container Registry")
        page.get_by_role("button", name="Add registry").click()

        expect(page.get_by_role("status").first).to_contain_text("Added ghcr.io to the draft")
        expect(row(page, "ghcr.io")).to_contain_text("GitHub Container Registry")
        banner = page.locator("#pending")
        expect(banner).to_contain_text("Pending changes")
        expect(banner).to_contain_text("Add ghcr.io")
        expect(banner).to_contain_text("Machines still enforce revision 1")

        # The feed still serves revision 1 until Save & Apply.
        bob = token_of(server, "bob")
        assert api(server, "GET", "/api/v1/orgs/acme/policy", token=bob)["policy"]["revision"] == 1

        banner.get_by_role("button", name="Save & Apply").click()
        expect(page.get_by_role("status").first).to_contain_text("Applied as revision 2")
        expect(page.locator("#pending")).to_have_count(0)
        feed = api(server, "GET", "/api/v1/orgs/acme/policy", token=bob)["policy"]
        assert feed["revision"] == 2
        assert "ghcr.io" in [entry["address"] for entry in feed["registries"]]

        page.get_by_role("link", name="Activity").click()
        added = page.locator("li.event", has_text="registry added: ghcr.io")
        expect(added).to_contain_text("alice")
        expect(page.locator("li.event", has_text="applied as revision 2")).to_be_visible()
        added.get_by_text("Before and after").click()
        expect(added.locator(".diff")).to_contain_text("nickname: GitHub Container Registry")

        # Filtering by action keeps only that kind of event.
        page.get_by_label("Action").select_option("registry_access.applied")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("li.event")).to_have_count(1)


def test_member_sees_read_only_pages_and_cannot_post(server: ServerProcess) -> None:
    with BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "bob")
        expect(page.get_by_text("you can see these settings but only owners")).to_be_visible()
        expect(row(page, "docker.io")).to_be_visible()
        expect(page.get_by_role("switch", name="Registry Access Management")).to_be_disabled()
        expect(page.get_by_role("switch", name="Allow docker.io")).to_be_disabled()
        expect(page.get_by_role("button", name="Add registry")).to_have_count(0)
        expect(page.get_by_role("link", name="Edit docker.io")).to_have_count(0)

        # Even a hand-made post with bob's own valid CSRF token is refused.
        csrf = page.locator('input[name="csrf_token"]').first.get_attribute("value")
        answer = page.request.post(
            server.url + "/orgs/acme/registry-access/add",
            form={"csrf_token": csrf or "", "address": "quay.io", "actions": "pull"},
            max_redirects=0,
        )
        assert answer.status == 403
        assert "Only owners of &#39;acme&#39; can do this" in answer.text()
        page.reload()
        expect(row(page, "quay.io")).to_have_count(0)

        page.get_by_role("link", name="Members").click()
        expect(page.locator('#members tr[data-username="alice"]')).to_contain_text("owner")
        expect(page.get_by_role("button", name="Add member")).to_have_count(0)


def test_outsider_sees_nothing_of_another_organization(server: ServerProcess) -> None:
    with BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "eve")
        expect(page).to_have_url(server.url + "/orgs/evilcorp/registry-access")
        options = page.locator("#org-switch option").all_inner_texts()
        assert options == ["evilcorp"]
        for path in ("registry-access", "activity", "members", "devices", "blocked", "test"):
            answer = page.goto(f"{server.url}/orgs/acme/{path}")
            assert answer is not None and answer.status == 404, path
            expect(page.get_by_role("heading", name="Not found")).to_be_visible()
            assert "docker.io" not in page.content()


def test_nickname_with_markup_is_shown_as_text(server: ServerProcess) -> None:
    payload = '<img src=x onerror="window.__xss=1;alert(1)"><script>window.__xss=2</script>'
    with BrowserSession() as browser:
        page = browser.page
        page.on("dialog", fail_on_dialog)
        sign_in(page, server, "alice")
        page.get_by_label("Registry address").fill("xss.example.com")
        page.get_by_label("Nickname").fill(payload)
        page.get_by_role("button", name="Add registry").click()
        cell = row(page, "xss.example.com").locator("td").nth(1)
        expect(cell).to_have_text(payload)
        assert cell.locator("img, script").count() == 0
        assert page.evaluate("window.__xss") is None
        # Inside an attribute (the edit form's value) it stays intact and inert too.
        page.get_by_role("link", name="Edit xss.example.com").click()
        expect(page.get_by_label("Nickname")).to_have_value(payload)
        assert page.evaluate("window.__xss") is None
        # Leave the shared draft as it was.
        page.goto(server.url + "/orgs/acme/registry-access")
        page.once("dialog", lambda dialog: dialog.accept())
        page.remove_listener("dialog", fail_on_dialog)
        page.get_by_role("button", name="Remove xss.example.com").click()
        expect(row(page, "xss.example.com")).to_have_count(0)


class _AttackerPage(BaseHTTPRequestHandler):
    """Another site the owner visits: it posts a form to the dashboard on load."""

    target = ""

    def do_GET(self) -> None:
        body = (
            "<!doctype html><title>Win a prize</title>"
            f'<form id="f" method="post" action="{self.target}">'
            '<input name="address" value="evil.example.com">'
            '<input name="nickname" value="forged"><input name="allowed" value="true">'
            '<input name="actions" value="pull"></form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_forged_post_without_csrf_token_is_refused(server: ServerProcess) -> None:
    _AttackerPage.target = server.url + "/orgs/acme/registry-access/add"
    attacker = ThreadingHTTPServer(("127.0.0.1", 0), _AttackerPage)
    thread = threading.Thread(target=attacker.serve_forever, name="rwdash-attacker", daemon=True)
    thread.start()
    try:
        with BrowserSession() as browser:
            page = browser.page
            sign_in(page, server, "alice")
            # 127.0.0.1 on another port is the same *site*, so SameSite alone would not stop
            # this post: the CSRF token must.
            page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/")
            page.wait_for_url(_AttackerPage.target)
            expect(page.get_by_role("heading", name="This form cannot be accepted")).to_be_visible()
            answer = page.request.post(
                _AttackerPage.target, form={"address": "evil.example.com"}, max_redirects=0
            )
            assert answer.status == 403
            page.goto(server.url + "/orgs/acme/registry-access")
            expect(row(page, "evil.example.com")).to_have_count(0)
            expect(row(page, "docker.io")).to_be_visible()
    finally:
        attacker.shutdown()
        attacker.server_close()
        thread.join()


def test_stale_edit_keeps_the_input_and_says_what_changed(server: ServerProcess) -> None:
    alice = token_of(server, "alice")
    with BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "alice")
        page.get_by_role("link", name="Edit docker.io").click()
        page.get_by_label("Nickname").fill("Docker Hub (official images only)")
        page.get_by_text("Advanced: repositories").click()
        page.get_by_label("Repositories").fill("library/*")

        # Meanwhile another owner changes the same entry through the API.
        api(
            server,
            "PUT",
            "/api/v1/orgs/acme/registry-access/registries/docker.io",
            {"entry": {"address": "docker.io", "nickname": "Hub, edited elsewhere"}},
            alice,
        )
        page.get_by_role("button", name="Save change").click()
        expect(page.get_by_role("alert")).to_contain_text("Your change was not saved")
        expect(page.get_by_text("Hub, edited elsewhere")).to_be_visible()
        expect(page.get_by_label("Nickname")).to_have_value("Docker Hub (official images only)")
        expect(page.get_by_label("Repositories")).to_have_value("library/*")

        # Saving again, now knowingly, goes through: Docker Hub is restrictable.
        page.get_by_role("button", name="Save change").click()
        expect(row(page, "docker.io")).to_contain_text("library/*")
        page.locator("#pending").get_by_role("button", name="Save & Apply").click()
        expect(page.get_by_role("status").first).to_contain_text("Applied as revision")


def test_second_entry_for_an_address_is_added_and_listed(server: ServerProcess) -> None:
    with BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "alice")
        page.get_by_label("Registry address").fill("quay.io")
        page.get_by_label("Nickname").fill("Quay, pull only")
        page.get_by_text("Advanced: repositories").click()
        page.get_by_label("Push").uncheck()
        page.get_by_role("button", name="Add registry").click()
        expect(page.get_by_role("status").first).to_contain_text("Added quay.io to the draft")

        page.get_by_label("Registry address").fill("quay.io")
        page.get_by_label("Nickname").fill("Our team")
        page.get_by_text("Advanced: repositories").click()
        page.get_by_label("Repositories").fill("team/*")
        page.get_by_role("button", name="Add registry").click()
        expect(page.get_by_role("status").first).to_contain_text("Added quay.io (team/*)")
        expect(row(page, "quay.io")).to_have_count(2)
        expect(page.locator('#registries tr[data-repositories="team/*"]')).to_contain_text(
            "Our team"
        )
        expect(page.locator("#pending")).to_contain_text("Add quay.io (team/*)")

        # Leave the shared draft as it was: remove both, each by its own button.
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Remove quay.io (team/*)").click()
        expect(row(page, "quay.io")).to_have_count(1)
        expect(row(page, "quay.io")).to_contain_text("Quay, pull only")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Remove quay.io", exact=True).click()
        expect(row(page, "quay.io")).to_have_count(0)


UNLABELLED = """() => Array.from(
  document.querySelectorAll('input:not([type=hidden]), select, textarea, button, a[href]')
).filter(el => {
  if (el.tagName === 'BUTTON' || el.tagName === 'A') {
    return !(el.innerText.trim() || el.getAttribute('aria-label'));
  }
  if (el.getAttribute('aria-label') || el.closest('label')) return false;
  return !(el.id && document.querySelector(`label[for="${el.id}"]`));
}).map(el => el.outerHTML)"""


def test_every_control_is_labelled_and_reachable_by_keyboard(server: ServerProcess) -> None:
    with BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "alice")
        for path in (
            "/orgs/acme/registry-access",
            "/orgs/acme/registry-access/edit?address=docker.io",
            "/orgs/acme/activity",
            "/orgs/acme/members",
            "/orgs/acme/devices",
            "/orgs/acme/blocked",
            "/orgs/acme/test?image=ubuntu",
            "/orgs/acme/webhooks",
            "/tokens",
            "/account",
        ):
            page.goto(server.url + path)
            assert page.evaluate(UNLABELLED) == [], path

        # The first Tab shows the skip link; focus is always drawn.
        page.goto(server.url + "/orgs/acme/registry-access")
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        # Adding a registry with the keyboard alone: type, Enter submits the form.
        # After each answer the focus is where the result is: the field refused, else the
        # notice of what happened (not the top of the page, to Tab through the tabs again).
        focused = "document.activeElement.id || document.activeElement.textContent.trim()"
        page.get_by_label("Registry address").focus()
        page.keyboard.type("not a host!")
        page.keyboard.press("Enter")
        expect(page.get_by_label("Registry address")).to_have_attribute("aria-invalid", "true")
        assert page.evaluate(focused) == "add-address"
        page.get_by_label("Registry address").fill("")
        page.keyboard.type("registry.k8s.io")
        page.keyboard.press("Tab")
        page.keyboard.type("Kubernetes")
        page.keyboard.press("Enter")
        expect(row(page, "registry.k8s.io")).to_contain_text("Kubernetes")
        assert page.evaluate(focused).startswith("Added registry.k8s.io to the draft.")
        page.once("dialog", lambda dialog: dialog.accept())
        remove = page.get_by_role("button", name="Remove registry.k8s.io")
        remove.focus()
        page.keyboard.press("Enter")
        expect(row(page, "registry.k8s.io")).to_have_count(0)
        assert page.evaluate("document.activeElement.getAttribute('role')") == "status"


def test_screenshots_of_every_page(server: ServerProcess) -> None:
    """Not a check of looks: saves the pages for a person to review (test-artifacts/)."""
    bob = token_of(server, "bob")
    revision = api(server, "GET", "/api/v1/orgs/acme/policy", token=bob)["policy"]["revision"]
    api(
        server,
        "POST",
        "/api/v1/orgs/acme/devices/check-in",
        {
            "agent_id": "laptop-bob-7f3a",
            "revision": revision,
            "hostname": "bob-laptop",
            "engine": {"authz": True, "proxy": True},
        },
        bob,
    )
    api(
        server,
        "POST",
        "/api/v1/orgs/acme/devices/check-in",
        {
            "agent_id": "build-host-3",
            "revision": revision,
            "hostname": "build-host-3",
            "engine": {"authz": False, "proxy": False},  # dockerd restarted without the agent
        },
        bob,
    )
    api(
        server,
        "POST",
        "/api/v1/orgs/acme/devices/check-in",
        {
            "agent_id": "ci-runner-02",
            "revision": 1,
            "hostname": "ci-runner-02",
            "refusal": (
                f"refused revision {revision}, which does not verify against the pinned key: "
                f"policy revision {revision} of 'acme' has a signature that does not match the "
                "pinned server key; keeping the last verified policy; still enforcing revision 1"
            ),
        },
        bob,
    )
    api(
        server,
        "POST",
        "/api/v1/orgs/acme/denials",
        {
            "agent_id": "ci-runner-02",
            "reference": "quay.io/prometheus/node-exporter:v1.8.0",
            "action": "pull",
            "revision": 1,
            "reason": "Access to registry quay.io is restricted by your organization 'acme'",
        },
        bob,
    )
    for name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        with BrowserSession(viewport) as browser:
            page = browser.page
            page.goto(server.url + "/signin")
            screenshot(page, f"dashboard-signin-{name}")
            sign_in(page, server, "alice")
            if name == "laptop":
                # A draft with pending changes and a lint warning, for the pictures.
                page.get_by_role("switch", name="Registry Access Management").click()
                page.get_by_label("Registry address").fill("*.corp.example")
                page.get_by_label("Nickname").fill("Internal mirrors")
                page.get_by_text("Advanced: repositories").click()
                page.get_by_label("Extra hosts").fill("blobs.corp.example")
                page.get_by_role("button", name="Add registry").click()
                expect(page.locator("#pending")).to_be_visible()
            screenshot(page, f"dashboard-registry-access-{name}")
            page.get_by_role("link", name="Edit docker.io").click()
            screenshot(page, f"dashboard-edit-{name}")
            for tab in ("activity", "members", "devices", "blocked", "sso", "webhooks"):
                page.goto(f"{server.url}/orgs/acme/{tab}")
                screenshot(page, f"dashboard-{tab}-{name}")
            page.goto(f"{server.url}/orgs/acme/devices")
            expect(page.locator('[data-engine-problem="build-host-3"]')).to_be_visible()
            expect(page.locator("#unprotected-notice")).to_contain_text("1 device runs")
            page.goto(server.url + "/orgs/acme/test?image=quay.io/prometheus/node-exporter")
            screenshot(page, f"dashboard-test-{name}")
            page.goto(server.url + "/account")
            screenshot(page, f"dashboard-account-{name}")
            page.goto(server.url + "/tokens")
            page.get_by_label("Name").fill(f"ci-{name}")
            page.get_by_role("button", name="Create token").click()
            expect(page.get_by_text("it is shown only once")).to_be_visible()
            screenshot(page, f"dashboard-tokens-{name}")
            # With JavaScript the dialog asks, and the server's confirmation page is skipped.
            page.once("dialog", lambda dialog: dialog.accept())
            page.get_by_role("button", name=f"Revoke ci-{name}").click()
            expect(page.get_by_role("status").first).to_contain_text(f"Revoked ci-{name}")
        with BrowserSession(viewport) as browser:
            sign_in(browser.page, server, "bob")
            screenshot(browser.page, f"dashboard-member-view-{name}")
    artifacts = sorted(p.name for p in ARTIFACTS.glob("dashboard-*.png"))
    assert len(artifacts) >= 20


LONG_PATTERN = "acme/" + "x" * 133 + "/*"  # 140 characters


def test_long_values_never_widen_the_page(server: ServerProcess) -> None:
    """Issue 14, fix 1: a 140-character pattern, a 300-character invalid address and a long
    nickname wrap or are shortened, at laptop and phone widths; Edit and Remove stay on screen."""
    alice = token_of(server, "alice")
    before = api(server, "GET", "/api/v1/orgs/acme/registry-access", token=alice)
    entry = {"address": "ghcr.io", "nickname": "N" * 100, "repositories": [LONG_PATTERN]}
    api(server, "POST", "/api/v1/orgs/acme/registry-access/registries", {"entry": entry}, alice)
    label = f"ghcr.io ({LONG_PATTERN})"
    try:
        for name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
            with BrowserSession(viewport) as browser:
                page = browser.page
                sign_in(page, server, "alice")
                expect(page.locator("#pending")).to_contain_text(label)
                no_horizontal_scroll(page, f"Registry Access ({name})")
                for control in (
                    page.get_by_role("link", name=f"Edit {label}"),
                    page.get_by_role("button", name=f"Remove {label}"),
                ):
                    box = control.bounding_box()
                    assert box is not None and box["x"] + box["width"] <= viewport["width"]
                screenshot(page, f"dashboard-long-values-{name}")
                page.get_by_role("link", name=f"Edit {label}").click()
                no_horizontal_scroll(page, f"Edit ({name})")
                page.goto(server.url + "/orgs/acme/registry-access")
                page.get_by_label("Registry address").fill("bad host " + "y" * 290)
                page.get_by_role("button", name="Add registry").click()
                error = page.locator("#add-address-error")
                expect(error).to_contain_text("(299 characters)")
                assert len(error.inner_text()) < 200
                no_horizontal_scroll(page, f"a long invalid address ({name})")
                screenshot(page, f"dashboard-long-address-error-{name}")
                page.get_by_label("Registry address").fill("quay.io")
                page.get_by_label("Nickname").evaluate(
                    "(input, text) => { input.removeAttribute('maxlength'); input.value = text; }",
                    "Z" * 4000,
                )
                page.get_by_role("button", name="Add registry").click()
                expect(page.locator("#add-nickname-error")).to_contain_text("(4000 characters)")
                no_horizontal_scroll(page, f"a long nickname ({name})")
                screenshot(page, f"dashboard-long-nickname-error-{name}")
    finally:
        api(
            server,
            "PUT",
            "/api/v1/orgs/acme/registry-access",
            {
                "enabled": before["enabled"],
                "registries": before["registries"],
                "version": api(server, "GET", "/api/v1/orgs/acme/registry-access", token=alice)[
                    "version"
                ],
            },
            alice,
        )


def test_owner_adds_a_webhook_and_sends_a_test_event(server: ServerProcess) -> None:
    with Receiver([200]) as receiver, BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "alice")
        page.goto(server.url + "/orgs/acme/webhooks")
        page.get_by_role("textbox", name="URL").fill(receiver.url)
        page.get_by_role("button", name="Add webhook").click()
        expect(page.get_by_text("it is shown only once")).to_be_visible()
        secret = page.locator("#created-secret").input_value()
        page.get_by_role("button", name=f"Send test event to {receiver.url}").click()
        expect(page.get_by_text("Test event queued")).to_be_visible()
        wait_for(lambda: receiver.received or None, 20, "the test event")
        assert verify(receiver.received[0], secret)["event"] == "ping"

        def delivered() -> bool:
            page.reload()
            return page.locator("#deliveries").get_by_text("delivered").count() == 1

        wait_for(delivered, 20, "the delivery log to show it delivered")
        assert secret not in page.content()  # shown once
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name=f"Delete the webhook to {receiver.url}").click()
        expect(page.get_by_text("Webhook deleted.")).to_be_visible()
        expect(page.locator("#webhooks")).to_have_count(0)


def test_the_longest_organization_name_never_widens_a_phone_page(server: ServerProcess) -> None:
    """A name of 64 characters without a break (the header, the leads, Activity's events)
    wraps on a phone instead of pushing the page sideways."""
    name = "z" * 64  # sorts after acme: alice still lands on acme
    api(server, "POST", "/api/v1/orgs", {"name": name}, token_of(server, "alice"))
    with BrowserSession(PHONE) as browser:
        page = browser.page
        sign_in(page, server, "alice", then="")
        for path in (
            *(f"/orgs/{name}/{tab}" for tab in ("overview", "registry-access", "activity")),
            *(f"/orgs/{name}/{tab}" for tab in ("members", "devices", "blocked", "sso")),
            f"/orgs/{name}/webhooks",
            "/account",
            "/tokens",
        ):
            page.goto(server.url + path)
            no_horizontal_scroll(page, f"{path} on a phone")
