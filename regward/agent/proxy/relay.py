"""Zero-copy relaying between two connected sockets on the asyncio loop.

Bytes go socket -> pipe -> socket with `os.splice`, so they never enter Python: the kernel
moves page references, and the loop only sees readiness (through the tunnels' own epoll
set, `poller.Poller`: a socket costs one registration there, and none with the loop). A
direction holds a pipe only while bytes are in flight (a slow receiver); idle tunnels hold
none, which keeps a thousand open tunnels cheap in descriptors and memory. Linux only, as is
the Docker Engine it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable, Iterator

from .poller import Poller

_NONBLOCK = 2  # SPLICE_F_NONBLOCK: the pipe ends never block; the sockets are non-blocking
PIPE_SIZE = 1 << 20
_READS_PER_WAKEUP = 8


class PipePool:
    """Reusable non-blocking pipes of `PIPE_SIZE` (or the system's limit)."""

    def __init__(self, keep: int = 32) -> None:
        self._free: list[tuple[int, int]] = []
        self._keep = keep
        self.size = PIPE_SIZE

    def get(self) -> tuple[int, int]:
        if self._free:
            return self._free.pop()
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self.size = fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, self.size)
        except OSError:  # above pipe-max-size or the user's pipe quota: keep the default
            self.size = fcntl.fcntl(write_end, fcntl.F_GETPIPE_SZ)
        return read_end, write_end

    def put(self, pipe: tuple[int, int]) -> None:
        """Give back an empty pipe."""
        if len(self._free) < self._keep:
            self._free.append(pipe)
        else:
            os.close(pipe[0])
            os.close(pipe[1])

    def discard(self, pipe: tuple[int, int]) -> None:
        """Close a pipe that may still hold bytes."""
        os.close(pipe[0])
        os.close(pipe[1])

    def close(self) -> None:
        while self._free:
            self.discard(self._free.pop())


class Direction:
    """Bytes from `src` to `dst` until `src` ends; then its tunnel is told (`on_done`), and
    passes the end on (`pass_end`) unless both sides are done and about to be closed."""

    __slots__ = (
        "_dst",
        "_dst_fd",
        "_on_done",
        "_pending",
        "_pipe",
        "_poller",
        "_pool",
        "_reading",
        "_src",
        "_src_fd",
        "_writing",
        "done",
        "moved",
    )

    def __init__(
        self,
        poller: Poller,
        pool: PipePool,
        src: socket.socket,
        dst: socket.socket,
        on_done: Callable[[Direction, bool], None],
    ) -> None:
        self._poller = poller
        self._pool = pool
        self._src, self._dst = src, dst
        self._src_fd, self._dst_fd = src.fileno(), dst.fileno()
        self._on_done = on_done
        self._pipe: tuple[int, int] | None = None
        self._pending = 0
        self.moved = 0
        self.done = False
        self._reading = self._writing = False

    def start(self) -> None:
        self._reading = True
        self._poller.add_reader(self._src_fd, self._readable)

    def _readable(self) -> None:
        pool = self._pool
        if self._pipe is None:
            self._pipe = pool.get()
        read_end, write_end = self._pipe
        for _ in range(_READS_PER_WAKEUP):
            try:
                count = os.splice(self._src_fd, write_end, pool.size, flags=_NONBLOCK)
            except BlockingIOError:
                break
            except OSError:
                self._finish(clean=False)
                return
            if count == 0:
                self._finish(clean=True)
                return
            self.moved += count
            self._pending = count
            if not self._flush(read_end):
                if self.done:
                    return
                self._poller.remove_reader(self._src_fd)
                self._reading = False
                self._poller.add_writer(self._dst_fd, self._writable)
                self._writing = True
                return
        if self._pipe is not None:
            pool.put(self._pipe)
            self._pipe = None

    def _flush(self, read_end: int) -> bool:
        """Empty the pipe into `dst`; False when `dst` would block first or failed (`done`)."""
        while self._pending:
            try:
                self._pending -= os.splice(read_end, self._dst_fd, self._pending, flags=_NONBLOCK)
            except BlockingIOError:
                return False
            except OSError:
                self._finish(clean=False)
                return False
        return True

    def _writable(self) -> None:
        if self._pipe is None:  # finished meanwhile
            return
        if not self._flush(self._pipe[0]) or self.done:
            return
        self._poller.remove_writer(self._dst_fd)
        self._writing = False
        self._pool.put(self._pipe)
        self._pipe = None
        self._poller.add_reader(self._src_fd, self._readable)
        self._reading = True

    def _finish(self, clean: bool) -> None:
        if self.done:
            return
        self.done = True
        on_done = self._on_done
        self.stop()
        on_done(self, clean)

    def pass_end(self) -> None:
        """`src` ended cleanly: tell `dst` no more bytes follow (it may still answer)."""
        with contextlib.suppress(OSError):
            self._dst.shutdown(socket.SHUT_WR)

    def stop(self) -> None:
        """Stop watching both sockets and release the pipe (idempotent). The tunnel is no
        longer told: that drops the reference cycle tunnel -> direction -> tunnel, so an ended
        tunnel (its sockets, futures) is freed at once instead of by the cyclic collector,
        which otherwise ran every few dozen connections (a profile: 5% of the proxy's CPU)."""
        self._on_done = _ignore
        if self._reading:
            self._poller.remove_reader(self._src_fd)
            self._reading = False
        if self._writing:
            self._poller.remove_writer(self._dst_fd)
            self._writing = False
        if self._pipe is not None:
            if self._pending:
                self._pool.discard(self._pipe)
            else:
                self._pool.put(self._pipe)
            self._pipe = None
            self._pending = 0


