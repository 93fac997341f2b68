"""The transparent listener served by several processes, and plain HTTP kept alive through
it, end to end: `regward agent run --workers 2` (loopback only, the default) in the bed's
private network namespace, with the scene's real registries (tests/harness/scenario.py):

    allowed.registry.test:5000   127.0.0.2   an entry of every revision here
    pullonly.registry.test:5000  127.0.0.2   the same registry: an entry of revision 1 only
    blocked.registry.test:5000   127.0.0.3   never an entry

Connections are made from inside the namespace by the test process itself (`Bed.connect`), so
the agent's output chain redirects them as it would any process's there. Which process took a
connection is read from the kernel (`ss -p` on the listener's port), never guessed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from regward.agent.guard import DenialReport, Enforcement, Guard
from regward.agent.transparent import TransparentSettings
from regward.agent.transparent.service import Transparent
from regward.policy import Policy
from tests.agent.test_proxy import Responses
from tests.harness.bed import enter_netns, unavailable_reason
from tests.harness.scenario import Scene
from tests.harness.wait import wait_for

_MISSING = [tool for tool in ("nft", "ss") if subprocess.run(["which", tool]).returncode]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason())),
    pytest.mark.skipif(bool(_MISSING), reason=f"missing {_MISSING}; run scripts/setup.sh"),
]

LISTEN_PORT = 3129
METRICS = 9464
REGISTRY = ("127.0.0.2", 5000)
WORKER_MODULE = b"regward.agent.proxy.worker"


T = TypeVar("T")
ALLOWED = "allowed.registry.test:5000"
PULL_ONLY = "pullonly.registry.test:5000"
BLOCKED = "blocked.registry.test:5000"
MANIFEST = "/v2/demo/hello/manifests/v1"


def policy(revision: int, *addresses: str) -> str:
    lines = [f"organization: acme\nrevision: {revision}\nregistries:{'' if addresses else ' []'}"]
    lines += [f"  - address: {address}" for address in addresses]
    return "\n".join(lines) + "\n"


def apply(scene: Scene, revision: int, *addresses: str) -> None:
    """Write the policy file and wait until every process of the agent enforces it."""
    (scene.bed.directory / "policy.yaml").write_text(policy(revision, *addresses))
    wait_for(
        lambda: f"transparent listener: every worker enforces revision {revision}" in log(scene),
        30,
        f"every process to take revision {revision}",
    )


def refusal(subject: str, revision: int) -> str:
    return (
        f"Access to {subject} is restricted by your organization 'acme' (policy revision "
        f"{revision}). Ask an owner of 'acme' to add it to the allowed registries."
    )


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    created = Scene.create("tw")
    try:
        path = created.bed.directory / "policy.yaml"
        path.write_text(policy(1, "allowed.registry.test:5000", "pullonly.registry.test:5000"))
        args = ["--policy", str(path), "--workers", "2"]
        created.start_agent([*args, "--metrics-listen", f"127.0.0.1:{METRICS}"])
        created.bed.wait_for(
            "the transparent listener's workers",
            lambda: "transparent listener: 2 workers on the same address" in log(created),
            created.agent,
        )
        created.bed.wait_for("the rules", lambda: rules(created), created.agent)
        yield created
    finally:
        created.close()


def revision(scene: Scene) -> int:
    """The revision the agent enforces."""
    return int(json.loads(scene.regward("status", "--json").stdout)["revision"])


def log(scene: Scene) -> str:
    assert scene.agent is not None
    return scene.agent.log.read_text(errors="replace")


def rules(scene: Scene) -> bool:
    return scene.bed.run(["nft", "list", "table", "inet", "regward"]).returncode == 0


def workers(scene: Scene) -> list[int]:
    """The agent's worker processes (children running the worker module)."""
    assert scene.agent is not None
    pid = scene.agent.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    found = []
    for child in map(int, children):
        try:
            if WORKER_MODULE in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except FileNotFoundError:
            continue  # exited meanwhile
    return found


