"""`regward agent run` with its defaults' shape: the AuthZ plugin and the egress proxy in one
process, before a real dockerd whose registry traffic goes through that proxy.

The build case is the reason the proxy exists: dockerd pulls a build's FROM image itself, and
AuthZ never sees that pull.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.harness.bed import unavailable_reason
from tests.harness.scenario import ALLOWED, BLOCKED, Scene

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]
PROXY = "127.0.0.1:3128"


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    created = Scene.create("p")
    try:
        policy = created.bed.directory / "policy.yaml"
        policy.write_text(
            f"organization: acme\nenabled: true\nregistries:\n  - address: {ALLOWED}\n"
        )
        created.start_agent(["--policy", str(policy)], proxy_listen=PROXY)
        proxy = f"http://{PROXY}"
        created.bed.start_dockerd(
            [f"--authorization-plugin={created.plugin_name}"],
            env={"HTTP_PROXY": proxy, "HTTPS_PROXY": proxy, "NO_PROXY": ""},
        )
        yield created
    finally:
        created.close()


def classic_build(scene: Scene, base: str, tag: str) -> subprocess.CompletedProcess[str]:
    context = scene.bed.directory / f"context-{tag}"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(f"FROM {base}\n")
    assert scene.bed.dockerd is not None
    return subprocess.run(
        ["docker", "-H", scene.bed.dockerd.host, "build", "-t", f"built:{tag}", str(context)],
        capture_output=True,
        text=True,
        timeout=120,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "DOCKER_BUILDKIT": "0",
            "DOCKER_CONFIG": str(scene.bed.directory / "docker-cli"),
        },
    )


def test_status_shows_both_enforcement_points_up(scene: Scene) -> None:
    status = json.loads(scene.regward("status", "--json").stdout)
    assert status["agent_running"] is True
    assert status["enforcement_points"]["authz"]["up"] is True
    assert status["enforcement_points"]["proxy"] == {"listen": PROXY, "up": True}


def test_allowed_pull_goes_through_the_proxy(scene: Scene) -> None:
    result = scene.bed.docker("pull", Scene.image(ALLOWED))
    assert result.returncode == 0, result.stderr


def test_a_build_from_a_disallowed_registry_is_stopped_by_the_proxy(scene: Scene) -> None:
    refused = classic_build(scene, Scene.image(BLOCKED), "blocked")
    assert refused.returncode != 0
    assert f"Access to {BLOCKED} is restricted by your organization 'acme'" in refused.stderr
    built = classic_build(scene, Scene.image(ALLOWED), "allowed")
    assert built.returncode == 0, built.stderr


def test_shutdown_is_clean(scene: Scene) -> None:
    assert scene.agent is not None
    scene.stop_agent()
    assert not scene.authz_socket.exists()
    status = json.loads(scene.regward("status", "--json").stdout)
    assert status["agent_running"] is False
    log = (scene.bed.directory / "agent.log").read_text()
    assert "agent stopped" in log and "Traceback" not in log
