"""The proxy's I/O: accept, read one request head, ask the host decision, connect, relay."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from regward.errors import ConfigError
from regward.policy import Decision

from .protocol import (
    CONNECT_ESTABLISHED,
    MAX_HEAD,
    NEED_MORE,
    ProtocolError,
    Request,
    RequestBody,
    Target,
    client_hello_sni,
    close_response_head,
    error_response,
    forward_head,
    head_end,
    parse_request,
    response_status,
    starts_tls,
)
from .relay import PipePool, Tunnel

log = logging.getLogger("regward.agent.proxy")


HostDecider = Callable[[str, int], Decision]
DEFAULT_LISTEN = "127.0.0.1:3128"
RESOLVE_TTL = 5.0
RESOLVE_CACHE = 512


@dataclass(frozen=True)
class ProxySettings:
    """Where the proxy listens and the limits that keep slow or hostile clients cheap."""

    host: str = "127.0.0.1"
    port: int = 3128
    max_connections: int = 4096
    max_head: int = MAX_HEAD
    handshake_timeout: float = 10.0  # to send a complete request head (slowloris)
    connect_timeout: float = 10.0  # to resolve and connect to the registry
    idle_timeout: float = 300.0  # a tunnel with no bytes either way for this long is closed
    shutdown_grace: float = 2.0  # open tunnels may finish this long after close()
    backlog: int = 1024

    @classmethod
    def from_listen(cls, listen: str) -> ProxySettings:
        """Default limits on `listen`, as given to --listen."""
        host, port = parse_listen(listen)
        return cls(host=host, port=port)


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` into (host, port); ConfigError names the bad value."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(
            f"proxy listen address {listen!r} is not HOST:PORT; "
            f"use e.g. {DEFAULT_LISTEN} or [::1]:3128"
        )
    return host, int(port)


class ProxyServer:
    """The egress proxy. `decide_host` is consulted for every connection, so a new policy
    applies to the next connection at once, and `recheck()` ends the open connections it no
    longer allows; `describe` turns a refusal into its message."""

    def __init__(
        self,
        settings: ProxySettings,
        decide_host: HostDecider,
        describe: Callable[[Decision], str] | None = None,
    ) -> None:
        self.settings = settings
        self._decide = decide_host
        self._describe = describe or (lambda decision: decision.message())
        self._listener: socket.socket | None = None
        self._pool = PipePool()
        self._tasks: dict[asyncio.Task[None], list[tuple[str, int]]] = {}
        """Each open connection, with the hosts and ports it was allowed to reach."""
        self._tunnels: set[Tunnel] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._resolved: dict[
            tuple[str, int], tuple[float, list[tuple[socket.AddressFamily, Any]]]
        ] = {}
        self.address: tuple[str, int] = (settings.host, settings.port)

    @property
    def connections(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        """Bind and start accepting; raises ConfigError when the address cannot be used."""
        loop = asyncio.get_running_loop()
        _raise_file_limit(self.settings.max_connections * 4 + 64)
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.settings.host, self.settings.port))
            listener.listen(self.settings.backlog)
        except OSError as error:
            listener.close()
            where = f"{self.settings.host}:{self.settings.port}"
            raise ConfigError(
                f"the proxy cannot listen on {where}: {error.strerror}; "
                "pick another address with --listen / --proxy-listen"
            ) from None
        listener.setblocking(False)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        loop.add_reader(listener.fileno(), self._accept)
        self._sweeper = loop.create_task(self._sweep_idle(), name="proxy-idle-sweeper")
        log.info("proxy listening on %s:%d", *self.address)
        if not ipaddress.ip_address(self.address[0]).is_loopback:
            log.warning(
                "the proxy listens on %s, beyond loopback, and has no authentication: anyone "
                "who reaches it may use every registry the policy allows",
                self.address[0],
            )

    def _accept(self) -> None:
        listener, loop = self._listener, asyncio.get_running_loop()
        if listener is None:
            return
        for _ in range(64):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # Out of descriptors (EMFILE) and the like: the backlog stays readable, so pause
                # accepting briefly instead of spinning, and keep serving open connections.
                log.warning("proxy accept failed, pausing 0.1 s: %s", error)
                loop.remove_reader(listener.fileno())
                loop.call_later(0.1, self._resume_accepting)
                return
            if len(self._tasks) >= self.settings.max_connections:
                with contextlib.suppress(OSError):
                    client.setblocking(False)
                    client.send(error_response(503, "the proxy has too many open connections"))
                client.close()
                continue
            client.setblocking(False)
            # Relay segments as they come: Nagle would hold a small one (a TLS handshake
            # message) back until the client's delayed ACK.
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            hosts: list[tuple[str, int]] = []
            task = loop.create_task(self._serve(client, hosts), name="proxy-connection")
            self._tasks[task] = hosts
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def recheck(self) -> None:
        """The policy changed: end every open connection to a host it no longer allows.

        Without this, a tunnel opened before an owner removed a registry would go on
        pulling from it for as long as the client keeps it open."""
        for task, hosts in list(self._tasks.items()):
            refused = next((host for host in hosts if not self._still_allowed(*host)), None)
            if refused is not None:
                log.info(
                    "proxy ended a connection to %s:%d: the policy no longer allows it", *refused
                )
                task.cancel()

    def _still_allowed(self, host: str, port: int) -> bool:
        try:
            return self._decide(host, port).allowed
        except Exception:  # fail closed, as for a new connection
            log.exception("proxy host decision failed for %s:%d", host, port)
            return False

    def _resume_accepting(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    async def _serve(self, client: socket.socket, hosts: list[tuple[str, int]]) -> None:
        upstream: socket.socket | None = None
        try:
            try:
                async with asyncio.timeout(self.settings.handshake_timeout):
                    request, rest = await self._read_request(client)
            except TimeoutError:
                raise ProtocolError(408, "request head not received in time") from None
            hosts.append((request.target.host, request.target.port))
            decision = self._decision(request.target)
            if not decision.allowed:
                message = self._describe(decision)
                log.info("proxy refused %s: %s", request.target.authority, message)
                await self._send(client, error_response(403, message))
                return
            body = None if request.is_connect else RequestBody.of(request)
            upstream = await self._connect(request.target)
            if body is None:
                await self._send(client, CONNECT_ESTABLISHED)
                plain = _plain_bytes_allowed(decision, request.target)
                await self._relay(client, upstream, request.target, rest, hosts, plain)
            else:
                await self._forward(client, upstream, request, rest, body)
        except ProtocolError as error:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await self._send(client, error_response(error.status, error.message))
        except OSError:
            pass  # the client went away; nothing to tell it
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    async def _send(self, sock: socket.socket, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, data)

    async def _read_request(self, client: socket.socket) -> tuple[Request, bytes]:
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        while True:
            chunk = await loop.sock_recv(client, 65536)
            if not chunk:
                raise OSError(errno.ECONNRESET, "client closed before a request")
            buffer += chunk
            end = head_end(buffer, self.settings.max_head)
            if end >= 0:
                return parse_request(bytes(buffer[:end])), bytes(buffer[end:])

    def _decision(self, target: Target) -> Decision:
        try:
            return self._decide(target.host, target.port)
        except Exception:  # fail closed: a broken decision never opens a connection
            log.exception("proxy host decision failed for %s", target.authority)
            raise ProtocolError(
                503, f"Regward could not check {target.authority} against the policy"
            ) from None

    async def _connect(self, target: Target) -> socket.socket:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.settings.connect_timeout):
                if target.is_ip:
                    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
                    addresses: list[tuple[socket.AddressFamily, Any]] = [
                        (family, (target.host, target.port))
                    ]
                else:
                    addresses = await self._resolve(target)
                failure: OSError = OSError(f"{target.host} has no address")
                for family, address in addresses:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, address)
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

    async def _resolve(self, target: Target) -> list[tuple[socket.AddressFamily, Any]]:
        """The system resolver's addresses for an allowed name, kept for `RESOLVE_TTL`
        seconds so a burst of connections to one registry costs one lookup."""
        key = (target.host, target.port)
        now = time.monotonic()
        cached = self._resolved.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        infos = await asyncio.get_running_loop().getaddrinfo(
            target.host, target.port, type=socket.SOCK_STREAM
        )
        addresses = [(info[0], info[4]) for info in infos]
        if len(self._resolved) >= RESOLVE_CACHE:
            self._resolved.clear()
        self._resolved[key] = (now + RESOLVE_TTL, addresses)
        return addresses

    async def _relay(
        self,
        client: socket.socket,
        upstream: socket.socket,
        target: Target,
        rest: bytes,
        hosts: list[tuple[str, int]],
        plain: bool,
    ) -> None:
        """A CONNECT tunnel. The registry's bytes flow at once; the client's first bytes are
        read first: a TLS ClientHello naming another server than the tunnel's (domain
        fronting) needs that name allowed too, and bytes that are not TLS need `plain`, or
        the tunnel is closed."""
        loop = asyncio.get_running_loop()
        tunnel = Tunnel(loop, self._pool, client, upstream)
        self._tunnels.add(tunnel)
        try:
            tunnel.down.start()
            first = await self._client_hello(client, rest)
            if first is None:
                return
            hello, name = first
            if not plain and not starts_tls(hello):
                log.info(
                    "proxy closed a tunnel to %s: its first bytes are not TLS, and the policy "
                    "names that host and port only as part of a registry (a shared front could "
                    "route plain HTTP to any of its tenants)",
                    target.authority,
                )
                return
            if name is not None and name != target.host:
                hosts.append((name, target.port))
                try:
                    decision = self._decision(Target(name, target.port))
                except ProtocolError:  # already logged; after "200" only a close can refuse
                    return
                if not decision.allowed:
                    log.info(
                        "proxy closed a tunnel to %s whose TLS names %s: %s",
                        target.authority,
                        name,
                        self._describe(decision),
                    )
                    return
            await self._send(upstream, hello)
            tunnel.up.start()
            await tunnel.wait()
        finally:
            tunnel.abort()
            self._tunnels.discard(tunnel)

    async def _client_hello(
        self, client: socket.socket, data: bytes
    ) -> tuple[bytes, str | None] | None:
        """The client's first bytes and the server name they ask for (when they are a TLS
        ClientHello); None when the client leaves or stays silent past the idle timeout."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.settings.idle_timeout):
                while True:
                    if data:
                        name = client_hello_sni(data)
                        if name != NEED_MORE:
                            return data, name
                    chunk = await loop.sock_recv(client, 65536)
                    if not chunk:
                        return None
                    data += chunk
        except (TimeoutError, ProtocolError):
            return None

    async def _forward(
        self,
        client: socket.socket,
        upstream: socket.socket,
        request: Request,
        rest: bytes,
        body: RequestBody,
    ) -> None:
        """One absolute-form request: its head rewritten, its body (and nothing after it)
        passed on, the response spliced. The response may be awaited as long as the body keeps
        moving (a large push to a slow registry), and `idle_timeout` after it stops."""
        loop = asyncio.get_running_loop()
        await self._send(upstream, forward_head(request) + rest[: body.feed(rest)])
        tunnel = Tunnel(loop, self._pool, client, upstream)
        tunnel.downstream_only = True
        self._tunnels.add(tunnel)
        waiting = asyncio.timeout(self.settings.idle_timeout)
        answered = False

        def progress(count: int) -> None:
            tunnel.up.moved += count  # the body skips the up direction's pipe; count it there
            if not answered:
                waiting.reschedule(loop.time() + self.settings.idle_timeout)

        sender = loop.create_task(
            self._send_body(client, upstream, body, progress), name="proxy-request-body"
        )
        try:
            async with waiting:
                head, extra = await self._response_head(client, upstream)
            answered = True
            await self._send(client, head + extra)
            tunnel.down.start()
            await tunnel.wait()
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            tunnel.abort()
            self._tunnels.discard(tunnel)

    async def _send_body(
        self,
        client: socket.socket,
        upstream: socket.socket,
        body: RequestBody,
        progress: Callable[[int], None],
    ) -> None:
        """The rest of a request body, client to registry. Bytes after the body (a pipelined
        request) are read and dropped; the client's end is passed on as before. A body that
        breaks its framing ends the request."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                chunk = await loop.sock_recv(client, 65536)
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
        self, client: socket.socket, upstream: socket.socket
    ) -> tuple[bytes, bytes]:
        """Read the final response head, rewritten to close; 1xx heads go to the client at
        once (a client that sent `Expect: 100-continue` waits for one before its body). The
        caller bounds the wait."""
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        while True:
            try:
                end = head_end(buffer, self.settings.max_head * 4)
            except ProtocolError:
                raise ProtocolError(502, "the registry sent an oversized head") from None
            if end < 0:
                chunk = await loop.sock_recv(upstream, 65536)
                if not chunk:
                    raise ProtocolError(502, "the registry closed without a response")
                buffer += chunk
                continue
            head = bytes(buffer[:end])
            del buffer[:end]
            if 100 <= response_status(head) < 200:
                await self._send(client, head)
                continue
            return close_response_head(head), bytes(buffer)

    async def _sweep_idle(self) -> None:
        seen: dict[Tunnel, tuple[int, float]] = {}
        period = max(0.05, self.settings.idle_timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            current: dict[Tunnel, tuple[int, float]] = {}
            for tunnel in self._tunnels:
                activity = tunnel.activity
                last, since = seen.get(tunnel, (-1, now))
                if activity != last:
                    since = now
                elif now - since >= self.settings.idle_timeout:
                    tunnel.abort()
                current[tunnel] = (activity, since)
            seen = current

    async def close(self) -> None:
        """Stop accepting, let open connections finish for `shutdown_grace`, then end them."""
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.shutdown_grace)
        for tunnel in list(self._tunnels):
            tunnel.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._pool.close()

    async def __aenter__(self) -> ProxyServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def _plain_bytes_allowed(decision: Decision, target: Target) -> bool:
    """May bytes that are not TLS cross a tunnel to `target`? Only to an address an entry
    names with this very port (an owner's `reg.internal:5000`), or where nothing is restricted.
    A catalog or extra host, or a default port, may be a shared front (a CDN) that routes plain
    HTTP by its Host header to any of its tenants; registry clients tunnel only TLS anyway and
    send plain HTTP as absolute-form requests, whose Host the proxy sets."""
    entry = decision.entry
    if entry is None:  # no organization manages the machine, or registry access is off
        return True
    address = entry.address
    return address.port == target.port and address.matches(target.host, target.port)


async def serve(
    listen: str,
    decide_host: HostDecider,
    stop: asyncio.Event,
    describe: Callable[[Decision], str] | None = None,
    ready: Callable[[ProxyServer], None] | None = None,
) -> None:
    """Run the proxy on `listen` (HOST:PORT) until `stop` is set, then shut down gracefully."""
    async with ProxyServer(ProxySettings.from_listen(listen), decide_host, describe) as server:
        if ready is not None:
            ready(server)
        await stop.wait()


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
