"""A real Chromium for browser tests (Debian's /usr/bin/chromium driven by Playwright from
PyPI) and the flags that keep it on loopback.

Each `BrowserSession` is a fresh browser context (its own cookies, storage and cache, like a
new incognito window) in one Chromium that the tests of a module share, so two sessions never
share cookies (an owner and a member side by side) and a test does not wait for a Chromium to
start. The browser downloads nothing: `playwright install` is never run, and the flags below
switch off every background request.

    with BrowserSession() as browser:
        page = browser.page
        page.goto(f"{base_url}/signin")

The shared Chromium starts with the first session and stops at the end of the module
(`close_chromium`, called by an autouse fixture in tests/conftest.py): while Playwright's
driver runs, this thread counts as running its event loop, so `asyncio.run` in a later module
would refuse to start. The server the browser talks to is `tests.harness.server.ServerProcess`.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

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


class _Chromium:
    """Playwright's driver and one Chromium process, started together."""

    def __init__(self) -> None:
        self.playwright: Playwright = sync_playwright().start()
        try:
            self.browser: Browser = self.playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
            )
        except BaseException:
            self.playwright.stop()
            raise

    def close(self) -> None:
        try:
            self.browser.close()
        finally:
            self.playwright.stop()


_shared: _Chromium | None = None


def _browser() -> Browser:
    """The module's Chromium, started on first use (and again if it died)."""
    global _shared
    if _shared is not None and not _shared.browser.is_connected():
        close_chromium()
    if _shared is None:
        _shared = _Chromium()
    return _shared.browser


def close_chromium() -> None:
    """Stop the shared Chromium and Playwright's driver, if started."""
    global _shared
    if _shared is not None:
        running, _shared = _shared, None
        running.close()


class BrowserSession:
    """A new browser context in the shared Chromium; ``page`` is its first tab.
    `javascript=False` shows the pages as a browser without scripts does."""

    def __init__(self, viewport: dict[str, int] | None = None, *, javascript: bool = True) -> None:
        self._viewport = viewport or LAPTOP
        self._javascript = javascript
        self.context: BrowserContext | None = None

    def __enter__(self) -> BrowserSession:
        self.context = _browser().new_context(
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


_CUT_PLACEHOLDERS = """() => {
  const cut = [];
  const measure = document.createElement('canvas').getContext('2d');
  for (const field of document.querySelectorAll('input[placeholder], textarea[placeholder]')) {
    if (!field.offsetParent) continue;  // not shown
    const style = getComputedStyle(field);
    measure.font = `${style.fontStyle} ${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
    // A search field keeps room for its clear button.
    const button = field.type === 'search' ? parseFloat(style.fontSize) * 1.25 : 0;
    const room = field.clientWidth - parseFloat(style.paddingLeft)
      - parseFloat(style.paddingRight) - button;
    const needed = measure.measureText(field.placeholder).width;
    if (needed > room) {
      cut.push(`#${field.id}: ${Math.ceil(needed)} of ${Math.floor(room)} px`);
    }
  }
  return cut;
}"""


def placeholders_fit(page: Page, what: str) -> None:
    """Every placeholder shown reads whole in its field (none cut at the field's edge)."""
    cut = page.evaluate(_CUT_PLACEHOLDERS)
    assert not cut, f"{what}: placeholders cut: {cut}"
