"""End to end: podman and skopeo, with no proxy variables, pull only what the policy allows.

One bed for the module (tests/harness): the registries allowed.registry.test:5000 and
blocked.registry.test:5000 (plain HTTP) in a private network namespace, whose own
/etc/containers (a copy of the host's, `Bed.containers_dir`) is what every command inside sees.
`regward agent run --policy FILE --containers-policy /etc/containers/policy.json` runs there and
keeps that file in step; the real `skopeo copy` and `podman pull` read it by themselves.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.bed import unavailable_reason
from tests.harness.scenario import ALLOWED, BLOCKED, Scene
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed"),
]

POLICY = f"organization: acme\nrevision: 3\nregistries:\n  - address: {ALLOWED}\n"
REJECTED = "is rejected by policy"
SIGNED = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/containers/acme.gpg"}


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    created = Scene.create("cp")
    try:
        bed = created.bed
        containers = bed.containers_dir()
        # What an administrator had before: pulls of demo/* from the allowed registry must
        # carry a signature (kept), and everything else accepted (replaced by the policy).
        (containers / "policy.json").write_text(
            json.dumps(
                {
                    "default": [{"type": "insecureAcceptAnything"}],
                    "transports": {"docker": {f"{ALLOWED}/signed": [SIGNED]}},
                }
            )
        )
        (containers / "acme.gpg").write_bytes(b"")
        policy = bed.directory / "policy.yaml"
        policy.write_text(POLICY)
        # The bed's registries are on loopback: --loopback off leaves the file alone in the way.
        args = ["--policy", str(policy), "--containers-policy", "/etc/containers/policy.json"]
        created.start_agent([*args, "--loopback", "off"])
        yield created
    finally:
        created.close()


def skopeo(scene: Scene, image: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    destination = tmp_path / "copy"
    shutil.rmtree(destination, ignore_errors=True)
    return scene.bed.run(
        ["skopeo", "copy", "--src-tls-verify=false", f"docker://{image}", f"dir:{destination}"],
        timeout=120,
    )


def podman(scene: Scene, image: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # Its own storage, nothing in the host's; the run root must be short (50 characters).
    run_root = scene.bed.directory / "podman-run"
    return scene.bed.run(
        [
            "podman",
            "--root",
            str(tmp_path / "podman"),
            "--runroot",
            str(run_root),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "pull",
            "--tls-verify=false",
            image,
        ],
        timeout=180,
    )


def written(scene: Scene) -> dict[str, object]:
    document: dict[str, object] = json.loads(
        (scene.bed.containers_dir() / "policy.json").read_text()
    )
    return document


def test_the_agent_writes_the_containers_policy(scene: Scene) -> None:
    docker = written(scene)["transports"]["docker"]  # type: ignore[index]
    assert docker[""] == [{"type": "reject"}]
    assert docker[ALLOWED] == [{"type": "insecureAcceptAnything"}]
    assert docker[f"{ALLOWED}/signed"] == [SIGNED]  # the administrator's requirement is kept


def test_skopeo_without_a_proxy_is_held_by_the_policy(scene: Scene, tmp_path: Path) -> None:
    allowed = skopeo(scene, Scene.image(ALLOWED), tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "copy" / "manifest.json").exists()
    blocked = skopeo(scene, Scene.image(BLOCKED), tmp_path)
    assert blocked.returncode != 0
    assert REJECTED in blocked.stderr, blocked.stderr


def test_podman_without_a_proxy_is_held_by_the_policy(scene: Scene, tmp_path: Path) -> None:
    allowed = podman(scene, Scene.image(ALLOWED), tmp_path)
    assert allowed.returncode == 0, allowed.stderr
    blocked = podman(scene, Scene.image(BLOCKED), tmp_path)
    assert blocked.returncode != 0
    assert REJECTED in blocked.stderr, blocked.stderr


def test_a_kept_signature_requirement_still_applies(scene: Scene, tmp_path: Path) -> None:
    scene.bed.push(f"http://{ALLOWED}", "signed/hello", "v1")
    unsigned = skopeo(scene, Scene.image(ALLOWED, "signed/hello"), tmp_path)
    assert unsigned.returncode != 0
    assert "A signature was required, but no signature exists" in unsigned.stderr


def test_a_new_policy_is_written_for_the_next_pull(scene: Scene, tmp_path: Path) -> None:
    policy = scene.bed.directory / "policy.yaml"
    try:
        policy.write_text(
            POLICY.replace("revision: 3", "revision: 4") + f"  - address: {BLOCKED}\n"
        )
        wait_for(
            lambda: skopeo(scene, Scene.image(BLOCKED), tmp_path).returncode == 0,
            30,
            "the rewritten containers policy to allow the pull",
        )
    finally:
        policy.write_text(POLICY)
    refused = wait_for(
        lambda: REJECTED in skopeo(scene, Scene.image(BLOCKED), tmp_path).stderr,
        30,
        "the restored policy to refuse the pull",
    )
    assert refused
