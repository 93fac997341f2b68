"""`regward agent install` as dockerd reads it: the spec file finds the agent's socket anywhere,
and daemon.json alone turns the plugin on (no --authorization-plugin flag).

dockerd runs in its own mount namespace with the bed's root/etc/docker as /etc/docker, so the
install writes there and the host's /etc/docker is untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.harness.bed import PYTHON, unavailable_reason
from tests.harness.scenario import ALLOWED, BLOCKED, Scene

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    created = Scene.create("i")
    try:
        yield created
    finally:
        created.close()


def test_installed_files_make_dockerd_use_the_agent(scene: Scene) -> None:
    bed = scene.bed
    socket = bed.directory / "agent" / "authz.sock"  # not under /run/docker/plugins
    policy = bed.directory / "policy.yaml"
    policy.write_text(f"organization: acme\nenabled: true\nregistries:\n  - address: {ALLOWED}\n")
    daemon_json = bed.root / "etc" / "docker" / "daemon.json"
    daemon_json.parent.mkdir(parents=True, exist_ok=True)
    daemon_json.write_text('{"max-concurrent-downloads": 2}')
    installed = scene.regward(
        "agent",
        "install",
        "--root",
        str(bed.root),
        "--authz-socket",
        str(socket),
        "--proxy-listen",
        "off",
        "--policy",
        str(policy),
    )
    assert installed.returncode == 0, installed.stderr
    assert "regward.spec: wrote" in installed.stdout
    assert json.loads(daemon_json.read_text()) == {
        "max-concurrent-downloads": 2,
        "authorization-plugins": ["regward"],
    }
    unit = (bed.root / "etc/systemd/system/regward-agent.service").read_text()
    assert f"--authz-socket {socket}" in unit and f"--policy {policy}" in unit

    argv = [
        "agent",
        "run",
        "--authz-socket",
        str(socket),
        "--proxy-listen",
        "off",
        "--policy",
        str(policy),
    ]
    agent = bed.spawn(
        "agent-installed", [str(PYTHON), "-m", "regward.cli", *argv], scene.agent_env()
    )
    bed.wait_for("the installed agent", socket.exists, agent)
    bed.start_dockerd()  # no --authorization-plugin: daemon.json and the spec file do it
    assert bed.docker("pull", Scene.image(ALLOWED)).returncode == 0
    refused = bed.docker("pull", Scene.image(BLOCKED))
    assert "authorization denied by plugin regward" in refused.stderr
    assert f"Access to registry {BLOCKED} is restricted" in refused.stderr
