"""End to end: a real dockerd, builds and skopeo reach registries only through the egress proxy.

One bed for the module, inside a private network namespace (tests/harness):

    allowed.registry.test:5000   plain HTTP, 127.0.0.2   allowed by the policy
    blocked.registry.test:5000   plain HTTP, 127.0.0.3   not in the policy
    tls-ok.rwpx.test:443         TLS (own CA), 10.234.N.4   allowed
    tls-evil.rwpx.test:443       TLS (own CA), 10.234.N.5   not in the policy

`regward agent run --policy FILE --proxy-listen 127.0.0.1:3128` runs in the namespace, and
dockerd runs with HTTP_PROXY/HTTPS_PROXY pointing at it and no AuthZ plugin, so every refusal
seen here is the proxy's. Both TLS names are trusted in certs.d: a refusal is never a TLS error.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.bed import PYTHON, unavailable_reason
from tests.harness.proxy_bed import Pki, add_tls_registry
from tests.harness.scenario import ALLOWED, BLOCKED, PULL_ONLY, Scene
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

TLS_OK = "tls-ok.rwpx.test"
TLS_EVIL = "tls-evil.rwpx.test"
PROXY = "http://127.0.0.1:3128"
PROXY_ENV = {"HTTP_PROXY": PROXY, "HTTPS_PROXY": PROXY, "NO_PROXY": ""}
LEGACY_CLI = "/usr/bin/docker"  # Debian's 20.10 CLI: the one with BuildKit built in here
POLICY = f"""\
organization: acme
revision: 3
registries:
  - address: {ALLOWED}
  - address: {TLS_OK}
