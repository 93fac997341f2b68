"""Several proxy processes on one address, so new connections use every core.

    workers = ProxyWorkers(settings, guard, count=os.cpu_count())
    await workers.start()          # every worker listens (SO_REUSEPORT); workers.address
    guard.watch(workers.recheck)   # a new enforcement reaches every worker, then applies
    await workers.close()

Each worker is a process of its own (`multiprocessing`, spawned) running a `ProxyServer` with
its own `Guard` on the same host and port; the kernel spreads new connections over them. The
parent keeps the one real `Guard` (fed by sync or the policy file) and hands every new
enforcement to the workers in two steps: `prepare` carries it to every worker, and only when
all have it does `commit` make them use it, and end their open connections it refuses. So no
worker decides under a revision before every worker holds it. A worker that does not confirm
in time is stopped: a worker that may enforce an old policy must not go on deciding.

Workers send their denial reports back (they reach the server with the parent's), and their
open connections and relayed bytes for the parent's metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import socket
from multiprocessing.connection import Connection
from typing import Any

from regward.agent.guard import DenialReport, Enforcement, Guard

from .server import ProxyServer
from .settings import ProxySettings

log = logging.getLogger("regward.agent.proxy")

CONFIRM_TIMEOUT = 10.0  # seconds a worker has to take or apply a new enforcement
START_TIMEOUT = 60.0  # seconds a worker has to start listening
REPORT_INTERVAL = 1.0  # seconds between a worker's reports (denials, connections, bytes)
DEFAULT_WORKERS = os.cpu_count() or 1  # one event loop per core
MAX_WORKERS = 256


@dataclasses.dataclass
class _Worker:
    process: Any  # multiprocessing.Process (spawn context)
    conn: Connection
    connections: int = 0
    relayed: tuple[int, int] = (0, 0)
    prepared: int = 0  # the newest generation this worker holds (it may not use it yet)
    replies: asyncio.Queue[tuple[Any, ...]] = dataclasses.field(default_factory=asyncio.Queue)


class ProxyWorkers:
    """`count` proxy processes sharing `settings.host`/`settings.port`; the parent's `guard`
    decides what they all enforce."""

    def __init__(self, settings: ProxySettings, guard: Guard, count: int) -> None:
        self.settings = dataclasses.replace(settings, reuse_port=True)
        self.guard = guard
        self.count = count
        self.address: tuple[str, int] = (settings.host, settings.port)
        self.generation = 0  # the enforcement every worker has committed
        self._workers: list[_Worker] = []
        self._changed = asyncio.Event()
        self._distributor: asyncio.Task[None] | None = None

    @property
    def connections(self) -> int:
        return sum(worker.connections for worker in self._workers)

    def bytes_relayed(self) -> tuple[int, int]:
        ups, downs = zip(*(worker.relayed for worker in self._workers), strict=True)
        return sum(ups), sum(downs)

    async def start(self) -> None:
        """Start every worker on the same address; return when all listen."""
        loop = asyncio.get_running_loop()
        reservation = _reserve(self.settings)  # port 0: one port for all, chosen here
        self.settings = dataclasses.replace(self.settings, port=reservation.getsockname()[1])
        self.address = (self.settings.host, self.settings.port)
        context = multiprocessing.get_context("spawn")
        try:
            for index in range(self.count):
                parent, child = context.Pipe()
                process = context.Process(
                    target=_worker_main,
                    args=(child, self.settings, self.guard.enforcement),
                    name=f"regward-proxy-{index}",
                    daemon=True,
                )
                process.start()
                child.close()
                worker = _Worker(process, parent)
                self._workers.append(worker)
                loop.add_reader(parent.fileno(), self._receive, worker)
            async with asyncio.timeout(START_TIMEOUT):
                for worker in self._workers:
                    reply = await worker.replies.get()
                    if reply[0] != "ready":
                        raise OSError(f"a proxy worker could not start: {reply[1]}")
        except BaseException:
            await self.close()
            raise
        finally:
            reservation.close()
        self._distributor = loop.create_task(self._distribute(), name="proxy-workers-policy")
        log.info("proxy: %d workers on the same address", self.count)

    def recheck(self) -> None:
        """The guard's enforcement changed: hand it to every worker (a guard watcher)."""
        self._changed.set()

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
            worker.replies.put_nowait(("gone",))
            return
        kind = message[0]
        if kind == "report":
            _, denials, worker.connections, worker.relayed = message
            for report in denials:
                self.guard.denials.put(report)
        else:
            worker.replies.put_nowait(message)

    async def _distribute(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            generation, enforcement = self.generation + 1, self.guard.enforcement
            await self._step(("prepare", generation, enforcement), "prepared", generation)
            await self._step(("commit", generation), "committed", generation)
            self.generation = generation

    async def _step(self, message: tuple[Any, ...], expected: str, generation: int) -> None:
        """Send `message` to every worker and wait for each to confirm; stop any that does not."""
        live = [worker for worker in self._workers if worker.process.is_alive()]
        for worker in live:
            with contextlib.suppress(OSError):
                worker.conn.send(message)
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
                    "proxy worker %s did not take the new policy (%s); stopping it",
                    worker.process.name,
                    reply[0],
                )
                worker.process.kill()

    async def close(self) -> None:
        """Stop every worker: they stop accepting and let open connections finish briefly."""
        if self._distributor is not None:
            self._distributor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._distributor
            self._distributor = None
        loop = asyncio.get_running_loop()
        for worker in self._workers:
            with contextlib.suppress(OSError, ValueError):
                worker.conn.send(("stop",))
        wait = self.settings.shutdown_grace + CONFIRM_TIMEOUT
        for worker in self._workers:
            await asyncio.to_thread(worker.process.join, wait)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, CONFIRM_TIMEOUT)
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(worker.conn.fileno())
            worker.conn.close()
        self._workers = []