class Tunnel:
    """Both directions between a client and an upstream socket.

    `wait()` returns when both directions ended cleanly, when either failed, or after
    `abort()`; `downstream_only` ends it as soon as the upstream -> client direction ends
    (one forwarded request per connection).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        poller: Poller,
        pool: PipePool,
        client: socket.socket,
        upstream: socket.socket,
    ) -> None:
        self._loop = loop
        self._poller = poller
        self._finished: asyncio.Future[None] = loop.create_future()
        # Not `_finished.done()`: cancelling the task that awaits `_finished` (a policy change
        # ending the connection, shutdown) cancels the future too, and `abort()` must still
        # stop the directions then, or their sockets stay watched after they are closed.
        self._ended = False
        self.up = Direction(poller, pool, client, upstream, self._direction_done)
        self.down = Direction(poller, pool, upstream, client, self._direction_done)
        self.downstream_only = False
        self._watched: int | None = None  # the client's descriptor while `readable` watches it
        self._waiter: asyncio.Future[None] | None = None

    async def readable(self, sock: socket.socket) -> bool:
        """Wait until `sock` (the client) has bytes or its end to read; False when the tunnel
        ended first (the idle sweep, an upstream failure, shutdown). The socket stays watched
        until `start_up()` hands the watch to the relay, or the tunnel ends."""
        if self._ended:  # `abort()` is past: a watch added now would outlive it
            return False
        waiter = self._loop.create_future()
        self._waiter = waiter
        if self._watched is None:
            self._watched = sock.fileno()
        self._poller.add_reader(self._watched, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
        return not self._ended

    def start_up(self) -> None:
        """Start the client -> upstream direction (it takes over `readable`'s watch)."""
        self._watched = None
        self.up.start()

    @property
    def activity(self) -> int:
        return self.up.moved + self.down.moved

    def _direction_done(self, direction: Direction, clean: bool) -> None:
        if not clean or (self.up.done and self.down.done):
            # Failed, or both sides said all: closing both sockets (their owner's next step)
            # says the rest, so no shutdown first (one system call a connection fewer).
            self.abort()
            return
        direction.pass_end()
        if self.downstream_only and direction is self.down:
            self.abort()

    def abort(self) -> None:
        if self._ended:
            return
        self._ended = True
        if self._watched is not None:
            self._poller.remove_reader(self._watched)
            self._watched = None
        self.up.stop()
        self.down.stop()
        if not self._finished.done():
            self._finished.set_result(None)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self) -> None:
        try:
            await self._finished
        finally:
            self.abort()


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Send `data` whole: at once when the socket has room (a fresh connection always has
    room for a ClientHello or a short answer), else waiting for it."""
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    if sent < len(data):
        await asyncio.get_running_loop().sock_sendall(sock, data[sent:])


def _ignore(direction: Direction, clean: bool) -> None:
    """What a stopped direction tells when it ends: nothing."""


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Tunnels:
    """The open tunnels of one proxy, and the pipes and the epoll set (`Poller`, made on the
    first tunnel's loop) they share: the idle sweep and shutdown reach every one, whichever
    kind of connection opened it."""

    def __init__(self) -> None:
        self.pool = PipePool()
        self._poller: Poller | None = None
        self.open: set[Tunnel] = set()
        self._relayed = (0, 0)  # bytes client -> upstream, upstream -> client; ended tunnels

    def bytes_relayed(self) -> tuple[int, int]:
        """Bytes moved so far (client to upstream, upstream to client), open tunnels included."""
        up, down = self._relayed
        for tunnel in self.open:
            up, down = up + tunnel.up.moved, down + tunnel.down.moved
        return up, down

    @contextlib.contextmanager
    def opened(
        self, client: socket.socket, upstream: socket.socket, *, downstream_only: bool = False
    ) -> Iterator[Tunnel]:
        """A tunnel between `client` and `upstream`, counted open until the block ends."""
        poller = self.poller
        tunnel = Tunnel(poller.loop, poller, self.pool, client, upstream)
        tunnel.downstream_only = downstream_only
        self.open.add(tunnel)
        try:
            yield tunnel
        finally:
            tunnel.abort()
            self.open.discard(tunnel)
            up, down = self._relayed
            self._relayed = (up + tunnel.up.moved, down + tunnel.down.moved)

    @property
    def poller(self) -> Poller:
        """The epoll set the tunnels' sockets are watched in, on the running loop."""
        if self._poller is None:
            self._poller = Poller(asyncio.get_running_loop())
        return self._poller

    def abort_all(self) -> None:
        for tunnel in list(self.open):
            tunnel.abort()

    async def sweep_idle(self, idle_timeout: float) -> None:
        """Forever: end each tunnel that moved no byte either way for `idle_timeout` seconds
        (seen within a quarter of that), so a connection held open and silent does not keep
        its descriptors and memory. Run it as a task; cancel it to stop."""
        seen: dict[Tunnel, tuple[int, float]] = {}
        period = max(0.05, idle_timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            current: dict[Tunnel, tuple[int, float]] = {}
            for tunnel in self.open:
                activity = tunnel.activity
                last, since = seen.get(tunnel, (-1, now))
                if activity != last:
                    since = now
                elif now - since >= idle_timeout:
                    tunnel.abort()
                current[tunnel] = (activity, since)
            seen = current

    def close(self) -> None:
        self.pool.close()
        if self._poller is not None:
            self._poller.close()
            self._poller = None