"""


def refusal(host: str) -> str:
    return (
        f"Access to {host} is restricted by your organization 'acme' (policy revision 3). "
        "Ask an owner of 'acme' to add it to the allowed registries."
    )


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    created = Scene.create("px")
    try:
        bed = created.bed
        pki = Pki.create(bed.directory / "pki")
        add_tls_registry(bed, pki, "tls-ok", TLS_OK, index=4)
        add_tls_registry(bed, pki, "tls-evil", TLS_EVIL, index=5)
        policy = bed.directory / "policy.yaml"
        policy.write_text(POLICY)
        created.start_agent(["--policy", str(policy)], proxy_listen="127.0.0.1:3128")
        # After certs.d is in place: BuildKit reads it only when dockerd starts.
        bed.start_dockerd(env=PROXY_ENV)
        yield created
    finally:
        created.close()


def build(
    scene: Scene, tmp_path: Path, image: str, buildkit: bool, tag: str = "rwpx-build:latest"
) -> subprocess.CompletedProcess[str]:
    """`docker build -t tag` of `FROM image`, classic (DOCKER_BUILDKIT=0) or BuildKit."""
    bed = scene.bed
    assert bed.dockerd is not None
    (tmp_path / "Dockerfile").write_text(f'FROM {image}\nCMD ["/hello"]\n')
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().endswith("_PROXY") and not key.startswith("DOCKER_")
    }
    env.update(DOCKER_BUILDKIT="1" if buildkit else "0", DOCKER_CONFIG=str(tmp_path / "cli"))
    return subprocess.run(
        [LEGACY_CLI, "-H", bed.dockerd.host, "build", "--no-cache", "-t", tag, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )


def test_dockerd_uses_the_proxy(scene: Scene) -> None:
    info = scene.bed.docker("info", "--format", "{{.HTTPProxy}} {{.HTTPSProxy}}")
    assert info.stdout.strip() == f"{PROXY} {PROXY}"


def test_pull_from_an_allowed_registry_works(scene: Scene) -> None:
    result = scene.bed.docker("pull", scene.image(ALLOWED))
    assert result.returncode == 0, result.stderr
    result = scene.bed.docker("pull", scene.image(TLS_OK))
    assert result.returncode == 0, result.stderr


def test_pull_from_a_disallowed_registry_fails_with_the_reason(scene: Scene) -> None:
    result = scene.bed.docker("pull", scene.image(BLOCKED))
    assert result.returncode != 0
    assert f"denied: {refusal(BLOCKED)}" in result.stderr
    result = scene.bed.docker("pull", scene.image(TLS_EVIL))
    assert result.returncode != 0
    assert f"Forbidden ({refusal(TLS_EVIL + ':443')})" in result.stderr


def test_classic_build_from_a_disallowed_registry_fails(scene: Scene, tmp_path: Path) -> None:
    result = build(scene, tmp_path, scene.image(BLOCKED), buildkit=False)
    assert result.returncode != 0
    assert f"denied: {refusal(BLOCKED)}" in result.stdout + result.stderr


def test_classic_build_from_an_allowed_registry_works(scene: Scene, tmp_path: Path) -> None:
    scene.bed.docker("rmi", "-f", scene.image(ALLOWED))
    result = build(scene, tmp_path, scene.image(ALLOWED), buildkit=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Successfully built" in result.stdout


def test_buildkit_build_from_a_disallowed_tls_registry_fails(scene: Scene, tmp_path: Path) -> None:
    result = build(scene, tmp_path, scene.image(TLS_EVIL), buildkit=True)
    assert result.returncode != 0
    assert f"Forbidden ({refusal(TLS_EVIL + ':443')})" in result.stderr


def test_buildkit_build_from_an_allowed_tls_registry_works(scene: Scene, tmp_path: Path) -> None:
    result = build(scene, tmp_path, scene.image(TLS_OK), buildkit=True, tag="rwpx-kit:ok")
    assert result.returncode == 0, result.stderr
    run = scene.bed.docker("run", "--rm", "--network", "none", "rwpx-kit:ok")
    assert run.stdout == "hello from regward test image\n", run.stderr


def skopeo(
    scene: Scene, tmp_path: Path, source: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    destination = tmp_path / "copy"
    return scene.bed.run(
        ["skopeo", "copy", *flags, f"docker://{source}", f"dir:{destination}"],
        env=PROXY_ENV,
        timeout=120,
    )


def test_skopeo_copy_through_the_proxy(scene: Scene, tmp_path: Path) -> None:
    plain = ("--src-tls-verify=false",)
    certs = scene.bed.directory / "skopeo-certs"
    certs.mkdir(exist_ok=True)
    (certs / "ca.crt").write_bytes((scene.bed.directory / "pki" / "ca.crt").read_bytes())
    tls = (f"--src-cert-dir={certs}",)

    allowed = skopeo(scene, tmp_path / "a", scene.image(ALLOWED), *plain)
    assert allowed.returncode == 0, allowed.stderr
    assert (tmp_path / "a" / "copy" / "manifest.json").exists()
    allowed_tls = skopeo(scene, tmp_path / "b", scene.image(TLS_OK), *tls)
    assert allowed_tls.returncode == 0, allowed_tls.stderr

    blocked = skopeo(scene, tmp_path / "c", scene.image(BLOCKED), *plain)
    assert blocked.returncode != 0
    # skopeo prints only the status for a plain-HTTP registry's ping; the reason shows for TLS.
    assert "invalid status code from registry 403 (Forbidden)" in blocked.stderr
    blocked_tls = skopeo(scene, tmp_path / "d", scene.image(TLS_EVIL), *tls)
    assert blocked_tls.returncode != 0
    assert f"Forbidden ({refusal(TLS_EVIL + ':443')})" in blocked_tls.stderr


def test_a_new_policy_applies_to_the_next_connection(scene: Scene) -> None:
    policy = scene.bed.directory / "policy.yaml"

    def pull() -> subprocess.CompletedProcess[str]:
        return scene.bed.docker("pull", scene.image(BLOCKED))

    try:
        policy.write_text(
            POLICY.replace("revision: 3", "revision: 4") + f"  - address: {BLOCKED}\n"
        )
        # The agent re-reads its policy file: the next connection is decided under the edit.
        wait_for(lambda: pull().returncode == 0, 30, "the edit to allow the pull")
    finally:
        policy.write_text(POLICY)
    wait_for(lambda: pull().returncode != 0, 30, "the restored policy to refuse the pull")
    assert f"denied: {refusal(BLOCKED)}" in pull().stderr


def test_plain_http_through_the_proxy_is_held_to_an_entrys_repositories_and_actions(
    scene: Scene, tmp_path: Path
) -> None:
    """skopeo with HTTP_PROXY and --tls-verify=false against a plain-HTTP registry: its
    absolute-form requests show the repository and, by the method, pull or push, and are
    decided as the AuthZ plugin decides the engine's, not by host alone."""
    policy = scene.bed.directory / "policy.yaml"
    narrowed = f"  - address: {PULL_ONLY}\n    repositories: [demo/*]\n    actions: [pull]\n"
    plain = "--tls-verify=false"

    def inspect(repository: str) -> subprocess.CompletedProcess[str]:
        image = scene.image(PULL_ONLY, repository)
        return scene.bed.run(
            ["skopeo", "inspect", "--raw", plain, f"docker://{image}"], env=PROXY_ENV
        )

    try:
        policy.write_text(POLICY.replace("revision: 3", "revision: 5") + narrowed)
        wait_for(lambda: inspect("demo/hello").returncode == 0, 30, "the narrowed entry")
        other = inspect("other/hello")
        assert other.returncode != 0
        assert f"Pull of {PULL_ONLY}/other/hello" in other.stderr, other.stderr
        assert "is restricted by your organization 'acme'" in other.stderr
        copied = skopeo(scene, tmp_path / "source", scene.image(ALLOWED), "--src-tls-verify=false")
        assert copied.returncode == 0, copied.stderr
        pushed = scene.bed.run(
            [
                "skopeo",
                "copy",
                "--dest-tls-verify=false",
                f"dir:{tmp_path / 'source' / 'copy'}",
                f"docker://{scene.image(PULL_ONLY, 'demo/pushed')}",
            ],
            env=PROXY_ENV,
            timeout=120,
        )
        assert pushed.returncode != 0
        assert f"Push to {PULL_ONLY}/demo/pushed" in pushed.stderr, pushed.stderr
    finally:
        policy.write_text(POLICY)
    wait_for(lambda: inspect("demo/hello").returncode != 0, 30, "the restored policy")


