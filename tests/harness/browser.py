"""A real Chromium for browser tests (Debian's /usr/bin/chromium driven by Playwright from
PyPI) and a real server process for it to talk to.

Each `BrowserSession` is one Chromium process with a fresh profile directory, so two sessions
never share cookies (an owner and a member side by side). The browser downloads nothing:
`playwright install` is never run, and the flags below switch off every background request.

    with BrowserSession(tmp_path / "owner") as browser:
        page = browser.page
        page.goto(f"{base_url}/signin")

`LiveServer` runs the policy server (dashboard included) as its own uvicorn process on a free
loopback port, with the data directory (SQLite file, signing key) the caller prepared.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx
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
    """One Chromium with its own fresh ``--user-data-dir``; ``page`` is its first tab."""

    def __init__(self, viewport: dict[str, int] | None = None) -> None:
        self._viewport = viewport or LAPTOP
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


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG under test-artifacts/ (gitignored) for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


# The server process: the app `create_app` builds from REGWARD_* settings, under uvicorn.
_SERVE = (
    "import sys, uvicorn\n"
    "from regward.server.app import create_app\n"
    "from regward.server.settings import Settings\n"
    "uvicorn.run(create_app(Settings.from_env()), host='127.0.0.1', port=int(sys.argv[1]),"
    " log_level='warning')\n"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class LiveServer:
    """`regward` server in a subprocess on 127.0.0.1; `url` is its address once started."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LiveServer:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("REGWARD_") and not key.upper().endswith("_PROXY")
        }
        env["REGWARD_DATA_DIR"] = str(self.data_dir)
        env["REGWARD_PUBLIC_URL"] = self.url
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVE, str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/signin", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"server did not answer on {self.url}: {self.log_path.read_text()}")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
