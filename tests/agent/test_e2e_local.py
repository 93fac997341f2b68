"""End to end with a local policy file: `regward agent run --policy FILE` before a real dockerd.

One bed for the module (network namespace, two docker-registry instances, a real dockerd with
the agent as its authorization plugin); no Regward server is involved.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from regward.agent.install import RESTART_SECONDS
from tests.harness.bed import unavailable_reason
from tests.harness.scenario import ALLOWED, BLOCKED, PULL_ONLY, Scene
from tests.harness.wait import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
]

POLICY = """\
organization: acme
enabled: true
registries:
  - address: {allowed}
    nickname: team registry
  - address: {pull_only}
    actions: [pull]
"""


def write_policy(path: Path, text: str) -> None:
    path.write_text(text)


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    created = Scene.create("l")
    try:
        policy = created.bed.directory / "policy.yaml"
        write_policy(policy, POLICY.format(allowed=ALLOWED, pull_only=PULL_ONLY))
        created.start_agent(["--policy", str(policy)])
        created.bed.start_dockerd([f"--authorization-plugin={created.plugin_name}"])
        yield created
    finally:
        created.close()


@pytest.fixture
def policy_file(scene: Scene) -> Iterator[Path]:
    """The agent's policy file; restored after a test that edits it."""
    path = scene.bed.directory / "policy.yaml"
    original = path.read_text()
    yield path
    if path.read_text() != original:
        path.write_text(original)
        wait_for(
            lambda: scene.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0,
            30,
            "the restored policy to apply",
        )


def denial(registry: str) -> str:
    return f"Access to registry {registry} is restricted by your organization 'acme'"


def test_allowed_pull_and_run_work(scene: Scene) -> None:
    pulled = scene.bed.docker("pull", Scene.image(ALLOWED))
    assert pulled.returncode == 0, pulled.stderr
    ran = scene.bed.docker("run", "--rm", "--network", "none", Scene.image(ALLOWED))
    assert ran.returncode == 0, ran.stderr
    assert "hello from regward test image" in ran.stdout


def test_disallowed_pull_fails_with_the_message(scene: Scene) -> None:
    result = scene.bed.docker("pull", Scene.image(BLOCKED))
    assert result.returncode != 0
    assert f"authorization denied by plugin {scene.plugin_name}" in result.stderr
    assert denial(BLOCKED) in result.stderr
    assert "(local policy file)" in result.stderr
    assert scene.bed.docker("image", "inspect", Scene.image(BLOCKED)).returncode != 0


def test_disallowed_run_fails_with_the_message(scene: Scene) -> None:
    result = scene.bed.docker("run", "--rm", "--network", "none", Scene.image(BLOCKED))
    assert result.returncode == 125
    assert denial(BLOCKED) in result.stderr


def test_docker_hub_short_names_are_normalized_and_refused(scene: Scene) -> None:
    # Not on the list: refused by the plugin before dockerd could try to reach Docker Hub.
    result = scene.bed.docker("pull", "alpine")
    assert result.returncode != 0
    assert denial("docker.io") in result.stderr


def test_push_to_a_pull_only_entry_fails_and_push_to_a_full_entry_works(scene: Scene) -> None:
    assert scene.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0
    pull_only = Scene.image(PULL_ONLY, "demo/pushed", "v2")
    full = Scene.image(ALLOWED, "demo/pushed", "v2")
    assert scene.bed.docker("tag", Scene.image(ALLOWED), pull_only).returncode == 0
    assert scene.bed.docker("tag", Scene.image(ALLOWED), full).returncode == 0
    refused = scene.bed.docker("push", pull_only)
    assert refused.returncode != 0
    assert f"Push to {PULL_ONLY}/demo/pushed is restricted" in refused.stderr
    pushed = scene.bed.docker("push", full)
    assert pushed.returncode == 0, pushed.stderr
    # Pulling through the pull-only name is allowed.
    assert scene.bed.docker("pull", pull_only).returncode == 0


