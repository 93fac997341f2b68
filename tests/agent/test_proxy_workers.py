"""Several proxy worker processes on one address enforce one policy revision together.

A new enforcement reaches every worker before any of them decides under it (while one worker
is stopped with SIGSTOP, the others keep answering under the old revision), and open tunnels
to a host the new revision refuses are ended in every worker. COUNT event loops: the parent's
own (this test's loop thread, asyncio's) and COUNT - 1 worker processes (uvloop, or asyncio's).
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from regward.agent.guard import Enforcement, Guard
from regward.agent.proxy import ProxySettings
from regward.agent.proxy import workers as workers_module
from regward.agent.proxy.loop import EVENT_LOOPS, EventLoop
from regward.agent.proxy.workers import ProxyWorkers
from regward.policy import parse_policy_text
from tests.agent.test_proxy import Upstream, read_all, read_head
from tests.harness.wait import wait_for

T = TypeVar("T")
COUNT = 3


def enforcement(revision: int, *addresses: str) -> Enforcement:
    document = {
        "organization": "acme",
        "revision": revision,
        "registries": [{"address": address} for address in ["never.example", *addresses]],
    }
    policy = parse_policy_text(json.dumps(document), "policy.json")
    return Enforcement(mode="local", policy=policy, organization="acme")


class Running:
    """ProxyWorkers on an event loop thread of the test, for blocking test clients."""

    def __init__(self, guard: Guard, event_loop: EventLoop = "uvloop") -> None:
        self.guard = guard
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = ProxySettings(port=0, event_loop=event_loop)
        self.workers = ProxyWorkers(settings, guard, COUNT)
        self.call(self.workers.start())
        self.guard_watch()

    def guard_watch(self) -> None:
        self.loop.call_soon_threadsafe(self.guard.watch, self.workers.recheck)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(120)

    def update(self, new: Enforcement) -> None:
        self.loop.call_soon_threadsafe(self.guard.update, new)

    def connect(self, request: bytes) -> socket.socket:
        sock = socket.create_connection(self.workers.address, 30)
        sock.sendall(request)
        return sock

    def close(self) -> None:
        self.call(self.workers.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def echo() -> Iterator[Upstream]:
    upstream = Upstream()
    yield upstream
    upstream.close()


BLOCKED = b"CONNECT blocked.example:443 HTTP/1.1\r\n\r\n"


def revision_of(head: bytes) -> int:
    """The revision a 403 names (the one the answering worker decided under)."""
    assert head.startswith(b"HTTP/1.1 403 "), head
    return int(head.split(b"policy revision ")[1].split(b")")[0])


def refused_revision(running: Running) -> int:
    """Ask for a host no revision allows; the revision the answering worker refused it under."""
    with running.connect(BLOCKED) as sock:
        return revision_of(read_head(sock))


def hold_tunnels(running: Running, allowed: str, workers: list[Any]) -> list[socket.socket]:
    """Open tunnels to `allowed` until each of `workers` and the parent's own loop serves some."""
    tunnels: list[socket.socket] = []
    for _ in range(200):
        if running.workers.local.connections and all(w.connections > 0 for w in workers):
            break
        tunnels.append(running.connect(f"CONNECT {allowed} HTTP/1.1\r\n\r\n".encode()))
        assert read_head(tunnels[-1]).startswith(b"HTTP/1.1 200 ")
        wait_for(
            lambda: running.workers.connections == len(tunnels),
            10,
            "the workers to report their tunnels",
        )
    assert all(worker.connections > 0 for worker in workers)
    return tunnels


def readable(socks: list[socket.socket], at_least: int) -> list[socket.socket]:
    ready, _, _ = select.select(socks, [], [], 0)
    return ready if len(ready) >= at_least else []


