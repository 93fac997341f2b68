"""Several processes on one address, so new connections use every core: the egress proxy's
(`ProxySettings`) or the transparent listener's (`TransparentSettings`, its IPv4 and IPv6
sockets), as `served` says.

    workers = ProxyWorkers(settings, guard, count=os.cpu_count())
    await workers.start()          # the address listens; every worker accepts on it
    guard.watch(workers.recheck)   # a new enforcement reaches every worker, then applies
    await workers.close()

The parent binds the listening sockets and shares them with `count - 1` worker processes
(`python -m regward.agent.proxy.worker`, each a `ProxyServer` or `TransparentListener` with its
own `Guard`); they and one more on the parent's own loop all accept from the same queues (the
parent serving too saves a whole process of memory). The sockets belong to the parent, so
they listen for as long as the parent runs: a worker that dies loses only the connections it
had taken, and the parent starts a new one in its place (after 0.1 s, doubling to 10 s while
new ones keep dying young).

The parent keeps the one real `Guard` (fed by sync or the policy file) and hands every new
enforcement to the workers, and to its own server's guard, in two steps: `prepare` carries it
to every worker, and only when all have it does `commit` make them use it, and end their open
connections it refuses. So no loop decides under a revision before every one holds it; a
worker started meanwhile starts with the revision all the others use. A worker that does not
confirm in time is stopped (and replaced): a worker that may enforce an old policy must not
go on deciding.

Workers send back their denial reports (they reach the server with the parent's, each with
the container or interface it came from), their decisions (counted in the parent's metrics as
if made there), their open connections, relayed bytes and probes of unknown TLS servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from typing import Any

from regward.agent.guard import Enforcement, Guard

from . import served
from .server import ProxyServer
from .settings import ProxySettings

log = logging.getLogger("regward.agent.proxy")

CONFIRM_TIMEOUT = 10.0  # seconds a worker has to take or apply a new enforcement
START_TIMEOUT = 60.0  # seconds a worker has to start accepting
RESTART_FIRST = 0.1  # seconds before a dead worker's replacement starts
RESTART_MAX = 10.0  # the longest wait, reached by doubling while replacements die young
STABLE = 30.0  # a worker that lived this long resets the wait
DEFAULT_WORKERS = os.cpu_count() or 1  # one event loop per core
MAX_WORKERS = 256


@dataclasses.dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes]
    conn: Connection
    started: float
    delay: float  # the wait before this worker's replacement starts, should it die
    alive: bool = True  # False once its connection to the parent ended
    ready: bool = False  # True once it accepts
    connections: int = 0
    relayed: tuple[int, int] = (0, 0)
    probes: int = 0
    prepared: int = 0  # the newest generation this worker holds (it may not use it yet)
    replies: asyncio.Queue[tuple[Any, ...]] = dataclasses.field(default_factory=asyncio.Queue)


class ProxyWorkers:
    """`count` event loops accepting on the address `settings` names: this process's own
    and `count - 1` worker processes. The parent's `guard` decides what they all enforce."""

    def __init__(self, settings: served.Settings, guard: Guard, count: int) -> None:
        self.settings = settings
        self.guard = guard
        self.count = count
        self.address: tuple[str, int] = ("", 0)  # the first listening socket's, once bound
        self.generation = 0  # the enforcement every worker has committed
        self.restarts = 0  # workers started in place of dead ones
        self._committed: Enforcement = guard.enforcement
        # This process's own loop serves too (one process fewer to keep in memory), with a
        # guard of its own that takes a new enforcement at the commit step, as the workers do;
        # its refusals and decisions are the parent guard's.
        self._local_guard = Guard(guard.enforcement, queue=guard.denials)
        self._local_guard.observer = guard.observed
        self.local = served.make(settings, self._local_guard)
        self._workers: list[_Worker] = []
        self._sockets: list[socket.socket] = []
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()  # a distribution and a worker's start never interleave
        self._tasks: set[asyncio.Task[None]] = set()
        self._relayed_gone = (0, 0)  # bytes relayed by workers that have exited
        self._closing = False
        self._what = served.kind(settings)  # what they serve, for log lines

    @property
    def connections(self) -> int:
        alive = (worker.connections for worker in self._workers if worker.alive)
        return self.local.connections + sum(alive)

    @property
    def probes(self) -> int:
        """Unknown TLS servers probed by every loop so far (the transparent listener's)."""
        return served.probes(self.local) + sum(worker.probes for worker in self._workers)

    @property
    def revision(self) -> int | None:
        """The policy revision every loop has committed (None: no policy)."""
        policy = self._committed.policy
        return policy.revision if policy is not None else None

    def bytes_relayed(self) -> tuple[int, int]:
        up, down = self.local.bytes_relayed()
        up, down = up + self._relayed_gone[0], down + self._relayed_gone[1]
        for worker in self._workers:
            up, down = up + worker.relayed[0], down + worker.relayed[1]
        return up, down

    async def start(self) -> None:
        """Listen, start every worker, return when all accept."""
        self._sockets = served.bind(self.settings)  # ConfigError names the address
        self.address = self._sockets[0].getsockname()[:2]
        try:
            self._workers = [self._spawn(index, RESTART_FIRST) for index in range(self.count - 1)]
            async with asyncio.timeout(START_TIMEOUT):
                for worker in self._workers:
                    await self._ready(worker)
            await served.start(self.local, self._sockets)
            self._local_guard.watch(self.local.recheck)
        except BaseException:
            await self.close()
            raise
        self._run(self._distribute(), "proxy-workers-policy")
        served.announce_address(self.settings, self._sockets)
        log.info("%s: %d workers on the same address", self._what, self.count)

    def _spawn(self, index: int, delay: float) -> _Worker:
        """Start worker `index` on the shared listeners, enforcing what every worker uses."""
        if not self._sockets:
            raise RuntimeError("workers start only while their address listens")
        parent, child = socket.socketpair()
        fds = (child.fileno(), *(sock.fileno() for sock in self._sockets))
        try:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, our module, numbers
                [sys.executable, "-m", "regward.agent.proxy.worker", *map(str, fds)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        conn = Connection(parent.detach())
        loop = asyncio.get_running_loop()
        worker = _Worker(index, process, conn, loop.time(), delay)
        conn.send(("start", self.settings, self._committed))
        loop.add_reader(conn.fileno(), self._receive, worker)
        return worker

    async def _ready(self, worker: _Worker) -> None:
        reply = await worker.replies.get()
        if reply[0] != "ready":
            detail = reply[1] if reply[0] == "failed" else "it exited"
            raise OSError(f"a {self._what} worker could not start: {detail}")
        worker.ready = True

    def recheck(self) -> None:
        """The guard's enforcement changed: hand it to every worker (a guard watcher)."""
        self._changed.set()

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            self._gone(worker)
            return
        kind = message[0]
        if kind == "report":
            _, denials, decisions, worker.connections, worker.relayed, worker.probes = message
            for report in denials:
                self.guard.denials.put(report)
            for point, allowed, seconds in decisions:
                self.guard.observed(point, allowed, seconds)
        else:
            worker.replies.put_nowait(message)

    def _gone(self, worker: _Worker) -> None:
        """A worker's connection ended: it exited (or is about to); replace it."""
        asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        worker.alive = False
        up, down = self._relayed_gone
        self._relayed_gone = (up + worker.relayed[0], down + worker.relayed[1])
        worker.relayed = (0, 0)
        worker.replies.put_nowait(("gone",))
        if not self._closing:
            self._run(self._replace(worker), f"proxy-worker-{worker.index}-restart")

    async def _replace(self, dead: _Worker) -> None:
        loop = asyncio.get_running_loop()
        dead.conn.close()
        if dead.process.poll() is None:
            dead.process.kill()
        code = await asyncio.to_thread(dead.process.wait)
        lived = loop.time() - dead.started
        delay = RESTART_FIRST if lived >= STABLE else dead.delay
        log.error(
            "%s worker %d (pid %d) exited with %s after %.1f s; starting another in %.1f s",
            self._what,
            dead.index,
            dead.process.pid,
            code,
            lived,
            delay,
        )
        await asyncio.sleep(delay)
        async with self._lock:
            if self._closing:
                return
            worker = self._spawn(dead.index, min(RESTART_MAX, delay * 2))
            self._workers[dead.index] = worker
            self.restarts += 1
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    await self._ready(worker)
            except (OSError, TimeoutError) as error:
                log.error("%s worker %d did not start: %s", self._what, dead.index, error)
                worker.process.kill()  # its connection ends, and the next attempt waits longer
                return
        log.info("%s worker %d running again (pid %d)", self._what, dead.index, worker.process.pid)

    async def _distribute(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            async with self._lock:
                generation, enforcement = self.generation + 1, self.guard.enforcement
                prepare = ("prepare", generation, enforcement)
                await self._confirm(self._send(prepare), "prepared", generation)
                # Every worker holds it (and this process): now all use it.
                live = self._send(("commit", generation))
                self._local_guard.update(enforcement)  # and recheck() ends what it refuses
                await self._confirm(live, "committed", generation)
                self.generation, self._committed = generation, enforcement
                log.info("%s: every worker enforces revision %s", self._what, self.revision)

    def _send(self, message: tuple[Any, ...]) -> list[_Worker]:
        """Send `message` to every live worker; the workers it went to."""
        live = [worker for worker in self._workers if worker.alive]
        for worker in live:
            with contextlib.suppress(OSError):
                worker.conn.send(message)
        return live

    async def _confirm(self, live: list[_Worker], expected: str, generation: int) -> None:
        """Wait for each of `live` to confirm; stop any that does not."""
        for worker in live:
            try:
                async with asyncio.timeout(CONFIRM_TIMEOUT):
                    reply = await worker.replies.get()
            except TimeoutError:
                reply = ("timeout",)
            if reply == ("prepared", generation):
                worker.prepared = generation
            if reply != (expected, generation):
                log.error(
                    "%s worker %d did not take the new policy (%s); stopping it",
                    self._what,
                    worker.index,
                    reply[0],
                )
                worker.process.kill()

    def _run(self, coroutine: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every worker: they stop accepting and let open connections finish briefly."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(("stop",))
        await self.local.close()  # meanwhile the workers finish theirs
        wait = served.shutdown_grace(self.settings) + CONFIRM_TIMEOUT
        for worker in self._workers:
            try:
                await asyncio.to_thread(worker.process.wait, wait)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                await asyncio.to_thread(worker.process.wait)
            if worker.alive:
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
        self._workers = []
        for sock in self._sockets:
            sock.close()
        self._sockets = []


async def start_proxy(
    settings: ProxySettings, guard: Guard, workers: int
) -> ProxyServer | ProxyWorkers:
    """The proxy on `settings`, enforcing what `guard` does: in this process for one worker,
    else in `workers` processes; a new enforcement also ends the connections it refuses."""
    proxy: ProxyServer | ProxyWorkers
    if workers > 1:
        proxy = ProxyWorkers(settings, guard, workers)
    else:
        proxy = ProxyServer.for_guard(settings, guard)
    await proxy.start()
    guard.watch(proxy.recheck)
    return proxy


def parse_workers(text: str) -> int:
    """`--workers N`: a whole number from 1 to 256."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(f"{text!r} is not a number of workers from 1 to {MAX_WORKERS}")
    return int(text)