def acceptors(scene: Scene) -> set[int]:
    """The processes holding accepted connections on the listener's port."""
    listed = scene.bed.run(["ss", "-tnpH", "state", "established", f"( sport = :{LISTEN_PORT} )"])
    return {int(pid) for pid in re.findall(r"pid=(\d+)", listed.stdout)}


def held_by_every_process(scene: Scene, every: set[int] | None = None) -> list[socket.socket]:
    """Connections to the registry's address that have sent nothing yet (the listener holds
    them, waiting for the client's first bytes), until every process of the agent (or of
    `every`) holds some."""
    assert scene.agent is not None or every is not None
    every = every or {scene.agent.pid, *workers(scene)}  # type: ignore[union-attr]
    held: list[socket.socket] = []
    for _ in range(100):
        held.append(scene.bed.connect(*REGISTRY))
        if every <= acceptors(scene):
            return held
    raise AssertionError(f"100 connections and not every one of {every} accepted one")


def get(sock: socket.socket, host: str, path: str) -> tuple[bytes, bytes]:
    """Send `GET path` for `host` on `sock`; the response head and body (Content-Length)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while length and len(body) < int(length[1]):
        chunk = sock.recv(65536)
        assert chunk, "closed in the middle of a response body"
        body += chunk
    return head, body


def metric(scene: Scene, name: str) -> float:
    """One sample of the agent's metrics page (0 when absent)."""
    with scene.bed.connect("127.0.0.1", METRICS) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        page = b""
        while chunk := sock.recv(65536):
            page += chunk
    found = re.search(rb"(?m)^" + re.escape(name.encode()) + rb" ([0-9.e+]+)$", page)
    return float(found[1]) if found else 0.0


def test_status_says_how_many_processes_serve_the_listener(scene: Scene) -> None:
    assert len(workers(scene)) == 1
    status = scene.regward("status")
    assert "served by 2 processes" in status.stdout, status.stdout
    assert '"workers": 2' in scene.regward("status", "--json").stdout


def test_a_new_revision_reaches_every_process_before_it_decides(scene: Scene) -> None:
    allowed, pull = "allowed.registry.test:5000", "pullonly.registry.test:5000"
    manifest = "/v2/demo/hello/manifests/v1"
    with scene.bed.connect(*REGISTRY) as sock:
        assert get(sock, pull, manifest)[0].startswith(b"HTTP/1.1 200 ")  # revision 1 allows it
    held = held_by_every_process(scene)
    queued = metric(scene, "regward_agent_denial_reports_queued")
    try:
        apply(scene, 2, allowed)
        for sock in held:  # held by every process: each decides under revision 2
            head, body = get(sock, pull, manifest)
            assert head.startswith(b"HTTP/1.1 403 Forbidden"), head
            assert refusal(pull, 2).encode() in body
    finally:
        for sock in held:
            sock.close()
    # Every process's refusals are the parent's denial reports, each from where it came.
    wait_for(
        lambda: metric(scene, "regward_agent_denial_reports_queued") == queued + len(held),
        30,
        "the workers' denial reports to reach the parent",
    )
    assert "transparent refused pullonly.registry.test:5000/demo/hello:v1 from this machine" in log(
        scene
    )
    apply(scene, 3, allowed, pull)


def test_a_killed_worker_is_replaced_and_the_new_one_serves(scene: Scene) -> None:
    (old,) = workers(scene)
    os.kill(old, signal.SIGKILL)
    new = wait_for(lambda: [pid for pid in workers(scene) if pid != old], 30, "a new worker")
    wait_for(
        lambda: re.search(r"transparent listener worker 0 running again \(pid \d+\)", log(scene)),
        30,
        "the new worker to accept",
    )
    held = held_by_every_process(scene)  # the new one among them
    try:
        assert new[0] in acceptors(scene)
        for sock in held:
            head, body = get(sock, "allowed.registry.test:5000", "/v2/demo/hello/tags/list")
            assert head.startswith(b"HTTP/1.1 200 "), head
            assert b'"demo/hello"' in body
    finally:
        for sock in held:
            sock.close()


