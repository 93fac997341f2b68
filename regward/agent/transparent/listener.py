"""The transparent listener: connections the agent's nftables rules redirected, decided by the
name the client sends and never by the address it chose.

    async with TransparentListener(settings, guard) as listener:
        ...                       # listener.recheck() after a policy change (guard.watch)

For each connection: the original destination (`origin.original_destination`), then the
client's first bytes, read without answering:

    TLS ClientHello    the server name (or, without one, the destination address)
    HTTP request head  Host and path (origin form, as clients send to a server)
    anything else      not a registry protocol: passed to the destination untouched
    nothing, for `settings.silence` s
                       the destination is dialled; if it speaks first (SSH, SMTP, databases)
                       the bytes flow untouched, if the client speaks first, as above

The name goes to the guard (`decide_host`). Allowed by an entry: the agent dials that name
itself (its own resolver's address, whatever the client connected to) and relays. Refused: a
registry request (HTTP `/v2/...`, a host the policy or the catalog knows as a registry, or a
TLS server the probe finds to be one) gets a 403 with the product's sentence (plain HTTP) or a
closed connection (TLS), and a denial report naming the container's address and interface;
anything else is not registry traffic and passes to where the client was going. Plain HTTP
keeps its connection alive (`proxy.forward`, as the proxy's absolute-form requests): every
request on it is decided by its own Host and path, so a second request cannot ride on the
first one's decision. An allowed request that asks to switch protocols (a WebSocket) carries
its `Upgrade` on; after the server's `101` both directions are relayed untouched, to where that
request's decision sent it, until either side ends or a new revision refuses the host. A relay
(TLS, other bytes, an upgraded connection) or a kept plain-HTTP connection that moves no byte
for `settings.idle_timeout` (5 minutes) is closed, as the proxy's tunnels are.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regward.agent.http1 import ProtocolError, head_end
from regward.agent.proxy.forward import Route, forward
from regward.agent.proxy.protocol import (
    NEED_MORE,
    Request,
    Target,
    client_hello_sni,
    error_response,
    parse_request,
    policy_host,
    starts_tls,
)
from regward.agent.proxy.relay import Tunnels
from regward.agent.proxy.repository import repository_refusal, request_action, routed_paths
from regward.agent.proxy.settings import ProxySettings
from regward.agent.proxy.upstream import Dialer
from regward.errors import ConfigError
from regward.policy import Action, Decision
from regward.policy.engine import registry_host

from .origin import Interfaces, original_destination
from .probe import RegistryProbe
from .settings import TransparentSettings

if TYPE_CHECKING:
    from regward.agent.guard import Guard

log = logging.getLogger("regward.agent.transparent")

_HTTP_START = re.compile(rb"[A-Z]{1,16} ")
_MAYBE_HTTP = re.compile(rb"[A-Z]{1,16}")
_REGISTRY_PATH = re.compile(r"/v2(?:/|$)")
_REGISTRY_OBJECT = re.compile(r"/v2/(.+)/(manifests|blobs)/([^/?]+)")


@dataclass(frozen=True)
class Client:
    """Where a connection came from and was going, for logs and denial reports."""

    address: str
    interface: str
    destination: tuple[str, int]

    def describe(self) -> str:
        where = "this machine" if self.interface == "lo" else f"{self.address} on {self.interface}"
        return f"from {where}"


@dataclass(frozen=True)
class First:
    """What the client sent first: a TLS hello, an HTTP request head, or other bytes."""

    data: bytes
    tls_name: str | None = None
    tls: bool = False
    request: Request | None = None
    rest: bytes = b""


class TransparentListener:
    """Accepts redirected connections on `settings.listen_port` (IPv4 and, where the machine
    has it, IPv6) and decides each one with `guard`."""

    def __init__(self, settings: TransparentSettings, guard: Guard) -> None:
        self.settings = settings
        self.guard = guard
        self.proxy_settings = ProxySettings(
            host="0.0.0.0",  # noqa: S104 - a label for logs; the listeners bind below
            port=settings.listen_port,
            max_connections=settings.max_connections,
            handshake_timeout=settings.handshake_timeout,
            idle_timeout=settings.idle_timeout,
            mark=settings.mark,
        )
        self.probe = RegistryProbe(settings)
        self._dialer = Dialer(self.proxy_settings)
        self._tunnels = Tunnels()
        self._interfaces = Interfaces()
        self._listeners: list[socket.socket] = []
        self._tasks: dict[asyncio.Task[None], list[tuple[str, int]]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.refused = 0  # connections refused since start (for tests and the bench)

    async def start(self, sockets: list[socket.socket] | None = None) -> None:
        """Bind (`bind`) and accept; with `sockets` (bound by the parent of a set of workers
        and shared with the others), accept on those instead."""
        loop = asyncio.get_running_loop()
        for sock in bind(self.settings) if sockets is None else sockets:
            sock.setblocking(False)
            loop.add_reader(sock.fileno(), self._accept, sock)
            self._listeners.append(sock)
        self._sweeper = loop.create_task(
            self._tunnels.sweep_idle(self.settings.idle_timeout), name="transparent-idle-sweeper"
        )
        if sockets is None:
            log.info("transparent listener on port %d", self.settings.listen_port)

    def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(64):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                log.warning("transparent accept failed: %s", error)
                return
            if len(self._tasks) >= self.settings.max_connections:
                client.close()
                continue
            client.setblocking(False)  # TCP_NODELAY it has from the listener (`bind`)
            names: list[tuple[str, int]] = []
            task = loop.create_task(self._serve(client, names), name="transparent-connection")
            self._tasks[task] = names
            task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)

    @property
    def connections(self) -> int:
        return len(self._tasks)

    @property
    def probes(self) -> int:
        """Unknown TLS servers probed so far."""
        return self.probe.probes

    def bytes_relayed(self) -> tuple[int, int]:
        """Bytes relayed so far: client to upstream, upstream to client."""
        return self._tunnels.bytes_relayed()

    def recheck(self) -> None:
        """The policy changed: end open connections to registry names it no longer allows."""
        for task, names in list(self._tasks.items()):
            for host, port in names:
                try:
                    allowed = self.guard.decide_host(host, port, record=False).allowed
                except Exception:
                    allowed = False
                if not allowed:
                    log.info("transparent: ended a connection to %s:%d (now refused)", host, port)
                    task.cancel()
                    break

    async def _serve(self, client: socket.socket, names: list[tuple[str, int]]) -> None:
        upstream: socket.socket | None = None
        try:
            destination = original_destination(client)
            if destination is None:
                log.info("transparent: closed a connection that was not redirected to it")
                return
            who = Client(
                client.getpeername()[0],
                self._interfaces.name_of(client.getsockname()[0]),
                destination,
            )
            early = await self._silent_start(client, destination)
            if isinstance(early, socket.socket):
                upstream = early
            elif early == "relayed":
                return
            first = await self._first(client, destination[1])
            if first.request is not None:  # plain HTTP: every request decided by itself
                dialled = None if upstream is None else (Target(*destination), upstream)
                route = self._router(client, who, names)
                parse = functools.partial(parse_request, origin_port=destination[1])
                settings, tunnels, dialer = self.proxy_settings, self._tunnels, self._dialer
                request, rest = first.request, first.rest
                await forward(
                    tunnels, settings, dialer, client, request, rest, route, parse, dialled,
                    upgrades=True,
                )  # fmt: skip
                return
            plan, decision, name = await self._plan(first, who)
            if decision is not None and plan == "refuse":
                await self._refuse(client, first, who, decision, name)
                return
            if plan == "upstream":
                names.append(name)
                if upstream is not None:
                    upstream.close()
                upstream = await self._dialer.connect(Target(*name))
            elif upstream is None:
                upstream = await self._dialer.connect(Target(*destination))
            await self._relay(client, upstream, first)
        except ProtocolError as error:
            log.info("transparent: %s", error.message)
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    await asyncio.get_running_loop().sock_sendall(
                        client, error_response(error.status, error.message)
                    )
        except (OSError, TimeoutError):
            pass  # either side went away
        except Exception:  # fail closed: whatever went wrong, the connection ends here
            log.exception("transparent: a connection failed")
        finally:
            client.close()
            if upstream is not None:
                upstream.close()

    async def _silent_start(
        self, client: socket.socket, destination: tuple[str, int]
    ) -> socket.socket | str | None:
        """None when the client spoke within `silence`; else dial the destination and see who
        speaks first: "relayed" when the server did (a server-first protocol, relayed to its
        end), or the upstream socket when the client did after all. A client that ends its
        side without a byte has nothing to decide by: what the server says is relayed."""
        if _has_bytes(client):  # the usual case, a client that spoke at once: no wait, no timer
            return None
        if await _readable(client, self.settings.silence) and not _at_end(client):
            return None
        upstream = await self._dialer.connect(Target(*destination))
        try:
            loop = asyncio.get_running_loop()
            client_ready = loop.create_task(_readable(client, None), name="transparent-wait")
            server_ready = loop.create_task(_readable(upstream, None), name="transparent-wait")
            done, pending = await asyncio.wait(
                {client_ready, server_ready}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if client_ready in done and not _at_end(client):
                return upstream
            await self._splice(client, upstream)
            upstream.close()
            return "relayed"
        except BaseException:
            upstream.close()
            raise

    async def _first(self, client: socket.socket, port: int) -> First:
        """Read the client's first bytes until they are a whole TLS hello, a whole HTTP head,
        or clearly neither."""
        loop = asyncio.get_running_loop()
        try:
            data = client.recv(65536)  # usually all there already: no timer, no registration
        except (BlockingIOError, InterruptedError):
            data = b""
        else:
            if not data:
                raise OSError("the client closed before saying anything")
            first = _classify(data, port)
            if first is not None:
                return first
        try:
            async with asyncio.timeout(self.settings.handshake_timeout):
                while True:
                    chunk = await loop.sock_recv(client, 65536)
                    if not chunk:
                        raise OSError("the client closed before saying anything")
                    data += chunk
                    first = _classify(data, port)
                    if first is not None:
                        return first
        except TimeoutError:
            raise ProtocolError(408, "request head not received in time") from None

    async def _plan(
        self, first: First, who: Client
    ) -> tuple[str, Decision | None, tuple[str, int]]:
        """("pass" | "upstream" | "refuse", the decision, the (name, port) decided on)."""
        address, port = who.destination
        if first.request is not None:
            name = (first.request.target.host, first.request.target.port)  # as policy_host reads it
        elif first.tls:
            name = (policy_host(first.tls_name) if first.tls_name else address, port)
        else:
            return "pass", None, (address, port)
        try:
            decision = self.guard.decide_host(*name, source="transparent", record=False)
        except Exception:  # fail closed: a broken decision never opens a connection
            log.exception("transparent: host decision failed for %s:%d", *name)
            raise ProtocolError(
                503, f"Regward could not check {name[0]} against the policy"
            ) from None
        if decision.allowed and first.request is not None and decision.entry is not None:
            refused = self._repository_refusal(first.request, name)
            if refused is not None:
                return "refuse", refused, name
        if decision.allowed:
            return ("upstream" if decision.entry is not None else "pass"), decision, name
        policy = self.guard.enforcement.policy
        if first.request is not None and any(
            _REGISTRY_PATH.match(path) for path in routed_paths(first.request.path)
        ):
            return "refuse", decision, name
        if policy is None or registry_host(policy, *name):
            return "refuse", decision, name
        if first.tls and await self.probe.is_registry(address, port, first.tls_name or ""):
            return "refuse", decision, name
        return "pass", decision, name

    def _repository_refusal(self, request: Request, name: tuple[str, int]) -> Decision | None:
        """The refusal by the repository and action a plain-HTTP request names, if any."""

        def decide(action: Action, reference: str) -> Decision:
            return self.guard.decide(action, reference, source="transparent", record=False)

        return repository_refusal(decide, request, *name)

    async def _refuse(
        self,
        client: socket.socket,
        first: First,
        who: Client,
        decision: Decision,
        name: tuple[str, int],
    ) -> None:
        self.refused += 1
        message = self.guard.message(decision)
        action, target = "connect", f"{name[0]}:{name[1]}"
        if first.request is not None:
            found = _REGISTRY_OBJECT.match(routed_paths(first.request.path)[1])
            if found:
                registry = target if name[1] not in (80, 443) else name[0]
                separator = "@" if ":" in found[3] else ":"
                target = f"{registry}/{found[1]}{separator}{found[3]}"
                action = request_action(first.request.method).value
        self.guard.report(
            decision, action, target, name[0], source="transparent", origin=who.describe()
        )
        log.info("transparent refused %s %s: %s", target, who.describe(), message)
        if first.request is not None:
            await asyncio.get_running_loop().sock_sendall(client, error_response(403, message))

    def _router(self, client: socket.socket, who: Client, names: list[tuple[str, int]]) -> Route:
        """The decision for each plain-HTTP request on `client`, by its own Host and path:
        the target to dial (the name an entry allows, else where the client was going), or
        None once its refusal is sent. `names` keeps the names dialled, for `recheck`."""

        async def route(request: Request) -> Target | None:
            first = First(b"", request=request)
            plan, decision, name = await self._plan(first, who)
            if decision is not None and plan == "refuse":
                await self._refuse(client, first, who, decision, name)
                return None
            if plan == "upstream":
                if name not in names:  # a long connection's list stays short
                    names.append(name)
                return Target(*name)
            return Target(*who.destination)

        return route

    async def _relay(self, client: socket.socket, upstream: socket.socket, first: First) -> None:
        """TLS or other bytes: the first ones, then both directions untouched."""
        await asyncio.get_running_loop().sock_sendall(upstream, first.data)
        await self._splice(client, upstream)

    async def _splice(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions, untouched, until both end (or either fails)."""
        with self._tunnels.opened(client, upstream) as tunnel:
            tunnel.up.start()
            tunnel.down.start()
            await tunnel.wait()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._listeners:
            loop.remove_reader(sock.fileno())
            sock.close()
        self._listeners.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        self._tunnels.abort_all()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))
        self._tunnels.close()

    async def __aenter__(self) -> TransparentListener:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def bind(settings: TransparentSettings) -> list[socket.socket]:
    """The listener's sockets on `settings.listen_port`: IPv4 and, where the machine has it,
    IPv6. ConfigError names the port and the flag that changes it."""
    sockets: list[socket.socket] = []
    for family, host in zip((socket.AF_INET, socket.AF_INET6), settings.bind_hosts, strict=True):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted sockets inherit it (Linux): segments relayed as they come, not held
            # by Nagle until the client's delayed ACK; one setsockopt a connection fewer.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, settings.listen_port))
            sock.listen(1024)
        except OSError as error:
            sock.close()
            if family == socket.AF_INET6:
                log.info("transparent listener: no IPv6 here (%s)", error.strerror)
                continue
            for bound in sockets:
                bound.close()
            raise ConfigError(
                f"the transparent listener cannot listen on port {settings.listen_port}: "
                f"{error.strerror}; pick another with --transparent-listen PORT"
            ) from None
        sockets.append(sock)
    return sockets


def _classify(data: bytes, port: int) -> First | None:
    """What the client's first bytes are: a whole TLS hello, a whole HTTP head, clearly
    neither, or (None) not yet known."""
    if starts_tls(data):
        name = client_hello_sni(data)
        return None if name == NEED_MORE else First(data, tls_name=name, tls=True)
    if _HTTP_START.match(data):
        end = head_end(data)
        if end < 0:
            return None
        request = parse_request(data[:end], origin_port=port)
        return First(data, request=request, rest=data[end:])
    return None if _MAYBE_HTTP.fullmatch(data) else First(data)


def _has_bytes(sock: socket.socket) -> bool:
    """Whether `sock` has bytes to read right now (not its end)."""
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except (BlockingIOError, InterruptedError):
        return False


def _at_end(sock: socket.socket) -> bool:
    """Whether the peer closed its sending side with nothing left to read."""
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False


async def _readable(sock: socket.socket, timeout: float | None) -> bool:
    """Whether `sock` has bytes (or its end) to read within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        async with asyncio.timeout(timeout):
            await ready
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(sock.fileno())
