"""A real Chromium for browser tests (Debian's /usr/bin/chromium driven by Playwright from
PyPI) and the flags that keep it on loopback.

Each `BrowserSession` is one Chromium process with a fresh profile directory, so two sessions
never share cookies (an owner and a member side by side). The browser downloads nothing:
`playwright install` is never run, and the flags below switch off every background request.

    with BrowserSession(tmp_path / "owner") as browser:
        page = browser.page
        page.goto(f"{base_url}/signin")

The server the browser talks to is `tests.harness.server.ServerProcess`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def require_chromium() -> None:
    """Skip, saying why, where Debian's Chromium is absent (scripts/setup.sh installs it)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed; run scripts/setup.sh as root")


class BrowserSession:
    """One Chromium with its own fresh ``--user-data-dir``; ``page`` is its first tab.
    `javascript=False` shows the pages as a browser without scripts does."""

    def __init__(self, viewport: dict[str, int] | None = None, *, javascript: bool = True) -> None:
        self._viewport = viewport or LAPTOP
        self._javascript = javascript
        self._profile = Path(tempfile.mkdtemp(prefix="rwdash-chromium-"))
        self._playwright: Playwright | None = None
        self.context: BrowserContext | None = None

    def __enter__(self) -> BrowserSession:
        self._playwright = sync_playwright().start()
        # A persistent context is how Playwright takes an explicit --user-data-dir.
        self.context = self._playwright.chromium.launch_persistent_context(
            str(self._profile),
            executable_path=CHROMIUM,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=self._viewport,  # type: ignore[arg-type]
            java_script_enabled=self._javascript,
        )
        self.context.set_default_timeout(15_000)
        return self

    @property
    def page(self) -> Page:
        assert self.context is not None, "use BrowserSession as a context manager"
        pages = self.context.pages
        return pages[0] if pages else self.context.new_page()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.context is not None:
            self.context.close()
        if self._playwright is not None:
            self._playwright.stop()
        shutil.rmtree(self._profile, ignore_errors=True)


WIDTH = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def no_horizontal_scroll(page: Page, what: str) -> None:
    """The page is no wider than the window (nothing to scroll sideways)."""
    overflow = page.evaluate(WIDTH)
    assert overflow <= 0, f"{what}: the page is {overflow} px wider than the window"


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG under test-artifacts/ (gitignored) for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