def test_connect_to_a_name_with_a_trailing_dot_is_dialled_as_the_policy_reads_it(
    scene: Scene,
) -> None:
    """`CONNECT allowed.registry.test.:5000` is allowed (the policy drops the dot) and must
    reach that registry: dialled as sent, the name misses the hosts file (a 502)."""
    talk = (
        "import socket\n"
        "s = socket.create_connection(('127.0.0.1', 3128), timeout=10)\n"
        "s.sendall(b'CONNECT ALLOWED.registry.test.:5000 HTTP/1.1\\r\\n\\r\\n')\n"
        "print(s.recv(4096).split(b'\\r\\n')[0].decode())\n"
        "s.sendall(b'GET /v2/ HTTP/1.1\\r\\nHost: allowed.registry.test:5000\\r\\n"
        "Connection: close\\r\\n\\r\\n')\n"
        "print(s.recv(4096).split(b'\\r\\n')[0].decode())\n"
    )
    answered = scene.bed.run([str(PYTHON), "-c", talk])
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.splitlines() == [
        "HTTP/1.1 200 Connection established",
        "HTTP/1.1 200 OK",
    ]


def test_standalone_proxy_command(scene: Scene, tmp_path: Path) -> None:
    """`regward agent proxy --policy FILE --listen ADDR` alone, used by skopeo."""
    policy = scene.bed.directory / "standalone.yaml"
    policy.write_text(f"organization: solo\nregistries:\n  - address: {TLS_OK}\n")
    listen = "127.0.0.1:3130"  # 3129: the running agent's loopback listener
    argv = [str(PYTHON), "-m", "regward.cli", "agent", "proxy", "--policy", str(policy)]
    process = scene.bed.spawn("standalone-proxy", [*argv, "--listen", listen], scene.agent_env())
    try:
        probe = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-x", f"http://{listen}"]
        scene.bed.wait_for(
            "the standalone proxy",
            lambda: scene.bed.run([*probe, "http://refused.invalid/"]).stdout == "403",
            process,
        )
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "ca.crt").write_bytes((scene.bed.directory / "pki" / "ca.crt").read_bytes())
        env = {"HTTPS_PROXY": f"http://{listen}", "HTTP_PROXY": f"http://{listen}"}
        copy = ["skopeo", "copy", f"--src-cert-dir={certs}"]
        ok = scene.bed.run(
            [*copy, f"docker://{scene.image(TLS_OK)}", f"dir:{tmp_path / 'ok'}"], env=env
        )
        assert ok.returncode == 0, ok.stderr
        refused = scene.bed.run(
            [*copy, f"docker://{scene.image(TLS_EVIL)}", f"dir:{tmp_path / 'no'}"], env=env
        )
        assert "Forbidden (Access to tls-evil.rwpx.test:443 is restricted by your " in (
            refused.stderr
        )
        assert "organization 'solo' (local policy file)" in refused.stderr
    finally:
        scene.bed.stop(process)


def test_push_through_the_proxy(scene: Scene) -> None:
    """Uploads go through too: absolute-form request bodies (plain HTTP) and CONNECT (TLS)."""
    bed = scene.bed
    assert bed.docker("pull", scene.image(ALLOWED)).returncode == 0
    for registry in (ALLOWED, TLS_OK):
        target = scene.image(registry, "rwpx/pushed", "v2")
        assert bed.docker("tag", scene.image(ALLOWED), target).returncode == 0
        result = bed.docker("push", target)
        assert result.returncode == 0, result.stderr
    refused_target = scene.image(TLS_EVIL, "rwpx/pushed", "v2")
    assert bed.docker("tag", scene.image(ALLOWED), refused_target).returncode == 0
    refused = bed.docker("push", refused_target)
    assert refused.returncode != 0
    assert f"Forbidden ({refusal(TLS_EVIL + ':443')})" in refused.stderr