# ---- plain HTTP kept alive: every request decided by its own Host and path ------------------


def request(host: str, path: str, method: str = "GET", *fields: str) -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {host}", *fields, "", ""]).encode()


def test_plain_http_keeps_its_connection_and_its_pipelined_requests(scene: Scene) -> None:
    with scene.bed.connect(*REGISTRY) as sock:
        responses = Responses(sock)
        sock.sendall(request(ALLOWED, "/v2/"))
        head, _ = responses.next()
        assert head.startswith(b"HTTP/1.1 200 ") and b"Connection: close" not in head
        # Two at once: both answered, in order, on the same connection.
        sock.sendall(request(ALLOWED, "/v2/demo/hello/tags/list") + request(ALLOWED, MANIFEST))
        head, body = responses.next()
        assert head.startswith(b"HTTP/1.1 200 ") and b'"tags":["v1"]' in body
        head, body = responses.next()
        assert head.startswith(b"HTTP/1.1 200 ") and b"schemaVersion" in body
        # HEAD: a length and no body; the connection goes on.
        sock.sendall(request(ALLOWED, MANIFEST, "HEAD") + request(ALLOWED, "/v2/"))
        head = responses.head()
        assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Length: " in head
        assert responses.next()[0].startswith(b"HTTP/1.1 200 ")
        sock.sendall(request(ALLOWED, "/v2/", "GET", "Connection: close"))
        head, _ = responses.next()
        assert b"Connection: close" in head
        assert responses.rest() == b""  # closed, as the client asked


def test_a_host_spelled_with_a_trailing_dot_or_uppercase_reaches_the_registry_decided(
    scene: Scene,
) -> None:
    """`Host: ALLOWED.registry.test.:5000` is decided as allowed.registry.test:5000 and the
    agent dials that very name (the hosts file knows no trailing dot): the registry answers."""
    for host in ("allowed.registry.test.:5000", "ALLOWED.Registry.Test.:5000"):
        with scene.bed.connect(*REGISTRY) as sock:
            head, body = get(sock, host, MANIFEST)
        assert head.startswith(b"HTTP/1.1 200 "), (host, head)
        assert json.loads(body)["name"] == "demo/hello"  # schema 1: no Accept was sent


@pytest.mark.parametrize(
    ("second", "subject"),
    [
        (request(BLOCKED, MANIFEST), BLOCKED),  # another host
        (request("mirror.example:5000", MANIFEST), "mirror.example:5000"),  # a /v2/ path
        # Pipelined behind the first in the same bytes.
        (request(PULL_ONLY, MANIFEST, "HEAD") + request(BLOCKED, MANIFEST), BLOCKED),
    ],
    ids=["another-host", "v2-path-of-an-unknown-host", "pipelined"],
)
def test_a_second_request_on_a_kept_connection_is_decided_by_itself(
    scene: Scene, second: bytes, subject: str
) -> None:
    with scene.bed.connect(*REGISTRY) as sock:
        responses = Responses(sock)
        sock.sendall(request(ALLOWED, MANIFEST, "HEAD") + second)
        assert responses.head().startswith(b"HTTP/1.1 200 ")
        if second.startswith(b"HEAD"):
            assert responses.head().startswith(b"HTTP/1.1 200 ")
        head, body = responses.next()
        assert head.startswith(b"HTTP/1.1 403 Forbidden"), head
        assert refusal(subject, revision(scene)).encode() in body
        assert b"Connection: close" in head and responses.rest() == b""
    assert f"transparent refused {subject}/demo/hello:v1 from this machine" in log(scene)


CONFLICTS = [
    "Content-Length: 4\r\nTransfer-Encoding: chunked",
    "Transfer-Encoding: chunked\r\nContent-Length: 4",
    "Content-Length: 4\r\nContent-Length: 41",
    "Transfer-Encoding: gzip, chunked",
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
]


