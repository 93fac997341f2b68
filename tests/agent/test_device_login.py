"""`regward login` without a token: the command prints a code, a person approves or denies it,
and the machine stores a token of its own (a real server in a thread, the real command in a
child process)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from regward.server.app import create_app
from regward.server.db import Database
from regward.server.services import auth, device_auth
from regward.server.settings import Settings
from tests.server.accounts import PASSWORD, make_users
from tests.server.live import ThreadServer

CODE = re.compile(r"enter the code\s+([A-Z]{4}-[A-Z]{4})")


@dataclasses.dataclass
class Live:
    url: str
    database: Database
    tmp: Path

    def login(self) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARD_")}
        env["REGWARD_AGENT_DIR"] = str(self.tmp / "state")
        env["REGWARD_REGISTRY_JSON"] = str(self.tmp / "registry.json")
        return subprocess.Popen(
            [sys.executable, "-m", "regward.cli", "login", "--server", self.url, "--org", "acme"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def decide(self, username: str, code: str, *, approve: bool) -> None:
        with self.database.session(write=True) as session:
            token = auth.sign_in(session, username, PASSWORD, 60)
            caller = auth.resolve_token(session, token)
            device_auth.decide(session, caller, code, approve=approve)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path}/rw.db",
        device_poll_interval=1,
    )
    database = Database(settings.database_url)
    database.upgrade()
    make_users(database, settings)
    with ThreadServer(create_app(settings, database=database)) as server:
        yield Live(server.url, database, tmp_path)
    database.dispose()


def _code(process: subprocess.Popen[str]) -> tuple[str, str]:
    """The code and everything printed up to "Waiting for approval"."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("Waiting for approval"):
            break
    text = "".join(lines)
    found = CODE.search(text)
    assert found, f"no code printed: {text}"
    return found.group(1), text


def test_login_prints_a_code_and_stores_the_machines_own_token(live: Live) -> None:
    process = live.login()
    code, text = _code(process)
    assert f"open\n\n    {live.url}/device\n" in text
    assert f"{live.url}/device?code={code}" in text
    live.decide("bob", code, approve=True)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Signed in to 'acme'" in out and "as bob" in out
    stored = json.loads((live.tmp / "state" / "credentials.json").read_text())
    assert stored["token"].startswith("rwd_")
    agent_id = (live.tmp / "state" / "agent-id").read_text().strip()
    with live.database.session() as session:
        caller = auth.resolve_token(session, stored["token"])
    assert caller.agent_id == agent_id and not caller.can_write


def test_a_denied_login_saves_nothing(live: Live) -> None:
    process = live.login()
    code, _ = _code(process)
    live.decide("alice", code, approve=False)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "denied in the dashboard" in err
    assert not (live.tmp / "state" / "credentials.json").exists()
