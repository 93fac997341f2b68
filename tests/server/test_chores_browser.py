"""Issue 14's owners' chores in a real Chromium, at laptop and phone widths, without a mouse
where a keyboard does: a one-time password changed at sign-in, the list as a file, and the
chores of owners (organizations, password resets, devices not seen for long).

One server (SQLite) serves the module: `acme` with owner alice and member bob, `evilcorp` owned
by eve. Tests leave acme's draft as they found it. Screenshots are saved under test-artifacts/
as `chores-*.png`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.harness.browser import (
    LAPTOP,
    PHONE,
    BrowserSession,
    no_horizontal_scroll,
    require_chromium,
    screenshot,
)
from tests.harness.server import ServerProcess
from tests.server.accounts import PASSWORD
from tests.server.test_dashboard_browser import seed

pytestmark = pytest.mark.browser
SIZES = (("laptop", LAPTOP), ("phone", PHONE))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_chromium()
    root = tmp_path_factory.mktemp("rwchores-server")
    seed(root / "data")
    with ServerProcess({"REGWARD_DATA_DIR": str(root / "data")}, root / "server.log") as live:
        yield live


def sign_in(page: Page, server: ServerProcess, username: str, password: str = PASSWORD) -> None:
    """Sign in by keyboard alone: type, Tab to the next field, Enter to submit."""
    page.goto(server.url + "/signin")
    page.get_by_label("Username").focus()
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    expect(page.get_by_text(f"Signed in as {username}").first).to_be_visible()


def test_a_one_time_password_is_changed_before_anything_else(
    server: ServerProcess, tmp_path: Path
) -> None:
    """Fix 10: a member added by an owner signs in with the one-time password, is held on the
    Account page (every other page leads back there) until they choose their own."""
    for name, viewport in SIZES:
        newcomer = f"carol-{name}"
        with BrowserSession(viewport) as owner:
            page = owner.page
            sign_in(page, server, "alice")
            page.goto(server.url + "/orgs/acme/members")
            page.get_by_label("Username").fill(newcomer)
            page.get_by_role("button", name="Add member").click()
            one_time = page.locator("#new-password").input_value()
            assert len(one_time) >= 16
        with BrowserSession(viewport) as browser:
            page = browser.page
            sign_in(page, server, newcomer, one_time)
            expect(page).to_have_url(server.url + "/account")
            expect(page.locator("#one-time-notice")).to_contain_text("one-time password")
            no_horizontal_scroll(page, f"Account with a one-time password ({name})")
            screenshot(page, f"chores-one-time-password-{name}")
            page.goto(server.url + "/orgs/acme/registry-access")
            expect(page).to_have_url(server.url + "/account")
            page.get_by_label("One-time password").fill(one_time)
            page.get_by_label("New password", exact=True).fill("a password of my own")
            page.get_by_label("New password again").fill("a password of my own")
            page.get_by_label("New password again").press("Enter")
            expect(page.get_by_role("status").first).to_contain_text("Your password is changed")
            expect(page).to_have_url(server.url + "/orgs/acme/overview")  # the first page
            page.goto(server.url + "/account")
            expect(page.locator("#one-time-notice")).to_have_count(0)
