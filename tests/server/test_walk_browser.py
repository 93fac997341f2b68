"""A newcomer's walk of the dashboard in Chromium, at a laptop's 1366x768 and a phone's 390x844:
every page reads whole (no sideways scroll, no placeholder cut at its field's edge, every
control labelled) and the forms keep what was typed through a refusal and a reload."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page, expect

from tests.harness.browser import (
    PHONE,
    BrowserSession,
    no_horizontal_scroll,
    placeholders_fit,
    require_chromium,
)
from tests.harness.server import ServerProcess
from tests.server.test_dashboard_browser import seed, sign_in

pytestmark = pytest.mark.browser
SMALL_LAPTOP = {"width": 1366, "height": 768}
PAGES = (
    "/orgs/acme/overview",
    "/orgs/acme/registry-access",
    "/orgs/acme/registry-access/edit?address=docker.io",
    "/orgs/acme/activity",
    "/orgs/acme/members",
    "/orgs/acme/devices",
    "/orgs/acme/blocked",
    "/orgs/acme/test",
    "/orgs/acme/sso",
    "/orgs/acme/webhooks",
    "/tokens",
    "/account",
    "/device",
)
UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(c => c.offsetParent && !c.labels?.length && !c.getAttribute('aria-label')
    && !c.getAttribute('aria-labelledby'))
  .map(c => c.id || c.name)"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_chromium()
    root = tmp_path_factory.mktemp("rwdash-walk")
    seed(root / "data")
    with ServerProcess({"REGWARD_DATA_DIR": str(root / "data")}, root / "server.log") as live:
        yield live


def _reads_whole(page: Page, what: str) -> None:
    no_horizontal_scroll(page, what)
    placeholders_fit(page, what)
    assert page.evaluate(UNLABELLED) == [], f"{what}: controls without a label"


@pytest.mark.parametrize("viewport", [SMALL_LAPTOP, PHONE], ids=["laptop", "phone"])
def test_every_page_reads_whole(server: ServerProcess, viewport: dict[str, int]) -> None:
    with BrowserSession(viewport) as browser:
        page = browser.page
        sign_in(page, server, "alice", then="")
        for path in PAGES:
            answer = page.goto(server.url + path)
            assert answer is not None and answer.status == 200, path
            _reads_whole(page, f"{path} at {viewport['width']} px")


def test_a_refused_add_sits_at_a_get_address_and_survives_a_reload(server: ServerProcess) -> None:
    """The page of a refused Add registry is the list's own address: reloading it shows the
    refusal and what was typed again, and sends nothing (the draft is unchanged)."""
    with BrowserSession(SMALL_LAPTOP) as browser:
        page = browser.page
        sign_in(page, server, "alice")
        posts: list[str] = []
        page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
        page.get_by_label("Registry address").fill("http://ghcr.io/")
        page.get_by_label("Nickname").fill("GitHub packages")
        page.get_by_role("button", name="Add registry").click()
        expect(page.get_by_text("The registry was not added.")).to_be_visible()
        assert page.url == f"{server.url}/orgs/acme/registry-access"
        assert len(posts) == 1
        page.reload()
        expect(page.get_by_text("The registry was not added.")).to_be_visible()
        expect(page.get_by_label("Registry address")).to_have_value("http://ghcr.io/")
        expect(page.get_by_label("Nickname")).to_have_value("GitHub packages")
        assert len(posts) == 1  # the reload was a GET
        # Fixed and sent: added, and the refusal is gone.
        page.get_by_label("Registry address").fill("ghcr.io")
        page.get_by_role("button", name="Add registry").click()
        expect(page.get_by_role("status").first).to_contain_text("Added ghcr.io to the draft")
        expect(page.get_by_text("The registry was not added.")).to_have_count(0)
        page.reload()
        expect(page.get_by_text("The registry was not added.")).to_have_count(0)
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Remove ghcr.io").click()
        expect(page.get_by_role("status").first).to_contain_text("ghcr.io")


def test_a_refused_edit_sits_at_the_entry_s_edit_address(server: ServerProcess) -> None:
    with BrowserSession(SMALL_LAPTOP) as browser:
        page = browser.page
        sign_in(page, server, "alice")
        page.get_by_role("link", name="Edit docker.io").click()
        page.get_by_label("Nickname").fill("Hub\u202e")
        page.get_by_role("button", name="Save change").click()
        expect(page.get_by_text("Your change was not saved.")).to_be_visible()
        edit = "/orgs/acme/registry-access/edit?address=docker.io&repositories="
        assert page.url == server.url + edit
        page.reload()
        expect(page.get_by_text("U+202E")).not_to_have_count(0)
        expect(page.get_by_label("Nickname")).to_have_value("Hub\u202e")
