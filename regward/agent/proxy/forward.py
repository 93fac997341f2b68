"""One absolute-form request (`GET http://reg.local:5000/v2/ HTTP/1.1`) forwarded to a
plain-HTTP registry: its head rewritten, its body (and nothing after it) passed on, the
response head read and rewritten to close, the response body spliced.

    await forward(tunnels, settings, client, upstream, request, rest, body)

The response may be awaited as long as the body keeps moving (a large push to a slow
registry), and `settings.idle_timeout` after it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from regward.agent.http1 import Body, ProtocolError, head_end

from .protocol import Request, close_response_head, forward_head, response_status
from .relay import Tunnels
from .settings import ProxySettings

log = logging.getLogger("regward.agent.proxy")


async def forward(
    tunnels: Tunnels,
    settings: ProxySettings,
    client: socket.socket,
    upstream: socket.socket,
    request: Request,
    rest: bytes,
    body: Body,
) -> None:
    """Forward `request` (whose head the client sent with `rest` behind it) and relay the
    response until the registry ends it."""
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(upstream, forward_head(request) + rest[: body.feed(rest)])
    except OSError as error:  # the client is told why, rather than seeing its connection close
        raise ProtocolError(502, f"the registry ended the connection: {error.strerror}") from None
    with tunnels.opened(client, upstream, downstream_only=True) as tunnel:
        waiting = asyncio.timeout(settings.idle_timeout)
        answered = False

        def progress(count: int) -> None:
            tunnel.up.moved += count  # the body skips the up direction's pipe; count it there
            if not answered:
                waiting.reschedule(loop.time() + settings.idle_timeout)

        sender = loop.create_task(
            _send_body(settings, client, upstream, body, progress), name="proxy-request-body"
        )
        try:
            async with waiting:
                head, extra = await _response_head(settings, client, upstream)
            answered = True
            await loop.sock_sendall(client, head + extra)
            tunnel.down.start()
            await tunnel.wait()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender


async def _send_body(
    settings: ProxySettings,
    client: socket.socket,
    upstream: socket.socket,
    body: Body,
    progress: Callable[[int], None],
) -> None:
    """The rest of a request body, client to registry. Bytes after the body (a pipelined
    request) are read and dropped; the client's end is passed on as before. A body that
    breaks its framing ends the request."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            chunk = await loop.sock_recv(client, settings.read_size)
            if not chunk:
                upstream.shutdown(socket.SHUT_WR)
                return
            if not body.done:
                part = chunk[: body.feed(chunk)]
                await loop.sock_sendall(upstream, part)
                progress(len(part))
    except ProtocolError as error:
        log.info("proxy ended a request whose body is malformed: %s", error.message)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)
    except OSError:
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_RDWR)


async def _response_head(
    settings: ProxySettings, client: socket.socket, upstream: socket.socket
) -> tuple[bytes, bytes]:
    """Read the final response head, rewritten to close; 1xx heads go to the client at once
    (a client that sent `Expect: 100-continue` waits for one before its body). The caller
    bounds the wait."""
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    while True:
        try:
            end = head_end(buffer, settings.max_response_head)
        except ProtocolError:
            raise ProtocolError(502, "the registry sent an oversized head") from None
        if end < 0:
            try:
                chunk = await loop.sock_recv(upstream, settings.read_size)
            except OSError as error:
                raise ProtocolError(
                    502, f"the registry ended the connection: {error.strerror}"
                ) from None
            if not chunk:
                raise ProtocolError(502, "the registry closed without a response")
            buffer += chunk
            continue
        head = bytes(buffer[:end])
        del buffer[:end]
        if 100 <= response_status(head) < 200:
            await loop.sock_sendall(client, head)
            continue
        return close_response_head(head), bytes(buffer)
