"""`regward login` approved and denied in a real Chromium: the real command in a child process
prints the address and code, a person signs in and decides on the dashboard's /device page,
and the approved agent (`regward agent run`, another child) syncs with its own token."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.harness.browser import BrowserSession, require_chromium, screenshot
from tests.harness.server import ServerProcess
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD
from tests.server.test_dashboard_browser import seed, token_of

pytestmark = pytest.mark.browser
AGENT_RUN = [sys.executable, "-m", "regward.cli", "agent", "run", "--proxy-listen", "off"]
AGENT_RUN += ["--loopback", "off"]  # the host namespace: no rules in it
COMPLETE = re.compile(r"or open (\S+/device\?code=([A-Z]{4}-[A-Z]{4}))")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require_chromium()
    root = tmp_path_factory.mktemp("rwdevice-server")
    seed(root / "data")
    env = {"REGWARD_DATA_DIR": str(root / "data"), "REGWARD_DEVICE_POLL_INTERVAL": "1"}
    with ServerProcess(env, root / "server.log") as live:
        yield live


def agent_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARD_")}
    env["REGWARD_AGENT_DIR"] = str(tmp / "state")
    env["REGWARD_REGISTRY_JSON"] = str(tmp / "registry.json")
    return env


@contextlib.contextmanager
def login_command(
    server: ServerProcess, tmp: Path
) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """The login command, and the complete address and code it printed; ended by its PID if
    the test leaves it running."""
    process = _start_login(server, tmp)
    try:
        yield process, *_printed(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


def _start_login(server: ServerProcess, tmp: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "regward.cli", "login", "--server", server.url]
    return subprocess.Popen(
        [*command, "--org", "acme"],
        env=agent_env(tmp),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _printed(process: subprocess.Popen[str]) -> tuple[str, str]:
    assert process.stdout is not None
    printed = ""
    for line in process.stdout:
        printed += line
        if line.startswith("Waiting for approval"):
            break
    found = COMPLETE.search(printed)
    assert found, printed
    return found.group(1), found.group(2)


def sign_in_at(page: Page, address: str, username: str) -> None:
    """Open `address` signed out: the sign-in page, then back to `address`."""
    page.goto(address)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_approved_in_the_browser_the_agent_syncs_with_its_own_token(
    server: ServerProcess, tmp_path: Path
) -> None:
    with login_command(server, tmp_path) as (login, address, code), BrowserSession() as browser:
        page = browser.page
        sign_in_at(page, address, "bob")
        expect(page.get_by_role("heading", name="Sign in a machine?")).to_be_visible()
        expect(page.locator("#device-machine")).to_have_text(socket.gethostname())
        expect(page.locator("#device-org")).to_have_text("acme")
        expect(page.get_by_text(code)).to_be_visible()
        screenshot(page, "device-approve")
        page.get_by_role("button", name="Approve").click()
        expect(page.get_by_role("heading", name=re.compile("is signed in to acme"))).to_be_visible()
        out, err = login.communicate(timeout=60)
        assert login.returncode == 0, err
        assert "Signed in to 'acme'" in out
        # Listed on the person's Tokens page, named after the machine.
        page.goto(server.url + "/tokens")
        listed = page.locator(f'#tokens tr[data-token="{socket.gethostname()}"]')
        expect(listed).to_contain_text("machine · acme")
    agent_socket = tmp_path / "authz.sock"
    with (tmp_path / "agent.log").open("wb") as log:
        agent = subprocess.Popen(
            [*AGENT_RUN, "--authz-socket", str(agent_socket)],
            env=agent_env(tmp_path),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        owner = {"Authorization": f"Bearer {token_of(server, 'alice')}"}
        agent_id = (tmp_path / "state" / "agent-id").read_text().strip()

        def checked_in() -> dict[str, object] | None:
            devices = httpx.get(
                f"{server.url}/api/v1/orgs/acme/devices", headers=owner, timeout=10
            ).json()["devices"]
            return next((d for d in devices if d["agent_id"] == agent_id), None)

        device = wait_for(checked_in, 60, "the agent to check in with its own token")
        assert device["user"] == "bob" and device["applied_revision"] == 1
        token = device["token"]
        assert isinstance(token, dict)
        assert token == {"id": token["id"], "name": socket.gethostname(), "active": True}
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=20)


def test_denied_in_the_browser_the_login_fails(server: ServerProcess, tmp_path: Path) -> None:
    with login_command(server, tmp_path) as (login, _, code), BrowserSession() as browser:
        page = browser.page
        sign_in_at(page, server.url + "/device", "alice")
        page.get_by_label("Code").fill("BBBB-BBBB")
        page.get_by_role("button", name="Continue").click()
        expect(page.get_by_role("alert")).to_contain_text("No machine is waiting for that code")
        page.get_by_label("Code").fill(code.lower().replace("-", ""))
        page.get_by_role("button", name="Continue").click()
        expect(page.locator("#device-org")).to_have_text("acme")
        page.get_by_role("button", name="Deny").click()
        expect(page.get_by_role("heading", name=re.compile("was not signed in"))).to_be_visible()
        _, err = login.communicate(timeout=60)
        assert login.returncode == 2
        assert "denied in the dashboard" in err
    assert not (tmp_path / "state" / "credentials.json").exists()
