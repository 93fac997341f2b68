"""Dialing the registry: resolve an allowed name (cached briefly), connect, in time.

    dialer = Dialer(settings)
    sock = await dialer.connect(Target("ghcr.io", 443))   # ProtocolError 502/504 on failure

Called only after the host decision allowed the target, so a refused name is never resolved.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from typing import Any

from regward.agent.http1 import ProtocolError

from .protocol import Target
from .settings import ProxySettings

Addresses = list[tuple[socket.AddressFamily, Any]]


class Dialer:
    """Connections to registries, with the system resolver's answers kept for
    `settings.resolve_ttl` seconds so a burst of connections to one registry costs one
    lookup; connections that arrive while it runs wait for it rather than start their own
    (a profile of 100 concurrent clients showed one lookup per connection at each expiry)."""

    def __init__(self, settings: ProxySettings) -> None:
        self.settings = settings
        self._resolved: dict[tuple[str, int], tuple[float, Addresses]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Future[Addresses]] = {}
        self.lookups = 0  # calls of the system resolver (tests and the bench read it)

    async def connect(self, target: Target) -> socket.socket:
        """A connected, non-blocking socket to `target` (its addresses tried in order)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.connect_timeout  # for the lookup and connects
        try:
            if target.is_ip:
                family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
                addresses: Addresses = [(family, (target.host, target.port))]
            else:
                addresses = self._cached(target) or await self._resolve(target, deadline)
            failure: OSError = OSError(f"{target.host} has no address")
            for family, address in addresses:
                sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
                if self.settings.mark is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.settings.mark)
                try:
                    await _connect(loop, sock, address, deadline)
                except TimeoutError:  # an OSError too, but the deadline ends every attempt
                    sock.close()
                    raise
                except OSError as error:
                    sock.close()
                    failure = error
                    continue
                except BaseException:
                    sock.close()
                    raise
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
        except TimeoutError:
            raise ProtocolError(504, f"no connection to {target.authority} in time") from None
        except socket.gaierror as error:
            raise ProtocolError(502, f"cannot resolve {target.host}: {error.strerror}") from None
        reason = failure.strerror or str(failure)
        raise ProtocolError(502, f"cannot connect to {target.authority}: {reason}")

    def _cached(self, target: Target) -> Addresses | None:
        cached = self._resolved.get((target.host, target.port))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    async def _resolve(self, target: Target, deadline: float) -> Addresses:
        key = (target.host, target.port)
        async with asyncio.timeout_at(deadline):
            running = self._resolving.get(key)
            if running is not None:
                return await asyncio.shield(running)  # one waiter's cancellation spares the rest
            loop = asyncio.get_running_loop()
            lookup = loop.create_task(self._lookup(target), name="proxy-resolve")
            self._resolving[key] = lookup
            lookup.add_done_callback(self._resolved_one)
            return await asyncio.shield(lookup)

    def _resolved_one(self, lookup: asyncio.Future[Addresses]) -> None:
        """A lookup ended: forget it, and take its error so none goes unheard if every
        connection waiting for it was cancelled meanwhile."""
        for key, running in list(self._resolving.items()):
            if running is lookup:
                del self._resolving[key]
        if not lookup.cancelled():
            lookup.exception()

    async def _lookup(self, target: Target) -> Addresses:
        self.lookups += 1
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
        addresses = [(info[0], info[4]) for info in infos]
        if len(self._resolved) >= self.settings.resolve_cache:
            self._resolved.clear()
        self._resolved[(target.host, target.port)] = (
            time.monotonic() + self.settings.resolve_ttl,
            addresses,
        )
        return addresses


async def _connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, address: Any, deadline: float
) -> None:
    """`loop.sock_connect` for an address already resolved, with less bookkeeping: the
    connect, then (while the handshake runs) one wait for the socket to turn writable, or
    TimeoutError at `deadline` (a timer on the wait, not a timeout scope per connection).

    A registry on this machine (loopback, a local mirror) has usually answered the handshake
    before the first connect returns: a second connect says so (0, or its error) and spares
    the wait, a registration with the loop and a turn of it; EALREADY means still under way."""
    error = sock.connect_ex(address)
    if error == errno.EINPROGRESS:
        error = sock.connect_ex(address)
    if error in (errno.EALREADY, errno.EINPROGRESS):
        waiter: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, _wake, waiter)
        timer = loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            loop.remove_writer(fd)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