def test_policy_file_change_applies_and_covers_images_already_present(
    scene: Scene, policy_file: Path
) -> None:
    assert scene.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0
    write_policy(
        policy_file,
        "organization: acme\nenabled: true\nregistries:\n  - address: other.example\n",
    )

    def refused() -> bool:
        result = scene.bed.docker("run", "--rm", "--network", "none", Scene.image(ALLOWED))
        return result.returncode == 125 and denial(ALLOWED) in result.stderr

    # The image is on the machine, but creating a container from it is not allowed any more.
    wait_for(refused, 30, "the edit to apply")
    assert scene.bed.docker("image", "inspect", Scene.image(ALLOWED)).returncode == 0


def test_other_endpoints_are_not_affected(scene: Scene) -> None:
    assert scene.bed.docker("ps").returncode == 0
    assert scene.bed.docker("images").returncode == 0
    assert scene.bed.docker("info").returncode == 0


def test_docker_import_says_why_it_is_refused_and_the_build_it_suggests_works(
    scene: Scene, tmp_path: Path
) -> None:
    """`docker import FILE` sends the archive as a body the plugin is not shown, so it is
    refused; the refusal says how to make the same image with a build, and that build works."""
    (tmp_path / "rootfs").mkdir()
    (tmp_path / "rootfs" / "greeting").write_text("made here\n")
    archive = tmp_path / "rootfs.tar"
    subprocess.run(["tar", "-C", str(tmp_path / "rootfs"), "-cf", str(archive), "."], check=True)
    imported = scene.bed.docker("import", str(archive), "rt/imported:v1")
    assert imported.returncode != 0
    assert f"authorization denied by plugin {scene.plugin_name}" in imported.stderr
    assert "docker import sends its archive (a file or standard input)" in imported.stderr
    assert "'FROM scratch' and 'ADD rootfs.tar /'" in imported.stderr
    (tmp_path / "Dockerfile").write_text("FROM scratch\nADD rootfs.tar /\n")
    try:
        built = scene.bed.docker("build", "-q", "-t", "rt/imported:v1", str(tmp_path))
        assert built.returncode == 0, built.stderr
        inspected = scene.bed.docker("image", "inspect", "rt/imported:v1")
        assert inspected.returncode == 0, inspected.stderr
    finally:
        scene.bed.docker("rmi", "rt/imported:v1")


HOSTILE: list[bytes] = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'{"RequestUri": 5}',
    b'{"RequestMethod":"POST","RequestUri":"/v1.41/images/create?fromImage=%s/demo/hello&tag=v1",'
    b'"requesturi":"/v1.41/images/create?fromImage=%s/demo/hello&tag=v1"}',
    b'{"REQUESTURI":"/v1.41/images/create?fromImage=%s/demo/hello"}',
    b'{"RequestUri":"/v1.41/images/create?fromImage=%s/demo/hello",'
    b'"RequestHeaders":{"Content-Type":"application/x-www-form-urlencoded"}}',
    b'{"RequestUri":"/v1.41/images/create?fromImage=%s/demo/hello&fromImage=%s/demo/hello"}',
    b'{"RequestUri":"/v1.41//images/./create?fromImage=%s/demo/hello"}',
    b'{"RequestUri":"/v1.41/images%%2Fcreate?fromImage=%s/demo/hello"}',
    b'{"RequestUri":"/v1.41/containers/create","RequestHeaders":{"Content-Length":"0"}}',
    b'{"RequestUri":"/v1.41/containers/create","RequestBody":"!!!not base64"}',
]


