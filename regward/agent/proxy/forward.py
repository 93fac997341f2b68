"""Plain-HTTP requests forwarded to registries, one after another on a client connection kept
alive: the egress proxy's absolute-form requests (`GET http://reg.local:5000/v2/ HTTP/1.1`)
and the transparent listener's origin-form ones.

    await forward(tunnels, settings, dialer, client, request, rest, route, parse)

Every request on the connection is framed (`http1.Body.of`: conflicting framing is a 400),
then decided by its own target (`route`: the Target to dial, or None once it has answered a
refusal), so a second request naming another host or path never rides on the first one's
decision. Its head is rewritten (origin form, hop-by-hop fields dropped, Host set to the
decided target), its body and nothing after it passed on, and the response relayed whole and
nothing after it (`http1.response_body`). The bytes the client sent after a request (a
pipelined request) are kept and read as the next request once the response has ended. The
connection to a registry is reused for the next request to the same target while the
registry keeps it alive and has sent nothing more.

The client's connection stays open after a response unless the client asked to close it
(`Connection: close`, or HTTP/1.0), the response ends only with the registry's connection (no
length, not chunked: relayed until it closes, then the client's is closed too), or the
response ended before the request's body did. A client that sends nothing for
`settings.idle_timeout` after a response is closed.

With `upgrades` (the transparent listener), a request asking to switch protocols keeps its
`Upgrade` (`protocol.upgrade_offer`: not HTTP itself, not with a body) and, when the server
answers `101` naming one of them, the connection becomes a tunnel to that same server: bytes
the client sent behind the request are passed on only then. A `101` nobody asked for, or to a
protocol not offered, is a 502. The egress proxy drops `Upgrade` (its clients send WebSockets
through `CONNECT`, and its targets are registries).

The response may be awaited as long as the request body keeps moving (a large push to a slow
registry), and `settings.idle_timeout` after it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from regward.agent.http1 import (
    Body,
    ProtocolError,
    head_end,
    parse_response_head,
    response_body,
)

from .protocol import (
    Request,
    Target,
    forward_head,
    response_head,
    switched_to,
    upgrade_offer,
)
from .relay import Tunnel, Tunnels
from .settings import ProxySettings
from .upstream import Dialer

log = logging.getLogger("regward.agent.proxy")

Route = Callable[[Request], Awaitable[Target | None]]
"""Decide one request: the target to dial for it, or None when refused (the refusal sent)."""
Parse = Callable[[bytes], Request]
"""Parse one request head (ending in CRLF CRLF) as the connection's kind of request."""

_NONBLOCK = 2  # SPLICE_F_NONBLOCK


class _Gone(ProtocolError):
    """The registry's connection ended before a byte of the response (a 502)."""


async def forward(
    tunnels: Tunnels,
    settings: ProxySettings,
    dialer: Dialer,
    client: socket.socket,
    request: Request,
    rest: bytes,
    route: Route,
    parse: Parse,
    upstream: tuple[Target, socket.socket] | None = None,
    upgrades: bool = False,
) -> None:
    """Serve `request` (whose head the client sent with `rest` behind it) and every request
    after it on `client`, until the connection ends. `upstream`: a connection already made
    (reused when the first request's target is its target, else closed). `upgrades`: pass
    `Upgrade` on (`upgrade_offer`), and after a `101 Switching Protocols` relay both
    directions untouched, to the target decided for that request, until either side ends."""
    connected = upstream
    try:
        while True:
            body = Body.of(request.head)
            target = await route(request)
            if target is None:
                return
            if connected is not None and (connected[0] != target or not _quiet(connected[1])):
                connected[1].close()
                connected = None
            reused = connected is not None
            if connected is None:
                connected = (target, await dialer.connect(target))
            try:
                outcome = await _exchange(
                    tunnels, settings, client, connected[1], request, rest, body, upgrades
                )
            except _Gone:
                # A kept connection the registry closed meanwhile: once more on a new one,
                # where nothing of the request is lost (it has no body).
                if not reused or body.length != 0:
                    raise
                connected[1].close()
                connected = (target, await dialer.connect(target))
                body = Body.of(request.head)
                outcome = await _exchange(
                    tunnels, settings, client, connected[1], request, rest, body, upgrades
                )
            if outcome is None:
                return
            rest, upstream_kept = outcome
            if not upstream_kept:
                connected[1].close()
                connected = None
            following = await _next_request(settings, client, rest, parse)
            if following is None:
                return
            request, rest = following
    finally:
        if connected is not None:
            connected[1].close()


def _quiet(upstream: socket.socket) -> bool:
    """Whether a kept registry connection is still open with nothing unread: bytes it sent
    after a response (a second response nobody asked for) must never answer the next request,
    and one it closed is not worth a try."""
    try:
        upstream.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    return False