@pytest.mark.parametrize("framing", CONFLICTS)
@pytest.mark.parametrize("position", ["first", "second"])
def test_conflicting_framing_is_400_and_nothing_behind_it_passes(
    scene: Scene, framing: str, position: str
) -> None:
    """Request smuggling: a body two readers could delimit differently, hiding a request for
    a refused registry. The listener answers 400 and ends the connection, whether the request
    comes first or on a kept connection."""
    hidden = request(BLOCKED, MANIFEST)
    smuggler = request(ALLOWED, "/v2/", "POST", framing) + b"0\r\n\r\n" + hidden
    with scene.bed.connect(*REGISTRY) as sock:
        responses = Responses(sock)
        if position == "second":
            sock.sendall(request(ALLOWED, "/v2/"))
            assert responses.next()[0].startswith(b"HTTP/1.1 200 ")
        sock.sendall(smuggler)
        head, _ = responses.next()
        assert head.startswith(b"HTTP/1.1 400 Bad Request"), head
        assert responses.rest() == b""


def test_a_chunked_body_ends_where_its_framing_says_and_the_next_request_is_decided(
    scene: Scene,
) -> None:
    upload = request(ALLOWED, "/v2/demo/hello/blobs/uploads/", "POST", "Transfer-Encoding: chunked")
    with scene.bed.connect(*REGISTRY) as sock:
        responses = Responses(sock)
        sock.sendall(upload + b"0\r\n\r\n" + request(BLOCKED, MANIFEST))
        assert responses.next()[0].startswith(b"HTTP/1.1 202 ")
        head, body = responses.next()
        assert head.startswith(b"HTTP/1.1 403 Forbidden"), head
        assert refusal(BLOCKED, revision(scene)).encode() in body


def held_after_a_request(scene: Scene) -> list[socket.socket]:
    """Connections that each got a response from the allowed registry and stay open, until
    every process of the agent holds some."""
    assert scene.agent is not None
    every = {scene.agent.pid, *workers(scene)}
    held: list[socket.socket] = []
    for _ in range(100):
        sock = scene.bed.connect(*REGISTRY)
        held.append(sock)
        head, _ = get(sock, ALLOWED, "/v2/")
        assert head.startswith(b"HTTP/1.1 200 ")
        if every <= acceptors(scene):
            return held
    raise AssertionError(f"100 connections and not every one of {every} accepted one")


def test_kept_connections_to_a_registry_a_new_revision_refuses_end_in_every_process(
    scene: Scene,
) -> None:
    held = held_after_a_request(scene)
    try:
        apply(scene, 4)  # nothing allowed
        for sock in held:
            sock.settimeout(30)
            assert sock.recv(1) == b"", "a kept connection outlived its registry's removal"
    finally:
        for sock in held:
            sock.close()
        apply(scene, 5, ALLOWED, PULL_ONLY)


# ---- the parent's own view (last: it stops the scene's agent) -------------------------------


class InNamespace:
    """An event loop on a thread of this process that entered the bed's namespace: what runs
    on it (the listener, the nft command, the worker processes it starts) is the namespace's,
    and the test reads the parent's guard directly."""

    def __init__(self, scene: Scene) -> None:
        self.loop = asyncio.new_event_loop()
        entered = threading.Event()

        def run() -> None:
            enter_netns(scene.bed.name)
            entered.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert entered.wait(10)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(120)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_every_processs_refusals_are_the_parents_denial_reports_with_their_origin(
    scene: Scene,
) -> None:
    scene.stop_agent()  # its table and port are this test's now
    policy = Policy.from_dict(
        {"organization": "acme", "revision": 9, "registries": [{"address": ALLOWED}]}
    )
    guard = Guard(Enforcement("local", policy, "acme"))
    decisions: list[tuple[str, bool]] = []
    guard.observer = lambda point, allowed, seconds: decisions.append((point, allowed))
    settings = TransparentSettings(interfaces=(), listen_port=LISTEN_PORT)
    here = InNamespace(scene)
    transparent = Transparent(settings, guard, workers=2)
    try:
        here.call(transparent.start())
        (worker,) = transparent.listener._workers  # type: ignore[union-attr]
        held = held_by_every_process(scene, {os.getpid(), worker.process.pid})
        try:
            for sock in held:
                head, body = get(sock, BLOCKED, MANIFEST)
                assert head.startswith(b"HTTP/1.1 403 Forbidden"), head
                assert refusal(BLOCKED, 9).encode() in body
        finally:
            for sock in held:
                sock.close()
        reports: list[DenialReport] = []

        def all_reported() -> bool:
            reports.extend(guard.denials.drain())
            return len(reports) >= len(held)

        wait_for(all_reported, 30, "every process's denial reports in the parent's queue")
        assert len(reports) == len(held)
        for report in reports:
            assert (report.source, report.origin) == ("transparent", "from this machine")
            assert report.target == f"{BLOCKED}/demo/hello:v1" and report.action == "pull"
        wait_for(
            lambda: decisions.count(("transparent", False)) >= len(held),
            30,
            "every process's decisions in the parent's metrics",
        )
    finally:
        here.call(transparent.close())
        here.close()
    assert not rules(scene)


