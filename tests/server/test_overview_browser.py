"""The Overview and the filtered, paged Devices and Blocked pulls lists in a real Chromium
(Debian's), against a real server process on loopback (SQLite).

The fleet of tests/server/fleet.py, plus 60 machines `bulk-NN` (current, for paging) and a
machine and a denial with very long values. Screenshots at laptop and phone widths are saved
under test-artifacts/ for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from regward.server.db import Database
from regward.server.models import Denial, Device
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
from tests.server.accounts import make_users
from tests.server.fleet import seed_fleet
from tests.server.test_dashboard_browser import UNLABELLED, api, sign_in, token_of

pytestmark = pytest.mark.browser

LONG_HOST = "build-" + "h" * 240
LONG_REFERENCE = "registry.example.com/" + "/".join(["deep" * 10] * 9) + ":v1"


def seed(data_dir: Path) -> None:
    settings = Settings.from_env({"REGWARD_DATA_DIR": str(data_dir)})
    database = Database(settings.database_url)
    database.upgrade()
    make_users(database, settings)
    now = datetime.now(UTC)
    seed_fleet(database, settings, now)
    with database.session(write=True) as session:
        acme = orgs.get(session, "acme")
        assert acme is not None
        for n in range(60):
            session.add(
                Device(
                    organization_id=acme.id,
                    agent_id=f"bulk-{n:02d}",
                    hostname=f"bulk-host-{n:02d}",
                    applied_revision=2,
                    last_seen=now - timedelta(minutes=n + 1),
                )
            )
        session.add(
            Device(
                organization_id=acme.id,
                agent_id="long-" + "i" * 120,
                hostname=LONG_HOST,
                applied_revision=2,
                engine_authz=False,
                engine_proxy=False,
            )
        )
        session.add(
            Denial(
                organization_id=acme.id,
                agent_id="long-" + "i" * 120,
                reference=LONG_REFERENCE,
                registry_host="registry.example.com",
                action="push",
                revision=2,
                reason="Access to registry registry.example.com is restricted " * 4,
            )
        )
    database.dispose()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_chromium()
    root = tmp_path_factory.mktemp("rwoverview-server")
    seed(root / "data")
    with ServerProcess({"REGWARD_DATA_DIR": str(root / "data")}, root / "server.log") as live:
        yield live


def count_link(page: Page, table: str, label: str) -> object:
    return page.locator(f"#{table}").get_by_role("link", name=label, exact=False)


def test_overview_counts_open_the_filtered_lists(server: ServerProcess) -> None:
    """Without JavaScript: every page is links and GET forms."""
    with BrowserSession(javascript=False) as browser:
        page = browser.page
        sign_in(page, server, "alice", then="")
        expect(page.get_by_role("img", name="Machines by state")).to_be_visible()
        expect(page.get_by_role("img", name="Blocked pulls per day")).to_be_visible()
        expect(page.get_by_role("img", name="Most refused registries")).to_be_visible()

        page.locator("#states-table").get_by_role("link", name="1: Refused a revision").click()
        expect(page).to_have_url(f"{server.url}/orgs/acme/devices?state=refused")
        expect(page.get_by_label("State")).to_have_value("refused")
        expect(page.locator("#devices-count")).to_have_text("1 device matches these filters.")
        expect(page.locator("#devices tbody tr[data-device]")).to_have_count(1)
        expect(page.locator('tr[data-device="ref"]')).to_be_visible()

        page.go_back()
        page.locator("#states-table").get_by_role("link", name="2: Not seen for 7 days").click()
        expect(page.get_by_label("Last seen")).to_have_value("stale")
        expect(page.locator("#devices tbody tr[data-device]")).to_have_count(2)

        page.go_back()
        page.locator("#revisions-table").get_by_role(
            "link", name="1: No revision verified yet"
        ).click()
        expect(page.get_by_label("Revision")).to_have_value("0")
        expect(page.locator('tr[data-device="never"]')).to_be_visible()

        page.go_back()
        page.locator("#registries-table").get_by_role("link", name="5: ghcr.io").click()
        expect(page.get_by_label("Registry")).to_have_value("ghcr.io")
        expect(page.locator("#denials-count")).to_have_text("5 blocked pulls match these filters.")
        expect(page.locator("#denials tbody tr")).to_have_count(5)

        page.go_back()
        page.locator("#days").get_by_text("The figures of each day").click()
        # Yesterday's two (the only day with two; found by count, whatever the hour).
        page.locator("#days-table a[aria-label^='2: ']").click()
        expect(page.locator("#denials tbody tr")).to_have_count(2)
        expect(page.locator("#denials")).to_contain_text("quay.io/x/y")


def test_device_list_pages_keep_the_filters(server: ServerProcess) -> None:
    with BrowserSession(javascript=False) as browser:
        page = browser.page
        sign_in(page, server, "bob", then="Devices")
        page.get_by_label("Hostname or id").fill("bulk-")
        page.get_by_label("State").select_option("current")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("#devices-count")).to_have_text("60 devices match these filters.")
        expect(page.locator("#devices tbody tr[data-device]")).to_have_count(25)
        expect(page.get_by_text("Page 1 of 3")).to_be_visible()
        page.get_by_role("link", name="Next →").click()
        expect(page.get_by_text("Page 2 of 3")).to_be_visible()
        expect(page.get_by_label("Hostname or id")).to_have_value("bulk-")
        page.get_by_role("link", name="Next →").click()
        expect(page.locator("#devices tbody tr[data-device]")).to_have_count(10)
        expect(page.locator('tr[data-device="bulk-59"]')).to_be_visible()  # seen longest ago
        assert "search=bulk-" in page.url and "state=current" in page.url

        # The CSV holds the filtered rows of every page, not the page shown.
        with page.expect_download() as started:
            page.get_by_role("link", name="Download these as CSV").click()
        download = started.value
        assert download.suggested_filename.startswith("regward-acme-devices-")
        lines = Path(download.path()).read_text().splitlines()
        assert lines[0].startswith("hostname,agent_id,user,state,")
        assert len(lines) == 61 and all(",current," in line for line in lines[1:])

        page.get_by_label("Revision").fill("seven")
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("alert")).to_contain_text("'seven' is not a revision")
        expect(page.get_by_label("Revision")).to_have_value("seven")


def test_overview_and_lists_fit_laptop_and_phone(server: ServerProcess) -> None:
    for name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        with BrowserSession(viewport) as browser:
            page = browser.page
            sign_in(page, server, "alice", then="")
            no_horizontal_scroll(page, f"Overview ({name})")
            # Every tab in sight, the last one too (they wrap, never scroll away).
            tokens = page.locator("nav.tabs").get_by_role("link", name="Tokens").bounding_box()
            assert tokens is not None and tokens["x"] + tokens["width"] <= viewport["width"]
            for table in ("#states-table", "#revisions-table", "#registries-table"):
                for link in page.locator(table).get_by_role("link").all():
                    box = link.bounding_box()
                    assert box is not None and box["x"] + box["width"] <= viewport["width"]
            screenshot(page, f"overview-{name}")
            page.goto(server.url + "/orgs/acme/devices?state=unprotected")
            expect(page.locator("#devices")).to_contain_text(LONG_HOST[:40])
            no_horizontal_scroll(page, f"Devices with a long hostname ({name})")
            screenshot(page, f"overview-devices-{name}")
            page.goto(server.url + "/orgs/acme/blocked?action=push")
            expect(page.locator("#denials")).to_contain_text("deepdeep")
            no_horizontal_scroll(page, f"Blocked pulls with a long reference ({name})")
            screenshot(page, f"overview-blocked-{name}")


def test_registry_list_is_searched_and_sorted_without_javascript(server: ServerProcess) -> None:
    alice = token_of(server, "alice")
    path = "/api/v1/orgs/acme/registry-access/registries"
    for entry in (
        {"address": "ghcr.io", "nickname": "GitHub", "actions": ["pull"]},
        {"address": "ghcr.io", "repositories": ["acme/" + "x" * 120 + "/*"], "nickname": "Ours"},
        {"address": "quay.io", "nickname": "Quay"},
    ):
        api(server, "POST", path, {"entry": entry}, alice)
    for name, viewport in (("laptop", LAPTOP), ("phone", PHONE)):
        with BrowserSession(viewport, javascript=False) as browser:
            page = browser.page
            sign_in(page, server, "bob")
            rows = page.locator("#registries tr[data-address]")
            expect(rows).to_have_count(4)
            group = page.locator("#registries tbody[data-group='ghcr.io'] tr.group-head")
            expect(group).to_contain_text("ghcr.io · 2 entries")
            no_horizontal_scroll(page, f"Registry Access, grouped ({name})")
            screenshot(page, f"overview-registry-list-{name}")
            page.get_by_label("Search registries").fill("ours")
            page.get_by_role("button", name="Show").click()
            expect(rows).to_have_count(1)
            expect(page.get_by_role("heading", name="Registries (1 of 4)")).to_be_visible()
            page.get_by_label("Search registries").fill("")
            page.get_by_label("Sort", exact=True).select_option("-address")
            page.get_by_role("button", name="Show").click()
            assert rows.first.get_attribute("data-address") == "quay.io"
            assert "sort=-address" in page.url


def test_every_control_is_labelled_and_the_counts_reached_by_keyboard(
    server: ServerProcess,
) -> None:
    with BrowserSession() as browser:
        page = browser.page
        sign_in(page, server, "alice", then="")
        for path in (
            "/orgs/acme/overview",
            "/orgs/acme/devices?state=outdated",
            "/orgs/acme/blocked?registry=ghcr.io",
            "/orgs/acme/registry-access?q=io&sort=-address",
        ):
            page.goto(server.url + path)
            assert page.evaluate(UNLABELLED) == [], path
        page.goto(server.url + "/orgs/acme/overview")
        inside = "document.activeElement.closest('#states-table') !== null"
        for _ in range(60):  # the header, the tabs and the summary come first
            page.keyboard.press("Tab")
            if page.evaluate(inside):
                break
        assert page.evaluate(inside), "no count of the states table takes the focus"
        assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{server.url}/orgs/acme/devices?state=current")