def hostile_requests() -> list[bytes]:
    allowed, blocked = ALLOWED.encode(), BLOCKED.encode()
    requests = []
    for template in HOSTILE:
        count = template.count(b"%s")
        values = (allowed, blocked)[-count:] if count == 2 else (blocked,) * count
        requests.append(template % values if count else template.replace(b"%%", b"%"))
    for body in (
        {"Image": Scene.image(ALLOWED), "image": Scene.image(BLOCKED)},
        {"\u212aey": 1, "IMAGE": Scene.image(BLOCKED)},
        {"Image": 7},
    ):
        encoded = base64.b64encode(json.dumps(body).encode()).decode()
        requests.append(
            json.dumps(
                {
                    "RequestUri": "/v1.41/containers/create",
                    "RequestHeaders": {"Content-Type": "application/json"},
                    "RequestBody": encoded,
                }
            ).encode()
        )
    duplicated = (
        b'{"RequestUri":"/v1.41/containers/create","RequestBody":"'
        + base64.b64encode(
            b'{"Image":"'
            + BLOCKED.encode()
            + b'/demo/hello:v1","Image":"'
            + ALLOWED.encode()
            + b'/demo/hello:v1"}'
        )
        + b'"}'
    )
    requests.append(duplicated)
    huge = base64.b64encode(b'{"Image":"' + b"a" * (6 * 1024 * 1024) + b'"}')
    requests.append(b'{"RequestUri":"/v1.41/containers/create","RequestBody":"' + huge + b'"}')
    return requests


def test_hostile_authz_requests_never_crash_the_plugin_or_let_a_pull_through(
    scene: Scene,
) -> None:
    for request in hostile_requests():
        answer = scene.authz(request)
        assert answer["Allow"] is False, request[:300]
        assert isinstance(answer["Msg"], str) and answer["Msg"]
    assert scene.agent is not None and scene.agent.alive()
    # Still enforcing, still serving dockerd.
    assert scene.bed.docker("pull", Scene.image(BLOCKED)).returncode != 0
    assert scene.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0


def test_registry_json_without_sign_in_refuses(scene: Scene) -> None:
    scene.registry_json.write_text('{"allowedOrgs": ["globex"]}')
    try:
        scene.start_agent([])  # no policy file, not signed in
        result = scene.bed.docker("pull", Scene.image(ALLOWED))
        assert result.returncode != 0
        assert "Sign-in to organization 'globex' is required" in result.stderr
        assert "regward login" in result.stderr
        assert scene.bed.docker("ps").returncode == 0  # only registry requests are refused
    finally:
        scene.registry_json.unlink()
        scene.start_agent(["--policy", str(scene.bed.directory / "policy.yaml")])
    assert scene.bed.docker("pull", Scene.image(ALLOWED)).returncode == 0


def engine_api(scene: Scene, method: str, path: str, body: bytes = b"", ctype: str = "") -> str:
    """A raw Engine API call on dockerd's socket (what a hostile client could send)."""
    import socket as sockets

    assert scene.bed.dockerd is not None
    headers = f"{method} {path} HTTP/1.1\r\nHost: docker\r\nContent-Length: {len(body)}\r\n"
    if ctype:
        headers += f"Content-Type: {ctype}\r\n"
    with sockets.socket(sockets.AF_UNIX) as client:
        client.settimeout(60)
        client.connect(str(scene.bed.dockerd.socket))
        client.sendall(headers.encode() + b"Connection: close\r\n\r\n" + body)
        chunks = []
        while chunk := client.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def test_smuggling_a_pull_past_the_plugin_through_dockerd_fails(scene: Scene) -> None:
    blocked = Scene.image(BLOCKED)
    scene.bed.docker("rmi", blocked)
    attempts = [
        # Go's ParseForm reads a form-encoded body before the query; the plugin never sees it.
        (
            f"/v1.41/images/create?fromImage={ALLOWED}/demo/hello&tag=v1",
            f"fromImage={BLOCKED}/demo/hello&tag=v1".encode(),
            "application/x-www-form-urlencoded",
        ),
        # Go's Form.Get takes the first value; every value is checked.
        (f"/v1.41/images/create?fromImage={BLOCKED}/demo/hello&fromImage=x&tag=v1", b"", ""),
        # Case and path games.
        (f"/v1.41//images/./create?fromImage={BLOCKED}/demo/hello&tag=v1", b"", ""),
        (f"/v1.41/images%2Fcreate?fromImage={BLOCKED}/demo/hello&tag=v1", b"", ""),
    ]
    for path, body, ctype in attempts:
        answer = engine_api(scene, "POST", path, body, ctype)
        assert scene.bed.docker("image", "inspect", blocked).returncode != 0, (path, answer[:300])
    container = json.dumps({"Image": Scene.image(ALLOWED), "image": blocked}).encode()
    answer = engine_api(scene, "POST", "/v1.41/containers/create", container, "application/json")
    assert "authorization denied" in answer


