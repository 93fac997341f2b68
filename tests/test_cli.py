"""`regward check` and `regward policy lint` as scripts use them: real process, exit codes, JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from regward.errors import InvalidAddress
from regward.policy import Address

POLICY = """
organization: acme
revision: 7
registries:
  - address: docker.io
  - address: ghcr.io
    repositories: ["acme/*"]
    actions: [pull]
"""


def regward(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "regward.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_check_json_contract(policy_file: Path) -> None:
    result = regward("check", "ghcr.io/acme/app:1", "--policy", str(policy_file), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "input": "ghcr.io/acme/app:1",
        "reference": "ghcr.io/acme/app:1",
        "registry": "ghcr.io",
        "repository": "acme/app",
        "action": "pull",
        "allowed": True,
        "reason": "Pull of ghcr.io/acme/app is allowed by the entry ghcr.io (repositories "
        "acme/*) of organization 'acme' (policy revision 7).",
        "entry": "ghcr.io",
        "revision": 7,
    }


def test_check_denied_exits_1(policy_file: Path) -> None:
    result = regward(
        "check", "ghcr.io/acme/app", "--action", "push", "--policy", str(policy_file), "--json"
    )
    assert result.returncode == 1
    decision = json.loads(result.stdout)
    assert decision["allowed"] is False
    assert decision["reason"].startswith(
        "Push to ghcr.io/acme/app is restricted by your organization 'acme'"
    )
    plain = regward("check", "quay.io/x", "--policy", str(policy_file))
    assert plain.returncode == 1
    assert plain.stdout.splitlines() == [
        "denied: quay.io/x:latest (pull)",
        "Access to registry quay.io is restricted by your organization 'acme' (policy revision 7). "
        "Ask an owner of 'acme' to add it to the allowed registries.",
    ]


def test_check_normalizes_like_docker(policy_file: Path) -> None:
    result = regward(
        "check", "busybox:1@sha256:" + "c" * 64, "--policy", str(policy_file), "--json"
    )
    decision = json.loads(result.stdout)
    assert decision["reference"] == "docker.io/library/busybox@sha256:" + "c" * 64
    assert decision["registry"] == "docker.io"
    assert decision["repository"] == "library/busybox"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["check", "UPPER"], "repository name (library/UPPER) must be lowercase"),
        (["check", "ubuntu:"], "invalid reference format: 'ubuntu:'"),
        (
            ["check", "ubuntu", "--policy", "/nonexistent.yaml"],
            "cannot read the policy file /nonexistent.yaml",
        ),
    ],
)
def test_invalid_input_exits_2_with_one_line(
    policy_file: Path, args: list[str], message: str
) -> None:
    if "--policy" not in args:
        args = [*args, "--policy", str(policy_file)]
    result = regward(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_policy_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"organization": "acme", "registries": [{"address": "https://ghcr.io"}]}')
    result = regward("check", "ubuntu", "--policy", str(bad))
    assert result.returncode == 2
    assert (
        "bad.json: line 1: registries[0].address: registry address 'https://ghcr.io' has a "
        "scheme" in result.stderr
    )
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8 text" in regward("check", "ubuntu", "--policy", str(binary)).stderr


def test_policy_lint(tmp_path: Path, policy_file: Path) -> None:
    clean = regward("policy", "lint", str(policy_file))
    assert (clean.returncode, clean.stdout.strip()) == (0, f"{policy_file}: no warnings")
    risky = tmp_path / "risky.json"
    risky.write_text('{"organization": "acme", "registries": [{"address": "amazonaws.com"}]}')
    result = regward("policy", "lint", str(risky))
    assert result.returncode == 1
    assert "amazonaws.com: amazonaws.com covers the shared domain amazonaws.com" in result.stdout
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "organization: acme\nenabled: maybe\nregistries:\n  - address: ghcr.io\n"
        "    actions: [delete]\n  - address: 'a b'\n"
    )
    refused = regward("policy", "lint", str(broken))
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"{broken}: line 2: enabled: 'maybe' must be true or false",
        f"{broken}: line 5: registries[0].actions: ['delete'] may only contain 'pull' and 'push'",
        f"{broken}: line 6: registries[1].address: {_address_error('a b')}",
    ]


def _address_error(text: str) -> str:
    try:
        Address.parse(text)
    except InvalidAddress as error:
        return error.message
    raise AssertionError(f"{text!r} parsed")


def test_check_without_a_policy_file_asks_what_this_machine_enforces(tmp_path: Path) -> None:
    machine = {
        "REGWARD_AGENT_DIR": str(tmp_path / "agent"),
        "REGWARD_REGISTRY_JSON": str(tmp_path / "registry.json"),
    }
    unmanaged = regward("check", "quay.io/x/y", "--json", env=machine)
    assert unmanaged.returncode == 0, unmanaged.stderr
    assert json.loads(unmanaged.stdout)["reason"] == "no organization manages this machine"
    (tmp_path / "registry.json").write_text('{"allowedOrgs": ["acme"]}')
    required = regward("check", "ubuntu", env=machine)
    assert required.returncode == 1
    assert "acme" in required.stdout.splitlines()[1]