async def _listening(address: tuple[str, int]) -> socket.socket:
    """A listening socket made on the namespace's loop thread (so it is the namespace's)."""
    server = socket.create_server(address)
    server.settimeout(30)
    return server


@pytest.mark.parametrize("first", ["client", "server"], ids=["client-bytes", "server-banner"])
def test_a_relay_that_moves_nothing_is_closed_after_the_idle_timeout(
    scene: Scene, first: str
) -> None:
    """A relayed connection that goes quiet ends after `idle_timeout`, whichever side spoke
    first: bytes that are neither TLS nor HTTP passed to their server, or a server that speaks
    first. Without the sweep both sides would hold it (and its descriptors) forever."""
    scene.stop_agent()  # its table and port are this test's now
    policy = Policy.from_dict(
        {"organization": "acme", "revision": 9, "registries": [{"address": ALLOWED}]}
    )
    guard = Guard(Enforcement("local", policy, "acme"))
    settings = TransparentSettings(interfaces=(), listen_port=LISTEN_PORT, idle_timeout=0.5)
    here = InNamespace(scene)
    transparent = Transparent(settings, guard)
    server = here.call(_listening(("127.0.0.9", 443)))
    try:
        here.call(transparent.start())
        with scene.bed.connect("127.0.0.9", 443) as client:
            if first == "client":
                client.sendall(b"hello, not a registry\n")
            upstream, _ = server.accept()
            with upstream:
                upstream.settimeout(30)
                if first == "client":
                    assert upstream.recv(65536) == b"hello, not a registry\n"
                else:
                    upstream.sendall(b"220 ready\r\n")
                    assert client.recv(65536) == b"220 ready\r\n"
                assert transparent.listener.connections == 1
                # Nobody says anything more: the sweep ends both sides.
                assert client.recv(65536) == b"", "an idle relay outlived its idle timeout"
                assert upstream.recv(65536) == b""
        wait_for(lambda: transparent.listener.connections == 0, 30, "the connection forgotten")
    finally:
        server.close()
        here.call(transparent.close())
        here.close()
    assert not rules(scene)


def test_transparent_host_holds_this_machines_connections_to_any_address(scene: Scene) -> None:
    """A client on this machine that ignores the proxy variables (or a container on the host's
    network) reaching a registry at an address that is not loopback: by default its connection
    goes straight there; with `host` (--transparent-host) it is decided like a container's."""
    scene.stop_agent()  # its table and port are this test's now
    bed = scene.bed
    address = bed.ip(2)  # the namespace's veth: not a loopback address
    bed.add_host("far.registry.test", address)
    bed.start_registry("far", f"{address}:5000")

    def fetch() -> tuple[bytes, bytes]:
        with bed.connect(address, 5000) as sock:
            return get(sock, "far.registry.test:5000", "/v2/")

    bed.wait_for("the far registry", fetch)
    policy = Policy.from_dict(
        {"organization": "acme", "revision": 9, "registries": [{"address": ALLOWED}]}
    )
    guard = Guard(Enforcement("local", policy, "acme"))
    here = InNamespace(scene)
    try:
        for host in (False, True):
            settings = TransparentSettings(interfaces=(), listen_port=LISTEN_PORT, host=host)
            transparent = Transparent(settings, guard)
            here.call(transparent.start())
            try:
                head, body = fetch()
            finally:
                here.call(transparent.close())
            if host:
                assert head.startswith(b"HTTP/1.1 403 Forbidden (Access to far.registry"), head
                assert refusal("far.registry.test:5000", 9).encode() in body
            else:
                assert head.startswith(b"HTTP/1.1 200 "), head
    finally:
        here.close()
    assert not rules(scene)