async def _next_request(
    settings: ProxySettings, client: socket.socket, rest: bytes, parse: Parse
) -> tuple[Request, bytes] | None:
    """The next request on a kept-alive connection and the bytes after its head; None when
    the client closes, or says nothing for `settings.idle_timeout`."""
    loop = asyncio.get_running_loop()
    buffer = bytearray(rest)
    if not buffer:
        try:
            async with asyncio.timeout(settings.idle_timeout):
                chunk = await loop.sock_recv(client, settings.read_size)
        except TimeoutError:
            return None
        if not chunk:
            return None
        buffer += chunk
    try:
        async with asyncio.timeout(settings.handshake_timeout):
            while (end := head_end(buffer, settings.max_head)) < 0:
                chunk = await loop.sock_recv(client, settings.read_size)
                if not chunk:
                    raise OSError("the client closed in the middle of a request head")
                buffer += chunk
    except TimeoutError:
        raise ProtocolError(408, "request head not received in time") from None
    return parse(bytes(buffer[:end])), bytes(buffer[end:])


async def _exchange(
    tunnels: Tunnels,
    settings: ProxySettings,
    client: socket.socket,
    upstream: socket.socket,
    request: Request,
    rest: bytes,
    body: Body,
    upgrades: bool,
) -> tuple[bytes, bool] | None:
    """One request and its response. Returns the bytes the client sent after the request and
    whether the registry's connection may carry the next one; None when the client's
    connection ends here (after a switch of protocols too)."""
    loop = asyncio.get_running_loop()
    keep = request.version == "HTTP/1.1" and request.head.keep_alive
    offer = upgrade_offer(request) if upgrades else ()
    used = body.feed(rest)
    head_out = forward_head(request, close=not keep, upgrade=offer)
    try:  # the client is told why, rather than seeing its connection close
        await loop.sock_sendall(upstream, head_out + rest[:used])
    except OSError as error:
        raise _Gone(502, f"the registry ended the connection: {error.strerror}") from None
    after = rest[used:]
    with tunnels.opened(client, upstream, downstream_only=True) as tunnel:
        waiting = asyncio.timeout(settings.idle_timeout)
        answered = False

        def progress(count: int) -> None:
            tunnel.up.moved += count  # the body skips the up direction's pipe; count it there
            if not answered:
                waiting.reschedule(loop.time() + settings.idle_timeout)

        sender = None
        if not body.done:
            sender = loop.create_task(
                _send_body(settings, client, upstream, body, progress), name="proxy-request-body"
            )
        try:
            async with waiting:
                head, extra = await _response_head(settings, client, upstream)
            answered = True
            response = parse_response_head(head)
            if response.status == 101:
                if not offer:
                    raise ProtocolError(502, "the server switched protocols unasked")
                switched_to(response, offer)
                await _switch(tunnel, client, upstream, head + extra, after)
                return None
            framing = response_body(request.method, response)
            if framing is None:  # it ends when the registry closes: so does the client's
                await loop.sock_sendall(client, response_head(head, close=True) + extra)
                tunnel.down.start()
                await tunnel.wait()
                return None
            try:
                taken = framing.feed(extra)
            except ProtocolError as error:
                raise ProtocolError(502, f"the registry's response: {error.message}") from None
            await loop.sock_sendall(client, response_head(head, close=not keep) + extra[:taken])
            tunnel.down.moved += taken
            clean = await _relay_body(settings, tunnels, tunnel, upstream, client, framing)
            if sender is not None:
                # Answered before the body ended (the rest is unread), or the client ended it.
                sent = sender.result() if sender.done() else None
                if sent is None:
                    return None
                after = sent
            if not keep:
                return None
            # A registry that sent more than the response is not asked again.
            return after, response.keep_alive and taken == len(extra) and clean
        finally:
            if sender is not None and not sender.done():
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender


async def _switch(
    tunnel: Tunnel, client: socket.socket, upstream: socket.socket, answer: bytes, after: bytes
) -> None:
    """After a `101`: its head (as the server sent it) and what followed it to the client,
    then what the client sent behind its request (the new protocol's first bytes, held until
    now) to the server, then both directions untouched until either side ends."""
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(client, answer)
    if after:
        await loop.sock_sendall(upstream, after)
        tunnel.up.moved += len(after)
    tunnel.downstream_only = False
    tunnel.up.start()
    tunnel.down.start()
    await tunnel.wait()


async def _send_body(
    settings: ProxySettings,
    client: socket.socket,
    upstream: socket.socket,
    body: Body,
    progress: Callable[[int], None],
) -> bytes | None:
    """The rest of a request body, client to registry; returns the bytes the client sent
    after it (the next request's), or None when the client ended its side first (passed on
    to the registry). A body that breaks its framing ends the request."""
    loop = asyncio.get_running_loop()
    try:
        while not body.done:
            chunk = await loop.sock_recv(client, settings.read_size)
            if not chunk:
                upstream.shutdown(socket.SHUT_WR)
                return None
            used = body.feed(chunk)
            await loop.sock_sendall(upstream, chunk[:used])
            progress(used)
            if body.done:
                return chunk[used:]
    except ProtocolError as error:
        log.info("proxy ended a request whose body is malformed: %s", error.message)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)
    except OSError:
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)
    return None