@pytest.mark.parametrize("event_loop", EVENT_LOOPS)
def test_a_new_revision_reaches_every_worker_before_any_decides_under_it(
    echo: Upstream, event_loop: EventLoop
) -> None:
    """On either event loop the workers run (uvloop by default, asyncio's by choice)."""
    allowed = f"127.0.0.1:{echo.port}"
    running = Running(Guard(enforcement(1, allowed)), event_loop)
    try:
        workers = running.workers._workers
        assert len(workers) == COUNT - 1 and running.workers.generation == 0
        for worker in workers:  # each worker process runs the loop its settings name
            maps = Path(f"/proc/{worker.process.pid}/maps").read_text()
            assert ("/uvloop/loop." in maps) == (event_loop == "uvloop")
        # Tunnels until every loop holds some (whichever is free accepts the next connection).
        tunnels = hold_tunnels(running, allowed, workers)
        assert running.workers.local.connections > 0

        stopped = workers[1].process.pid
        os.kill(stopped, signal.SIGSTOP)
        try:
            running.update(enforcement(2))  # refuses the echo upstream
            wait_for(lambda: workers[0].prepared == 1, 30, "worker 0 to hold revision 2")
            # Probes: those the kernel gives worker 1 wait; worker 0 answers the others.
            probes = [running.connect(BLOCKED) for _ in range(20)]
            answered = wait_for(lambda: readable(probes, 5), 30, "worker 0 to answer probes")
            answers = {revision_of(read_head(sock)) for sock in answered}
            assert running.workers.generation == 0  # worker 1 has not taken revision 2 yet
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert answers == {1}, "a worker decided under revision 2 before every worker had it"
        for sock in probes:
            sock.close()

        wait_for(lambda: running.workers.generation == 1, 30, "every worker to take revision 2")
        assert {refused_revision(running) for _ in range(20)} == {2}
        for sock in tunnels:  # every worker ended its tunnels to the refused host
            assert read_all(sock) == b""
            sock.close()
        wait_for(lambda: running.workers.connections == 0, 10, "the workers to report none open")
    finally:
        running.close()


def answered(running: Running, count: int) -> int:
    """Connect `count` times, one after another; how many got an answer (each is refused)."""
    got = 0
    for _ in range(count):
        with running.connect(BLOCKED) as sock:
            got += read_head(sock).startswith(b"HTTP/1.1 403 ")
    return got


def test_a_dead_worker_is_replaced_and_the_address_never_stops_accepting(echo: Upstream) -> None:
    allowed = f"127.0.0.1:{echo.port}"
    decisions: list[tuple[str, bool]] = []
    guard = Guard(enforcement(1, allowed))
    guard.observer = lambda point, ok, seconds: decisions.append((point, ok))
    running = Running(guard)
    try:
        workers = running.workers._workers
        dead = workers[1]
        killed = dead.process.pid
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: not dead.alive, 30, "the parent to see the worker gone")
        assert answered(running, 20) == 20  # the others answer meanwhile
        wait_for(lambda: running.workers.restarts == 1, 30, "a new worker in place of the dead")
        new = running.workers._workers[1]
        assert new.process.pid != killed
        tunnels = hold_tunnels(running, allowed, [new])  # the new worker serves
        for sock in tunnels:
            sock.close()
        # Every loop's refusals are the parent's: reported and counted in its metrics.
        wait_for(lambda: len(decisions) >= 20 + len(tunnels), 30, "the workers' decisions")
        assert set(decisions) == {("proxy", False), ("proxy", True)}
        reports = guard.denials.drain()
        assert len(reports) == 20 and {r.target for r in reports} == {"blocked.example:443"}
    finally:
        running.close()


def test_a_worker_process_loads_no_signing_and_no_command_line() -> None:
    """What keeps each worker small: it decides, so it never loads `cryptography` (signature
    checks are the parent's) nor the command line's dependencies."""
    code = "import sys, regward.agent.proxy.worker; print(sorted(sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "'regward.agent.guard'" in loaded  # it did load what it serves with
    for heavy in ("'cryptography'", "'httpx'", "'regward.agent.sync'", "'regward.cli'"):
        assert heavy not in loaded


def test_a_worker_that_does_not_take_a_new_revision_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(workers_module, "CONFIRM_TIMEOUT", 1.0)
    running = Running(Guard(enforcement(1)))
    try:
        stuck = running.workers._workers[0]
        os.kill(stuck.process.pid, signal.SIGSTOP)  # never confirms; SIGKILL still ends it
        running.update(enforcement(2))
        wait_for(lambda: running.workers.generation == 1, 30, "the others to take revision 2")
        wait_for(lambda: running.workers.restarts == 1, 30, "a worker in place of the stuck one")
        new = running.workers._workers[0]
        assert new.process.pid != stuck.process.pid and stuck.process.poll() is not None
        wait_for(lambda: new.ready, 30, "the new worker to accept")
        # Every loop that answers (the new one started with revision 2) refuses under it only.
        assert {refused_revision(running) for _ in range(30)} == {2}
    finally:
        running.close()