async def start_proxy(
    settings: ProxySettings, guard: Guard, workers: int
) -> ProxyServer | ProxyWorkers:
    """The proxy on `settings`, enforcing what `guard` does: in this process for one worker,
    else in `workers` processes; a new enforcement also ends the connections it refuses."""
    proxy: ProxyServer | ProxyWorkers
    if workers > 1:
        proxy = ProxyWorkers(settings, guard, workers)
    else:
        proxy = ProxyServer(settings, guard.decide_host, guard.message)
    await proxy.start()
    guard.watch(proxy.recheck)
    return proxy


def parse_workers(text: str) -> int:
    """`--workers N`: a whole number from 1 to 256."""
    if not text.isdigit() or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError(f"{text!r} is not a number of workers from 1 to {MAX_WORKERS}")
    return int(text)


def _reserve(settings: ProxySettings) -> socket.socket:
    """A socket bound (not listening) to the workers' address with SO_REUSEPORT, so port 0
    becomes one port that every worker then binds too."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((settings.host, settings.port))
    except BaseException:
        sock.close()
        raise
    return sock


def _worker_main(conn: Connection, settings: ProxySettings, enforcement: Enforcement) -> None:
    from regward import logs

    logs.configure()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_worker(conn, settings, enforcement))


async def _worker(conn: Connection, settings: ProxySettings, enforcement: Enforcement) -> None:
    """One worker: serve, take enforcements from the parent in two steps, report."""
    loop = asyncio.get_running_loop()
    guard = Guard(enforcement)
    server = ProxyServer(settings, guard.decide_host, guard.message)
    try:
        await server.start()
    except Exception as error:
        conn.send(("failed", str(error)))
        return
    guard.watch(server.recheck)
    conn.send(("ready", server.address))
    stop = asyncio.Event()
    pending: dict[int, Enforcement] = {}

    def report() -> None:
        denials: list[DenialReport] = guard.denials.drain()
        conn.send(("report", denials, server.connections, server.bytes_relayed()))

    def receive() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone: stop too
            stop.set()
            return
        if message[0] == "prepare":
            _, generation, new = message
            pending[generation] = new
            conn.send(("prepared", generation))
        elif message[0] == "commit":
            generation = message[1]
            guard.update(pending.pop(generation))  # and recheck() ends what it refuses
            report()
            conn.send(("committed", generation))
        elif message[0] == "stop":
            stop.set()

    loop.add_reader(conn.fileno(), receive)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REPORT_INTERVAL):
                    await stop.wait()
            with contextlib.suppress(OSError):
                report()
    finally:
        loop.remove_reader(conn.fileno())
        await server.close()
        conn.close()