async def _response_head(
    settings: ProxySettings, client: socket.socket, upstream: socket.socket
) -> tuple[bytes, bytes]:
    """Read the final response head (a `101` is one) and the bytes after it; other 1xx heads
    go to the client at once (a client that sent `Expect: 100-continue` waits for one before
    its body). The caller bounds the wait."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    while True:
        try:
            end = head_end(buffer, settings.max_response_head)
        except ProtocolError:
            raise ProtocolError(502, "the registry sent an oversized head") from None
        if end < 0:
            gone = ProtocolError if buffer else _Gone
            try:
                chunk = await loop.sock_recv(upstream, settings.read_size)
            except OSError as error:
                raise gone(502, f"the registry ended the connection: {error.strerror}") from None
            if not chunk:
                raise gone(502, "the registry closed without a response")
            buffer += chunk
            continue
        head = bytes(buffer[:end])
        del buffer[:end]
        status = parse_response_head(head).status
        if 100 <= status < 200 and status != 101:  # a 101 is the last head: the caller's
            await loop.sock_sendall(client, head)
            continue
        return head, bytes(buffer)


async def _relay_body(
    settings: ProxySettings,
    tunnels: Tunnels,
    tunnel: Tunnel,
    upstream: socket.socket,
    client: socket.socket,
    framing: Body,
) -> bool:
    """The rest of a response body, registry to client, and not a byte more: spliced when its
    length is known, read chunk by chunk when chunked. False when the registry sent bytes
    after it (dropped; its connection is not used again). OSError when the registry stops or
    breaks the framing midway (the client's connection then ends: its response is cut)."""
    if framing.done:
        return True
    left = framing.left
    if left is not None:
        await _Exactly(tunnels, upstream, client, left, settings.idle_timeout, tunnel).run()
        return True
    loop = asyncio.get_running_loop()
    while not framing.done:
        async with asyncio.timeout(settings.idle_timeout):
            chunk = await loop.sock_recv(upstream, settings.read_size)
        if not chunk:
            raise OSError("the registry closed in the middle of a chunked response")
        try:
            used = framing.feed(chunk)
        except ProtocolError as error:
            raise OSError(f"the registry broke its chunked framing: {error.message}") from None
        await loop.sock_sendall(client, chunk[:used])
        tunnel.down.moved += used
        if used < len(chunk):
            return False
    return True


class _Exactly:
    """`count` bytes from `src` to `dst` through a pipe (`os.splice`: they never enter
    Python), never one more; ends with OSError when `src` closes first or nothing moves for
    `idle` seconds."""

    def __init__(
        self,
        tunnels: Tunnels,
        src: socket.socket,
        dst: socket.socket,
        count: int,
        idle: float,
        tunnel: Tunnel,
    ) -> None:
        self._poller = tunnels.poller  # its sockets are watched where the tunnels' are
        self._loop = self._poller.loop
        self._pool = pool = tunnels.pool
        self._src, self._dst = src.fileno(), dst.fileno()
        self._count = count
        self._pending = 0
        self._idle = idle
        self._tunnel = tunnel
        self._pipe = pool.get()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._timer = self._loop.call_later(idle, self._stalled)

    async def run(self) -> None:
        self._poller.add_reader(self._src, self._readable)
        try:
            await self._done
        finally:
            self._poller.remove_reader(self._src)
            self._poller.remove_writer(self._dst)
            self._timer.cancel()
            (self._pool.discard if self._pending else self._pool.put)(self._pipe)

    def _readable(self) -> None:
        for _ in range(8):
            try:
                moved = os.splice(
                    self._src, self._pipe[1], min(self._count, self._pool.size), flags=_NONBLOCK
                )
            except BlockingIOError:
                return
            except OSError as error:
                self._end(error)
                return
            if moved == 0:
                self._end(OSError("the registry closed in the middle of a response body"))
                return
            self._count -= moved
            self._pending = moved
            self._tunnel.down.moved += moved
            self._timer.cancel()
            self._timer = self._loop.call_later(self._idle, self._stalled)
            if not self._flush():
                if not self._done.done():
                    self._poller.remove_reader(self._src)
                    self._poller.add_writer(self._dst, self._writable)
                return
            if not self._count:
                self._end(None)
                return

    def _flush(self) -> bool:
        """Empty the pipe into `dst`; False when `dst` would block or failed."""
        while self._pending:
            try:
                self._pending -= os.splice(self._pipe[0], self._dst, self._pending, flags=_NONBLOCK)
            except BlockingIOError:
                return False
            except OSError as error:
                self._end(error)
                return False
        return True

    def _writable(self) -> None:
        if not self._flush():
            return
        self._poller.remove_writer(self._dst)
        if not self._count:
            self._end(None)
        else:
            self._poller.add_reader(self._src, self._readable)

    def _stalled(self) -> None:
        self._end(OSError(f"no bytes of the response body for {self._idle:g} s"))

    def _end(self, error: OSError | None) -> None:
        if self._done.done():
            return
        if error is None:
            self._done.set_result(None)
        else:
            self._done.set_exception(error)
