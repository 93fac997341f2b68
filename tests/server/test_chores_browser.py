"""Issue 14's owners' chores in a real Chromium, at laptop and phone widths, without a mouse
where a keyboard does: a one-time password changed at sign-in, the list as a file, and the
chores of owners (organizations, password resets, devices not seen for long).

One server (SQLite) serves the module: `acme` with owner alice and member bob, `evilcorp` owned
by eve. Tests leave acme's draft as they found it. Screenshots are saved under test-artifacts/
as `chores-*.png`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from regward.policy import parse_policy_text
from regward.server.db import Database
from regward.server.models import Device
from regward.server.services import orgs
from regward.server.settings import Settings
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
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rwchores-server") / "data"


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[ServerProcess]:
    require_chromium()
    seed(data_dir)
    with ServerProcess({"REGWARD_DATA_DIR": str(data_dir)}, data_dir.parent / "server.log") as live:
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


def test_the_list_as_a_file_exports_and_imports(server: ServerProcess, tmp_path: Path) -> None:
    """Add 3: export the draft and a revision; import a file (pending until Save & Apply); a
    broken file is refused with the line of each problem, and the draft stays as it was."""
    for name, viewport in SIZES:
        with BrowserSession(viewport) as browser:
            page = browser.page
            sign_in(page, server, "alice")
            page.goto(server.url + "/orgs/acme/registry-access")
            page.get_by_label("Export").select_option(label="revision 1 (applied)")
            page.get_by_label("as", exact=True).select_option("json")
            with page.expect_download() as download:
                page.get_by_role("button", name="Export file").click()
            assert download.value.suggested_filename == "acme-revision-1.json"
            exported = parse_policy_text(Path(download.value.path()).read_text(), "r.json")
            assert exported.revision == 1 and exported.organization == "acme"

            broken = tmp_path / f"broken-{name}.yaml"
            broken.write_text(
                "organization: acme\nenabled: sure\nregistries:\n  - address: 'a b'\n"
            )
            page.get_by_label("Import into the draft").set_input_files(broken)
            page.get_by_role("button", name="Import file").click()
            problems = page.locator("#import-problems li")
            expect(problems).to_have_count(2)
            expect(problems.first).to_contain_text("line 2: enabled: 'sure' must be true or false")
            expect(problems.nth(1)).to_contain_text("line 4: registries[0].address")
            expect(page.locator("#pending")).to_have_count(0)  # the draft is unchanged
            no_horizontal_scroll(page, f"a refused import ({name})")
            screenshot(page, f"chores-import-refused-{name}")

            good = tmp_path / f"good-{name}.yaml"
            good.write_text(
                "organization: acme\nenabled: true\nregistries:\n"
                "  - address: docker.io\n    nickname: Docker Hub\n"
                "  - address: ghcr.io\n    repositories: ['acme/*']\n"
            )
            page.get_by_label("Import into the draft").set_input_files(good)
            page.get_by_role("button", name="Import file").press("Enter")  # by keyboard
            expect(page.get_by_role("status").first).to_contain_text(
                f"Imported good-{name}.yaml into the draft: 2 changes pending"
            )
            expect(page.locator("#pending")).to_contain_text("ghcr.io")
            no_horizontal_scroll(page, f"an import pending ({name})")
            screenshot(page, f"chores-import-pending-{name}")
            # Back as it was: the next round (and test) starts from revision 1's list.
            page.once("dialog", lambda dialog: dialog.accept())  # "Discard every pending change?"
            page.locator("#pending").get_by_role("button", name="Discard changes").click()
            expect(page.locator("#pending")).to_have_count(0)


def test_an_owner_resets_a_members_password_in_the_browser(server: ServerProcess) -> None:
    """Add 4: Reset password asks first (no JavaScript needed), then shows a one-time password
    once; the member's next sign-in leads to choosing their own."""
    for name, viewport in SIZES:
        member = f"dora-{name}"
        with BrowserSession(viewport) as browser:
            page = browser.page
            sign_in(page, server, "alice")
            page.goto(server.url + "/orgs/acme/members")
            page.get_by_label("Username").fill(member)
            page.get_by_role("button", name="Add member").click()
            page.get_by_role("button", name=f"Reset the password of {member}").click()
            expect(
                page.get_by_role("heading", name=f"Reset the password of {member}?")
            ).to_be_visible()
            no_horizontal_scroll(page, f"the reset confirmation ({name})")
            page.get_by_role("button", name="Reset password").click()
            notice = page.locator("#reset-notice")
            expect(notice).to_contain_text(f"New one-time password for {member}")
            one_time = page.get_by_label(f"One-time password of {member}").input_value()
            no_horizontal_scroll(page, f"Members after a reset ({name})")
            screenshot(page, f"chores-password-reset-{name}")
            page.goto(server.url + "/orgs/acme/activity")
            expect(page.get_by_text("Member's password reset").first).to_be_visible()
        with BrowserSession(viewport) as browser:
            sign_in(browser.page, server, member, one_time)
            expect(browser.page).to_have_url(server.url + "/account")
            expect(browser.page.locator("#one-time-notice")).to_be_visible()


