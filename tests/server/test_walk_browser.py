"""A newcomer's walk of the dashboard in Chromium, at a laptop's 1366x768 and a phone's 390x844:
every page reads whole (no sideways scroll, no placeholder cut at its field's edge, every
control labelled) and the forms keep what was typed through a refusal and a reload."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

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