def curl_engine(scene: Scene, method: str, target: str) -> str:
    """`curl --unix-socket docker.sock --request-target TARGET`: the target as a client writes
    it (absolute form, "#" and all), which no HTTP library would send as is."""
    assert scene.bed.dockerd is not None
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--max-time",
            "60",
            "--unix-socket",
            str(scene.bed.dockerd.socket),
            "-X",
            method,
            "-H",
            "Content-Length: 0",
            "--request-target",
            target,
            "http://d/",
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    return result.stdout + result.stderr


BLOCKED_REPO = f"{BLOCKED}/demo/hello"
# The reproductions and their siblings: every query-reading sink, with "#" (absolute and
# origin form), "%23", ";" and a bad escape in front of the parameter dockerd acts on.
TARGET_ATTACKS = [
    ("POST", f"http://d/v1.41/images/create?x=#&fromImage={BLOCKED_REPO}&tag=v1"),
    ("POST", f"http://d/v1.41/images/create?fromImage={BLOCKED_REPO}&tag=v1#"),
    ("POST", f"/v1.41/images/create?x=#&fromImage={BLOCKED_REPO}&tag=v1"),
    ("POST", f"/v1.41/images/create?x=%23&fromImage={BLOCKED_REPO}&tag=v1"),
    ("POST", f"http://d/v1.41/images/create?x=;&fromImage={BLOCKED_REPO}&tag=v1"),
    ("POST", f"http://d/v1.41/images/create?x=%zz&fromImage={BLOCKED_REPO}&tag=v1"),
    ("POST", f"http://d/v1.41/images/create?x=#&fromSrc=http://{BLOCKED}/x.tar&repo=r/i"),
    ("POST", f"http://d/v1.41/build?x=#&remote=http://{BLOCKED}/ctx.tar"),
    ("POST", f"http://d/v1.41/build?x=#&cachefrom=%5B%22{BLOCKED_REPO}%3Av1%22%5D"),
    ("POST", f"http://d/v1.41/build?x=;&remote=http://{BLOCKED}/ctx.tar"),
    ("GET", f"http://d/v1.41/images/search?x=#&term={BLOCKED}/demo"),
    ("POST", f"http://d/v1.41/plugins/pull?x=#&remote={BLOCKED}/demo/plugin:v1&name=p"),
    ("POST", f"http://d/v1.41/images/{ALLOWED}/demo/hello/push?x=#&tag=v1;"),
]


@pytest.mark.parametrize(("method", "target"), TARGET_ATTACKS)
def test_request_targets_are_read_as_dockerd_reads_them(
    scene: Scene, method: str, target: str
) -> None:
    blocked = Scene.image(BLOCKED)
    scene.bed.docker("rmi", blocked)
    answer = curl_engine(scene, method, target)
    assert f"authorization denied by plugin {scene.plugin_name}" in answer, answer[:400]
    assert scene.bed.docker("image", "inspect", blocked).returncode != 0


def test_an_absolute_form_pull_from_an_allowed_registry_still_works(scene: Scene) -> None:
    allowed = Scene.image(ALLOWED)
    scene.bed.docker("rmi", allowed)
    answer = curl_engine(
        scene, "POST", f"http://d/v1.41/images/create?x=%23&fromImage={ALLOWED}/demo/hello&tag=v1"
    )
    assert "authorization denied" not in answer, answer[:400]
    assert scene.bed.docker("image", "inspect", allowed).returncode == 0