def test_owners_remove_devices_not_seen_for_long_in_the_browser(
    server: ServerProcess, data_dir: Path
) -> None:
    """Add 4: choose an age, see how many would go on the confirmation page, remove them."""

    def machines(name: str) -> None:
        """Three machines of this round, last seen 400, 120 and 1 days ago."""
        database = Database(Settings.from_env({"REGWARD_DATA_DIR": str(data_dir)}).database_url)
        try:
            with database.session(write=True) as session:
                acme = orgs.get(session, "acme")
                assert acme is not None
                for age in (400, 120, 1):
                    session.add(
                        Device(
                            organization_id=acme.id,
                            agent_id=f"{name}-{age}",
                            hostname=f"{name}-machine-{age}",
                            last_seen=datetime.now(UTC) - timedelta(days=age),
                        )
                    )
        finally:
            database.dispose()

    for name, viewport in SIZES:
        machines(name)
        with BrowserSession(viewport) as browser:
            page = browser.page
            sign_in(page, server, "alice")
            page.goto(server.url + "/orgs/acme/devices")
            page.get_by_label("Not seen for", exact=True).select_option("365")
            page.get_by_role("button", name="Remove devices…").click()
            question = page.get_by_role("heading", name="Remove 1 device not seen for 365 days?")
            expect(question).to_be_visible()
            no_horizontal_scroll(page, f"the removal question ({name})")
            screenshot(page, f"chores-stale-devices-confirm-{name}")
            page.get_by_role("button", name="Remove", exact=True).click()
            expect(page.get_by_role("status").first).to_contain_text(
                "Removed 1 device not seen for 365 days"
            )
            expect(page.get_by_text(f"{name}-machine-400")).to_have_count(0)
            expect(page.get_by_text(f"{name}-machine-120").first).to_be_visible()
            no_horizontal_scroll(page, f"Devices after a removal ({name})")
            screenshot(page, f"chores-stale-devices-done-{name}")


def test_create_an_organization_in_the_browser(server: ServerProcess) -> None:
    """Add 4: from the Account page, by keyboard; a taken name is refused beside the field."""
    for name, viewport in SIZES:
        with BrowserSession(viewport) as browser:
            page = browser.page
            sign_in(page, server, "bob")
            page.goto(server.url + "/account")
            field = page.get_by_label("Name", exact=True)
            field.fill("acme")
            field.press("Enter")
            expect(page.locator("#new-org-error")).to_contain_text("already exists")
            no_horizontal_scroll(page, f"a refused organization ({name})")
            screenshot(page, f"chores-create-org-refused-{name}")
            field = page.get_by_label("Name", exact=True)
            field.fill(f"team-{name}")
            field.press("Enter")
            expect(page).to_have_url(f"{server.url}/orgs/team-{name}/registry-access")
            expect(page.get_by_role("status").first).to_contain_text(
                f"Created team-{name}; you are its owner."
            )
            no_horizontal_scroll(page, f"a new organization ({name})")
            screenshot(page, f"chores-create-org-done-{name}")
