"""The agent's commands as a user types them: exact flags, exit codes, one-line errors."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regward.cli import main


@pytest.fixture(autouse=True)
def agent_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REGWARD_AGENT_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("REGWARD_REGISTRY_JSON", str(tmp_path / "registry.json"))
    return tmp_path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("listen", ["nonsense", "127.0.0.1:", ":3128", "127.0.0.1:99999"])
def test_bad_proxy_listen_is_one_clear_line(
    listen: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["agent", "run", "--proxy-listen", listen], capsys)
    assert code == 2
    assert err.count("\n") == 1 and listen in err and "off" in err


def test_bad_policy_file_is_refused_before_starting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("organization: acme\nregistries:\n  - address: 'a b'\n")
    code, _, err = run(["agent", "run", "--policy", str(bad), "--proxy-listen", "off"], capsys)
    assert code == 2 and "a b" in err
    code, _, err = run(["agent", "run", "--policy", str(tmp_path / "nope.yaml")], capsys)
    assert code == 2 and "nope.yaml" in err


def test_login_errors_name_the_problem(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("token\n"))
    code, _, err = run(
        ["login", "--server", "regward.example", "--org", "a", "--token-stdin"], capsys
    )
    assert code == 2 and "'regward.example'" in err
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr("sys.stdin", io.StringIO("token\n"))
    code, _, err = run(
        ["login", "--server", f"http://127.0.0.1:{port}", "--org", "a", "--token-stdin"], capsys
    )
    assert code == 2 and f"cannot reach http://127.0.0.1:{port}" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    code, _, err = run(["login", "--server", "http://x", "--org", "a", "--token-stdin"], capsys)
    assert code == 2 and "no access token" in err


def test_logout_and_status_when_not_signed_in(
    agent_dirs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(["logout"], capsys)
    assert code == 0 and out == "Not signed in.\n"
    code, out, _ = run(["status", "--json"], capsys)
    status = json.loads(out)
    assert status["signed_in"] is False
    assert status["agent_running"] is False
    assert status["enforced"] == "nothing (no organization manages this machine)"
    (agent_dirs / "registry.json").write_text('{"allowedOrgs": ["acme"]}')
    code, out, _ = run(["status"], capsys)
    assert "registry.json: requires acme" in out
    assert "Sign-in to organization 'acme' is required" in out


@pytest.fixture
def berlin_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process in a time zone one hour east of UTC, restored afterwards."""
    monkeypatch.setenv("TZ", "CET-1")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_status_aligns_its_labels_and_says_the_time_zone(
    agent_dirs: Path, capsys: pytest.CaptureFixture[str], berlin_time: None
) -> None:
    (agent_dirs / "registry.json").write_text('{"allowedOrgs": ["acme"]}')
    state = agent_dirs / "state"
    state.mkdir(mode=0o700)
    running = {
        "pid": os.getpid(),  # alive: this test's own process stands for the agent
        "running": True,
        "updated": 1_764_670_267,
        "organization": "acme",
        "revision": 4,
        "authz_socket": str(agent_dirs / "no-such.sock"),
        "proxy_listen": None,
        "sync": {"last_sync": 1_764_670_267, "last_error": None, "refusal": "refused 5: bad"},
    }
    (state / "status.json").write_text(json.dumps(running))
    code, out, _ = run(["status"], capsys)
    assert code == 0
    lines = out.splitlines()
    labels = [line.split(":")[0] for line in lines]
    assert labels == [
        "Signed in",
        "registry.json",
        "Enforcing",
        "Last sync",
        "REFUSED",
        "Docker Engine",
        "Transparent",
        "AuthZ plugin",
        "Proxy",
    ]
    # Every value starts in one column, after the longest label.
    assert {
        len(line) - len(line[len(label) + 1 :].lstrip())
        for line, label in zip(lines, labels, strict=True)
    } == {15}
    assert "Last sync:     2025-12-02 11:11:07 CET (+0100)" in lines
    assert f"AuthZ plugin:  DOWN at {agent_dirs / 'no-such.sock'}" in lines
    assert "Proxy:         off" in lines


def test_install_writes_spec_daemon_json_and_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    daemon_json = root / "etc/docker/daemon.json"
    daemon_json.parent.mkdir(parents=True)
    daemon_json.write_text('{"storage-driver": "overlay2", "authorization-plugins": ["other"]}')
    argv = [
        "agent",
        "install",
        "--root",
        str(root),
        "--proxy-listen",
        "off",
        "--authz-socket",
        "/run/regward/authz.sock",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0
    spec = root / "etc/docker/plugins/regward.spec"
    assert spec.read_text() == "unix:///run/regward/authz.sock\n"
    config = json.loads(daemon_json.read_text())
    assert config == {"storage-driver": "overlay2", "authorization-plugins": ["other", "regward"]}
    unit = (root / "etc/systemd/system/regward-agent.service").read_text()
    assert "Before=docker.service" in unit
    assert "agent run --authz-socket /run/regward/authz.sock --proxy-listen off" in unit
    assert "--containers-policy /etc/containers/policy.json" in unit  # the default, written
    assert f"{spec}: wrote" in out
    code, out, _ = run(argv, capsys)
    assert out.count("unchanged") == 3
    code, out, _ = run([*argv, "--containers-policy", "off"], capsys)
    assert code == 0
    assert (
        "--containers-policy" not in (root / "etc/systemd/system/regward-agent.service").read_text()
    )


def test_install_dry_run_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    code, out, _ = run(["agent", "install", "--root", str(root), "--dry-run"], capsys)
    assert code == 0 and "would write" in out and "would use the proxy" in out
    assert not root.exists()


def test_an_unusable_socket_path_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    policy = tmp_path / "policy.yaml"
    policy.write_text("organization: acme\nenabled: true\nregistries: []\n")
    argv = [
        "agent",
        "run",
        "--policy",
        str(policy),
        "--proxy-listen",
        "off",
        "--authz-socket",
        str(blocker / "sub" / "authz.sock"),
    ]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "cannot listen on" in err and "--authz-socket" in err and "Traceback" not in err


def test_the_command_line_parser_loads_no_http_client() -> None:
    """`regward agent proxy` is a long-lived process that needs no HTTP client; building the
    parser every command shares must not load httpx (about 10 MB resident)."""
    code = (
        "import sys; from regward.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('httpx', 'regward.agent.runner') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
