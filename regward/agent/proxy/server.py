"""The accept loop: take connections, read the first request head; a CONNECT is decided,
dialled and handed to a tunnel, plain-HTTP requests to `forward` (each decided by itself);
end what a new policy refuses; sweep idle tunnels.

    async with ProxyServer(settings, decide_host, describe) as server:
        server.recheck()          # after a policy change: end connections it now refuses
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import resource
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from regward.agent.http1 import ProtocolError, head_end
from regward.errors import ConfigError
from regward.policy import Action, Decision
from regward.policy.address import join_host_port

from .forward import Route, forward
from .protocol import CONNECT_ESTABLISHED, Request, Target, error_response, parse_request
from .relay import Tunnels, send_all
from .repository import ReferenceDecider, repository_refusal
from .settings import HostDecider, ProxySettings, parse_listen
from .tunnel import run_tunnel
from .upstream import Dialer

if TYPE_CHECKING:
    from regward.agent.guard import Guard

log = logging.getLogger("regward.agent.proxy")

# Descriptors one connection may hold: client, upstream and a pipe's two ends at a time.
FILES_PER_CONNECTION = 4
SPARE_FILES = 64  # the listener, the loop, logs, the agent's other sockets


class ProxyServer:
    """The egress proxy. `decide_host` is consulted for every connection, so a new policy
    applies to the next connection at once, and `recheck()` ends the open connections it no
    longer allows; `describe` turns a refusal into its message. `decide_reference` (the
    guard's) decides a plain-HTTP request's repository and action too (`repository`); without
    it (a fixed host decider) only hosts are decided."""

    def __init__(
        self,
        settings: ProxySettings,
        decide_host: HostDecider,
        describe: Callable[[Decision], str] | None = None,
        decide_reference: ReferenceDecider | None = None,
    ) -> None:
        self.settings = settings
        self._decide = decide_host
        self._decide_reference = decide_reference
        self._describe = describe or (lambda decision: decision.message())
        self._listener: socket.socket | None = None
        self._dialer = Dialer(settings)
        self._tunnels = Tunnels()
        self._tasks: dict[asyncio.Task[None], list[tuple[str, int]]] = {}
        """Each open connection, with the hosts and ports it was allowed to reach."""
        self._sweeper: asyncio.Task[None] | None = None
        self.address: tuple[str, int] = (settings.host, settings.port)

    @property
    def connections(self) -> int:
        return len(self._tasks)

    def bytes_relayed(self) -> tuple[int, int]:
        """Bytes relayed so far: client to upstream, upstream to client."""
        return self._tunnels.bytes_relayed()

    async def start(self, listener: socket.socket | None = None) -> None:
        """Bind and start accepting; raises ConfigError when the address cannot be used. With
        `listener` (a worker process's, shared with the others), accept on it instead."""
        loop = asyncio.get_running_loop()
        _raise_file_limit(self.settings.max_connections * FILES_PER_CONNECTION + SPARE_FILES)
        shared = listener is not None
        if listener is None:
            listener = listen(self.settings)
        listener.setblocking(False)
        tune(listener)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        loop.add_reader(listener.fileno(), self._accept)
        self._sweeper = loop.create_task(
            self._tunnels.sweep_idle(self.settings.idle_timeout), name="proxy-idle-sweeper"
        )
        if not shared:  # else the parent that shares it says where it listens
            announce(self.address)

    def _accept(self) -> None:
        listener, loop = self._listener, asyncio.get_running_loop()
        if listener is None:
            return
        for _ in range(self.settings.accepts_per_wakeup):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                # Out of descriptors (EMFILE) and the like: the backlog stays readable, so pause
                # accepting briefly instead of spinning, and keep serving open connections.
                log.warning(
                    "proxy accept failed, pausing %s s: %s", self.settings.accept_pause, error
                )
                loop.remove_reader(listener.fileno())
                loop.call_later(self.settings.accept_pause, self._resume_accepting)
                return
            if len(self._tasks) >= self.settings.max_connections:
                with contextlib.suppress(OSError):
                    client.setblocking(False)
                    client.send(error_response(503, "the proxy has too many open connections"))
                client.close()
                continue
            client.setblocking(False)  # TCP_NODELAY it has from the listener (`tune`)
            hosts: list[tuple[str, int]] = []
            task = loop.create_task(self._serve(client, hosts), name="proxy-connection")
            self._tasks[task] = hosts
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    def _resume_accepting(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def recheck(self) -> None:
        """The policy changed: end every open connection to a host it no longer allows.

        Without this, a tunnel opened before an owner removed a registry would go on
        pulling from it for as long as the client keeps it open."""
        for task, hosts in list(self._tasks.items()):
            refused = next((host for host in hosts if not self._still_allowed(*host)), None)
            if refused is not None:
                log.info(
                    "proxy ended a connection to %s: the policy no longer allows it",
                    join_host_port(*refused),
                )
                task.cancel()

    @classmethod
    def for_guard(cls, settings: ProxySettings, guard: Guard) -> ProxyServer:
        """The proxy enforcing what `guard` decides, with its messages and reports: hosts,
        and plain-HTTP requests' repositories and actions."""

        def decide_reference(action: Action, reference: str) -> Decision:
            return guard.decide(action, reference, source="proxy")

        return cls(settings, guard.decide_host, guard.message, decide_reference)

    def _still_allowed(self, host: str, port: int) -> bool:
        try:
            return self._decide(host, port).allowed
        except Exception:  # fail closed, as for a new connection
            log.exception("proxy host decision failed for %s", join_host_port(host, port))
            return False

    async def _serve(self, client: socket.socket, hosts: list[tuple[str, int]]) -> None:
        upstream: socket.socket | None = None
        try:
            buffer = bytearray()
            head = self._head_now(client, buffer)
            if head is None:
                try:
                    async with asyncio.timeout(self.settings.handshake_timeout):
                        head = await self._read_head(client, buffer)
                except TimeoutError:
                    raise ProtocolError(408, "request head not received in time") from None
            request, rest = head
            if not request.is_connect:
                route, parse = self._router(client, hosts), parse_request
                settings, tunnels, dialer = self.settings, self._tunnels, self._dialer
                await forward(tunnels, settings, dialer, client, request, rest, route, parse)
                return
            target = request.target
            hosts.append((target.host, target.port))
            decision = self._decision(target)
            if not decision.allowed:
                await self._refuse(client, target, decision)
                return
            upstream = await self._dialer.connect(target)
            await send_all(client, CONNECT_ESTABLISHED)

            def name_allowed(name: str) -> bool:
                hosts.append((name, target.port))
                return self._tls_name_allowed(target, name)

            plain = _plain_bytes_allowed(decision, target)
            await run_tunnel(
                self._tunnels, self.settings, client, upstream, target, rest, plain, name_allowed
            )
        except ProtocolError as error:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    answer = error_response(error.status, error.message)
                    await asyncio.get_running_loop().sock_sendall(client, answer)
        except OSError:
            pass  # the client went away; nothing to tell it
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    def _router(self, client: socket.socket, hosts: list[tuple[str, int]]) -> Route:
        """The decision for each absolute-form request on `client`: its target, or None once
        its refusal is sent. `hosts` keeps every host decided, for `recheck`."""

        async def route(request: Request) -> Target | None:
            if request.is_connect:
                raise ProtocolError(
                    400, "CONNECT after a plain-HTTP request is not served: use a new connection"
                )
            target = request.target
            if (target.host, target.port) not in hosts:  # a long connection's list stays short
                hosts.append((target.host, target.port))
            decision = self._decision(target)
            if decision.allowed and decision.entry is not None and self._decide_reference:
                refused = repository_refusal(
                    self._decide_reference, request, target.host, target.port
                )
                if refused is not None:
                    decision = refused
            if decision.allowed:
                return target
            await self._refuse(client, target, decision)
            return None

        return route

    async def _refuse(self, client: socket.socket, target: Target, decision: Decision) -> None:
        message = self._describe(decision)
        log.info("proxy refused %s: %s", target.authority, message)
        await asyncio.get_running_loop().sock_sendall(client, error_response(403, message))

    def _head_now(self, client: socket.socket, buffer: bytearray) -> tuple[Request, bytes] | None:
        """The request, when its whole head has already arrived (clients send it at once, so
        usually it has): no wait, no timer. None when more is to come."""
        try:
            chunk = client.recv(self.settings.read_size)
        except (BlockingIOError, InterruptedError):
            return None
        return self._take(buffer, chunk)

    async def _read_head(self, client: socket.socket, buffer: bytearray) -> tuple[Request, bytes]:
        loop = asyncio.get_running_loop()
        while True:
            head = self._take(buffer, await loop.sock_recv(client, self.settings.read_size))
            if head is not None:
                return head

    def _take(self, buffer: bytearray, chunk: bytes) -> tuple[Request, bytes] | None:
        if not chunk:
            raise OSError(errno.ECONNRESET, "client closed before a request")
        buffer += chunk
        end = head_end(buffer, self.settings.max_head)
        if end < 0:
            return None
        return parse_request(bytes(buffer[:end])), bytes(buffer[end:])

    def _decision(self, target: Target) -> Decision:
        try:
            return self._decide(target.host, target.port)
        except Exception:  # fail closed: a broken decision never opens a connection
            log.exception("proxy host decision failed for %s", target.authority)
            raise ProtocolError(
                503, f"Regward could not check {target.authority} against the policy"
            ) from None

    def _tls_name_allowed(self, target: Target, name: str) -> bool:
        """May a tunnel to `target` carry TLS for server `name`? Logged when not."""
        try:
            decision = self._decision(Target(name, target.port))
        except ProtocolError:  # already logged; after "200" only a close can refuse
            return False
        if not decision.allowed:
            log.info(
                "proxy closed a tunnel to %s whose TLS names %s: %s",
                target.authority,
                name,
                self._describe(decision),
            )
        return decision.allowed

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
        self._tunnels.abort_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._tunnels.close()

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
    host, port = parse_listen(listen)
    async with ProxyServer(ProxySettings(host=host, port=port), decide_host, describe) as server:
        if ready is not None:
            ready(server)
        await stop.wait()


def announce(address: tuple[str, int]) -> None:
    """Log where the proxy listens, with a warning when that is beyond loopback."""
    log.info("proxy listening on %s", join_host_port(*address))
    if not ipaddress.ip_address(address[0]).is_loopback:
        log.warning(
            "the proxy listens on %s, beyond loopback, and has no authentication: anyone "
            "who reaches it may use every registry the policy allows",
            address[0],
        )


def listen(settings: ProxySettings) -> socket.socket:
    """The proxy's listening socket on `settings.host`/`settings.port`; ConfigError names the
    address and the flags that change it when it cannot be used."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((settings.host, settings.port))
        listener.listen(settings.backlog)
    except OSError as error:
        listener.close()
        where = join_host_port(settings.host, settings.port)
        raise ConfigError(
            f"the proxy cannot listen on {where}: {error.strerror}; "
            "pick another address with --listen / --proxy-listen"
        ) from None
    return listener


DEFER_ACCEPT = 1  # seconds a connection may stay silent before it is accepted anyway


def tune(listener: socket.socket) -> None:
    """Options every connection the proxy accepts needs, set once on the listener (Linux
    passes them on to accepted sockets): TCP_NODELAY, so segments are relayed as they come
    (Nagle would hold a small one, a TLS handshake message, until the client's delayed ACK);
    and TCP_DEFER_ACCEPT, so a connection is taken off the queue with its request head
    already there (a proxy's client speaks first): one wake-up and no wait for the head per
    connection (under 100 concurrent clients a fifth of the connections were accepted before
    their head had come). A client silent for `DEFER_ACCEPT` seconds is accepted anyway, and
    meets the handshake timeout as before. The transparent listener does not defer: a
    protocol whose server speaks first passes there."""
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, DEFER_ACCEPT)


def _raise_file_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