def image_id(scene: Scene, name: str) -> str:
    result = scene.bed.docker("image", "inspect", "--format", "{{.Id}}", name)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_images_made_here_and_images_from_allowed_registries_run_by_any_name(
    scene: Scene,
) -> None:
    allowed = Scene.image(ALLOWED)
    assert scene.bed.docker("pull", allowed).returncode == 0
    full = image_id(scene, allowed)
    # Pulled from the allowed registry: its short ID reads as docker.io/library/<id> as a pull.
    for name in (full[len("sha256:") :][:12], full):
        ran = scene.bed.docker("run", "--rm", "--network", "none", name)
        assert ran.returncode == 0, (name, ran.stderr)
        assert "hello from regward test image" in ran.stdout
    # Made on this machine (a commit; a build or a load is the same): no registry gave it.
    scene.bed.docker("rm", "-f", "made-here")
    assert scene.bed.docker("create", "--name", "made-here", allowed).returncode == 0
    assert scene.bed.docker("commit", "made-here", "rt/app:v1").returncode == 0
    scene.bed.docker("rm", "-f", "made-here")
    try:
        for name in ("rt/app:v1", image_id(scene, "rt/app:v1")[len("sha256:") :][:12]):
            ran = scene.bed.docker("run", "--rm", "--network", "none", name)
            assert ran.returncode == 0, (name, ran.stderr)
        # Asking for a pull of that name asks Docker Hub, which the policy refuses.
        pulled = scene.bed.docker(
            "run", "--pull", "always", "--rm", "--network", "none", "rt/app:v1"
        )
        assert pulled.returncode != 0
        assert denial("docker.io") in pulled.stderr
    finally:
        scene.bed.docker("rmi", "rt/app:v1")


def test_an_image_from_a_refused_registry_stays_refused_under_any_name(
    scene: Scene, policy_file: Path
) -> None:
    blocked = Scene.image(BLOCKED)
    original = policy_file.read_text()
    # The blocked registry was allowed once, long enough to pull from it.
    write_policy(policy_file, original + f"  - address: {BLOCKED}\n")
    wait_for(lambda: scene.bed.docker("pull", blocked).returncode == 0, 30, "the blocked pull")
    write_policy(policy_file, original)
    wait_for(
        lambda: denial(BLOCKED) in scene.bed.docker("pull", blocked).stderr,
        30,
        "the blocked registry to be refused again",
    )
    full = image_id(scene, blocked)
    assert scene.bed.docker("tag", blocked, "rt/laundered:v1").returncode == 0
    try:
        for name in (blocked, full, full[len("sha256:") :][:12], "rt/laundered:v1"):
            ran = scene.bed.docker("run", "--rm", "--network", "none", name)
            assert ran.returncode == 125, (name, ran.stdout, ran.stderr)
            assert denial(BLOCKED) in ran.stderr, (name, ran.stderr)
    finally:
        scene.bed.docker("rmi", "rt/laundered:v1", blocked)