def test_plain_http_requests_are_held_to_an_entrys_repositories_and_actions(
    scene: Scene,
) -> None:
    """Plain HTTP shows the repository (`/v2/NAME/...`) and, by the method, pull or push: an
    entry narrowed to repositories or to pull is held as the AuthZ plugin holds it, not only
    by host, for clients that reach a registry by themselves (containers, loopback)."""
    scene.stop_agent()  # its table and port are this test's now
    # By address: this process's threads share the host's /etc/hosts, not the namespace's.
    registry = "127.0.0.2:5000"
    policy = Policy.from_dict(
        {
            "organization": "acme",
            "revision": 9,
            "registries": [{"address": registry, "repositories": ["demo/*"], "actions": ["pull"]}],
        }
    )
    guard = Guard(Enforcement("local", policy, "acme"))
    settings = TransparentSettings(interfaces=(), listen_port=LISTEN_PORT)
    here = InNamespace(scene)
    transparent = Transparent(settings, guard)

    def ask(host: str, method: str, path: str) -> tuple[bytes, bytes]:
        with scene.bed.connect(*REGISTRY) as sock:
            sock.sendall(
                f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        return head, body

    try:
        here.call(transparent.start())
        head, _ = ask(registry, "GET", MANIFEST)
        assert head.startswith(b"HTTP/1.1 200 "), head
        head, body = ask(registry, "GET", "/v2/other/hello/manifests/v1")
        assert head.startswith(b"HTTP/1.1 403 Forbidden (Pull of 127.0.0.2:5000/other/hello"), head
        assert b"is restricted by your organization 'acme'" in body
        head, body = ask(registry, "POST", "/v2/demo/hello/blobs/uploads/")
        assert head.startswith(b"HTTP/1.1 403 Forbidden (Push to 127.0.0.2:5000/demo/hello"), head
        # A name the registry reads otherwise than we do is refused, never guessed at.
        head, _ = ask(registry, "GET", "/v2/demo/../other/hello/manifests/v1")
        assert head.startswith(b"HTTP/1.1 403 "), head
        head, _ = ask(registry, "GET", "/v2/%6fther/hello/manifests/v1")
        assert head.startswith(b"HTTP/1.1 403 "), head
        # The registry routes by the decoded, cleaned path: `/%762/` is its `/v2/`.
        for path in ("/%762/other/hello/manifests/v1", "//v2/other/hello/manifests/v1"):
            head, _ = ask(registry, "GET", path)
            assert head.startswith(b"HTTP/1.1 403 Forbidden (Pull of 127.0.0.2:5000/other"), head
        # A host the policy does not name: any spelling of a registry path is refused.
        head, _ = ask("127.0.0.3:5000", "GET", "/%762/demo/hello/manifests/v1")
        assert head.startswith(b"HTTP/1.1 403 "), head
        reports = guard.denials.drain()
        assert [(report.action, report.origin) for report in reports] == [
            ("pull", "from this machine"),
            ("push", "from this machine"),
            ("pull", "from this machine"),
            ("pull", "from this machine"),
            ("pull", "from this machine"),
            ("pull", "from this machine"),
            ("pull", "from this machine"),
        ]
    finally:
        here.call(transparent.close())
        here.close()
    assert not rules(scene)
