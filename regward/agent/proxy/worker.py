"""One worker process, started by `ProxyWorkers` (`regward.agent.proxy.workers`):

    python -m regward.agent.proxy.worker CONN_FD LISTENER_FD...

It accepts on the listening sockets the parent shares with every worker (LISTENER_FD: the
proxy's, or the transparent listener's IPv4 and IPv6) and enforces what the parent hands it
over CONN_FD (a socket pair; `multiprocessing.connection` framing, pickled tuples):

    parent -> worker   ("start", settings, enforcement)     first, once; the settings'
                                                            type says what it serves
                       ("prepare", generation, enforcement) hold it, do not use it yet
                       ("commit", generation)               use it; end what it refuses
                       ("stop",)                            stop accepting, finish, exit
    worker -> parent   ("ready",) or ("failed", why)
                       ("prepared", generation), ("committed", generation)
                       ("report", denials, decisions, connections, (up, down), probes)
                                                            every REPORT_INTERVAL, and at
                                                            each commit

`decisions` are (enforcement point, allowed, seconds) of the decisions made since the last
report, for the parent's metrics; `probes` the unknown TLS servers it probed. The worker
imports what serving needs and nothing more (no command line, no signing), so each one stays
small. It stops when the parent goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from multiprocessing.connection import Connection

from regward.agent.guard import DenialReport, Enforcement, Guard

from . import served
from .loop import run_on, settle_collector

REPORT_INTERVAL = 1.0  # seconds between a worker's reports (denials, decisions, connections)


def main(argv: list[str]) -> int:
    from regward import logs

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its workers itself
    conn_fd, *listener_fds = (int(arg) for arg in argv)
    logs.configure()
    conn = Connection(conn_fd)
    listeners = [socket.socket(fileno=fd) for fd in listener_fds]
    message = conn.recv()
    if message[0] != "start":
        raise SystemExit(f"a worker expects 'start' first, not {message[0]!r}")
    _, settings, enforcement = message
    run_on(served.event_loop(settings), _serve(conn, listeners, settings, enforcement))
    return 0


async def _serve(
    conn: Connection,
    listeners: list[socket.socket],
    settings: served.Settings,
    enforcement: Enforcement,
) -> None:
    """Serve, take enforcements from the parent in two steps, report."""
    loop = asyncio.get_running_loop()
    guard = Guard(enforcement)
    decisions: list[tuple[str, bool, float]] = []

    guard.observer = lambda point, allowed, seconds: decisions.append((point, allowed, seconds))
    server = served.make(settings, guard)
    try:
        await served.start(server, listeners)
    except Exception as error:
        conn.send(("failed", str(error)))
        return
    guard.watch(server.recheck)
    settle_collector()
    conn.send(("ready",))
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    pending: dict[int, Enforcement] = {}

    def report() -> None:
        denials: list[DenialReport] = guard.denials.drain()
        made = decisions[:]
        decisions.clear()
        relayed = server.bytes_relayed()
        conn.send(("report", denials, made, server.connections, relayed, served.probes(server)))

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
        with contextlib.suppress(OSError):
            report()
        conn.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