def test_a_container_whose_image_is_now_refused_cannot_start(
    scene: Scene, policy_file: Path
) -> None:
    """`docker start` decides the image the container holds (by ID, as dockerd will run it), so
    neither a container made while a registry was allowed nor a tag moved between the create
    check and the create runs a refused image; a container of an image made here still starts."""
    blocked = Scene.image(BLOCKED)
    original = policy_file.read_text()
    write_policy(policy_file, original + f"  - address: {BLOCKED}\n")
    wait_for(lambda: scene.bed.docker("pull", blocked).returncode == 0, 30, "the blocked pull")
    for name in ("then-allowed", "then-allowed-rm", "made-here"):
        scene.bed.docker("rm", "-f", name)
    created = scene.bed.docker("create", "--name", "then-allowed", "--network", "none", blocked)
    assert created.returncode == 0, created.stderr
    created = scene.bed.docker("create", "--rm", "--name", "then-allowed-rm", blocked)
    assert created.returncode == 0, created.stderr
    write_policy(policy_file, original)
    try:
        wait_for(
            lambda: denial(BLOCKED) in scene.bed.docker("start", "then-allowed").stderr,
            30,
            "the start to be refused",
        )
        assert scene.bed.docker("restart", "then-allowed").returncode != 0
        # `docker run --rm` waits for its container to go; a refused start removes it.
        refused = scene.bed.docker("start", "then-allowed-rm")
        assert denial(BLOCKED) in refused.stderr
        wait_for(
            lambda: scene.bed.docker("inspect", "then-allowed-rm").returncode != 0,
            30,
            "the refused --rm container to be removed",
        )
        assert scene.bed.docker("commit", "then-allowed", "rt/made:v1").returncode == 0
        made = scene.bed.docker("create", "--name", "made-here", "--network", "none", "rt/made:v1")
        assert made.returncode == 0, made.stderr
        started = scene.bed.docker("start", "-a", "made-here")
        assert started.returncode == 0, started.stderr
        missing = scene.bed.docker("start", "no-such-container")
        assert "No such container" in missing.stderr and "authorization" not in missing.stderr
    finally:
        scene.bed.docker("rm", "-f", "then-allowed", "then-allowed-rm", "made-here")
        scene.bed.docker("rmi", "rt/made:v1", blocked)


def test_a_killed_agent_fails_docker_closed_and_the_units_restart_recovers(
    scene: Scene,
) -> None:
    """SIGKILL the agent under dockerd. While it is away every call is refused by dockerd itself
    (it cannot ask the plugin; after its ~30 s of retries the call fails), even an allowed pull.
    Restarted as `regward agent install`'s unit does (Restart=always after RESTART_SECONDS), it
    answers on the same socket; a call made while it was away waits and then gets its decision."""
    assert scene.agent is not None
    allowed, args = Scene.image(ALLOWED), scene.agent_args
    dockerd_log = scene.bed.directory / "dockerd.log"
    assert scene.bed.docker("pull", allowed).returncode == 0
    seen = len(dockerd_log.read_bytes())
    killed = time.monotonic()
    os.kill(scene.agent.pid, signal.SIGKILL)
    scene.agent.popen.wait(10)

    refused = scene.bed.docker("pull", allowed)
    gave_up = time.monotonic()
    assert refused.returncode != 0
    assert f"plugin {scene.plugin_name} failed with error" in refused.stderr, refused.stderr
    assert "connection refused" in refused.stderr, refused.stderr
    assert b"Unable to connect to plugin" in dockerd_log.read_bytes()[seen:]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asked = time.monotonic()
        held = pool.submit(
            scene.bed.docker, "run", "--rm", "--network", "none", allowed, timeout=60
        )
        # As systemd would: the unit restarts the agent RESTART_SECONDS after it died (a
        # modelled delay, not a wait for a condition).
        time.sleep(RESTART_SECONDS)
        restarted = time.monotonic()
        scene.start_agent(args)
        back = time.monotonic()
        ran = held.result()
        answered = time.monotonic()
    assert ran.returncode == 0, ran.stderr
    assert "hello from regward test image" in ran.stdout
    result = scene.bed.docker("pull", Scene.image(BLOCKED))
    assert denial(BLOCKED) in result.stderr
    print(
        f"dockerd refused calls after {gave_up - killed:.1f} s of retries; the unit's restart "
        f"gives an outage of {RESTART_SECONDS + back - restarted:.2f} s per crash "
        f"({RESTART_SECONDS} s RestartSec + {back - restarted:.2f} s until the plugin answers); "
        f"the call made meanwhile got its answer after {answered - asked:.2f} s"
    )
