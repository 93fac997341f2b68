"""A policy reload that keeps a registry allowed is invisible to that registry's connections.

Issue 10 item 5: pulls through the proxy failed (EOF, 502) right after a reload that kept their
registry allowed. The cause: the agent re-read a policy file the moment it was being written in
place (a shell redirect, an editor, `write_text`), found a shorter policy that still parsed, and
enforced it until the next look, ending the open connections to the registries it lacked. Here
`regward agent run --policy FILE` (in-process) proxies many concurrent clients to a real
docker-registry on loopback while the file is rewritten that way again and again, each time
finishing the write only after the agent has looked at the half-written file.

`REGWARD_RELOAD_STRESS=N` sets the number of reloads (default 6, in `make test`);
`make stress-reload` runs 60 with 100 clients.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from regward.agent.runner import Agent, AgentOptions
from regward.agent.watch import SettledFiles
from tests.harness.server import free_port
from tests.harness.wait import until, wait_for

RELOADS = int(os.environ.get("REGWARD_RELOAD_STRESS", "6"))
CLIENTS = 100 if RELOADS > 6 else 40


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A docker-registry serving plain HTTP on 127.0.0.1; its port."""
    if shutil.which("docker-registry") is None:
        pytest.skip("needs docker-registry (scripts/setup.sh installs it)")
    work = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {work}/data\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port), 20, "docker-registry to listen")
        yield port
    finally:
        process.terminate()
        process.wait(10)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


def policy_text(revision: int, port: int) -> str:
    # The registry comes last, so a file cut short can parse without it.
    return (
        f"organization: acme\nrevision: {revision}\nregistries:\n"
        f"  - address: other{revision % 3}.example\n  - address: 127.0.0.1:{port}\n"
    )


def response_status(sock: socket.socket) -> bytes:
    """Read one response (head and Content-Length body); its status line."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"the connection closed before a response ({data[:80]!r})")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    length = next(
        (
            int(v)
            for n, _, v in (x.partition(b":") for x in lines)
            if n.lower() == b"content-length"
        ),
        0,
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the connection closed inside a response body")
        body += chunk
    return lines[0]


class Clients:
    """`count` threads, each asking the registry's /v2/ through the proxy until stopped:
    absolute-form requests and CONNECT tunnels carrying three requests, alternately."""

    def __init__(self, count: int, proxy: tuple[str, int], registry: int) -> None:
        self.proxy, self.registry = proxy, registry
        self.stop = threading.Event()
        self.done = [0] * count
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        authority = f"127.0.0.1:{self.registry}"
        while not self.stop.is_set():
            try:
                with socket.create_connection(self.proxy, 30) as sock:
                    if self.done[index] % 2:
                        sock.sendall(f"GET http://{authority}/v2/ HTTP/1.1\r\n\r\n".encode())
                        statuses = [response_status(sock)]
                    else:
                        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\n\r\n".encode())
                        statuses = [response_status(sock)]
                        for _ in range(3):
                            sock.sendall(f"GET /v2/ HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
                            statuses.append(response_status(sock))
                bad = [status for status in statuses if b" 200 " not in status]
                if bad:
                    raise AssertionError(bad[0].decode(errors="replace"))
            except (OSError, EOFError, AssertionError) as error:
                self.failures.append(f"client {index}: {error!r}")
            self.done[index] += 1

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)


def write_in_place(path: Path, text: str, files: SettledFiles) -> None:
    """Write `text` over `path` as a shell redirect does, in two parts, finishing only after
    the agent's watcher has looked at the half-written file."""
    cut = text.rindex("  - address:")
    with path.open("w") as stream:
        stream.write(text[:cut])
        stream.flush()
        seen = files.looks
        wait_for(lambda: files.looks > seen, 10, "the agent to look at the half-written file")
        stream.write(text[cut:])


def test_reloads_that_keep_a_registry_allowed_never_break_its_connections(
    registry: int, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(1, registry))
    options = AgentOptions(
        authz_socket=None,
        proxy_listen=("127.0.0.1", free_port()),
        policy_file=policy,
        state_dir=tmp_path / "state",
        registry_json=tmp_path / "registry.json",
    )
    agent = Agent(options)
    assert options.proxy_listen is not None

    def enforced() -> str | None:
        current = agent.guard.enforcement.policy
        return None if current is None else policy_text(current.revision, registry)

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        try:
            await until(lambda: agent.ready.is_set() or task.done(), 20, "the agent to start")
            clients = Clients(CLIENTS, options.proxy_listen, registry)  # type: ignore[arg-type]
            try:
                for revision in range(2, RELOADS + 2):
                    text = policy_text(revision, registry)
                    await asyncio.to_thread(write_in_place, policy, text, agent._files)
                    await until(
                        lambda text=text: enforced() == text,  # type: ignore[misc]
                        20,
                        "the rewritten policy to apply",
                    )
            finally:
                await asyncio.to_thread(clients.finish)
        finally:
            stop.set()
            await task
        assert clients.failures == []
        assert min(clients.done) > 0  # every client got through, more than once for most
        assert sum(clients.done) > CLIENTS

    asyncio.run(main())


def test_a_change_counts_once_it_has_settled_and_a_torn_read_is_read_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("one")
    files = SettledFiles([path, tmp_path / "absent.json"])
    assert files.changed() is None  # nothing new
    path.write_text("two, longer")
    assert files.changed() is None  # new, but maybe still being written
    stamps = files.changed()
    assert stamps is not None  # the same on two looks: complete
    path.write_text("three, written while two was read")
    assert not files.applied(stamps)  # what was read may be torn
    assert files.changed() is None
    again = files.changed()
    assert again is not None and again != stamps and files.applied(again)
    assert files.changed() is None
