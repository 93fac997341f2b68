"""What each event loop of a set of workers (`workers.ProxyWorkers`) serves, on the listening
sockets the parent bound once: the egress proxy or the transparent listener.

    sockets = bind(settings)                 # the parent: ProxySettings -> the proxy's socket,
                                             # TransparentSettings -> the listener's IPv4 and IPv6
    server = make(settings, guard)           # every loop: a ProxyServer or a TransparentListener
    await start(server, sockets)             # accepting from the queue all loops share

The settings' type says which; both kinds enforce what `guard` decides, end what `recheck()`
finds refused, and count their connections and relayed bytes the same way.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from .loop import EventLoop
from .server import ProxyServer, announce, listen
from .settings import ProxySettings

if TYPE_CHECKING:
    from regward.agent.guard import Guard
    from regward.agent.transparent.listener import TransparentListener
    from regward.agent.transparent.settings import TransparentSettings

    Settings = ProxySettings | TransparentSettings


class Served(Protocol):
    """One loop's server, as the workers drive it."""

    @property
    def connections(self) -> int: ...

    def bytes_relayed(self) -> tuple[int, int]: ...

    def recheck(self) -> None: ...

    async def close(self) -> None: ...


def bind(settings: Settings) -> list[socket.socket]:
    """The listening sockets every loop accepts from; ConfigError names what to change."""
    if isinstance(settings, ProxySettings):
        return [listen(settings)]
    from regward.agent.transparent.listener import bind as bind_transparent

    return bind_transparent(settings)


def make(settings: Settings, guard: Guard) -> Served:
    """A server for `settings` that asks `guard` (its decisions, messages and reports)."""
    if isinstance(settings, ProxySettings):
        return ProxyServer.for_guard(settings, guard)
    from regward.agent.transparent.listener import TransparentListener

    return TransparentListener(settings, guard)


async def start(server: Served, sockets: list[socket.socket]) -> None:
    """Start `server` accepting on `sockets` (shared with the other loops)."""
    if isinstance(server, ProxyServer):
        await server.start(sockets[0])
    else:
        await _transparent(server).start(sockets)


def probes(server: Served) -> int:
    """Unknown TLS servers this loop probed (the transparent listener's; the proxy probes none)."""
    return 0 if isinstance(server, ProxyServer) else _transparent(server).probes


def _transparent(server: Served) -> TransparentListener:
    from regward.agent.transparent.listener import TransparentListener

    if not isinstance(server, TransparentListener):
        raise TypeError(f"{server!r} is neither a ProxyServer nor a TransparentListener")
    return server


def shutdown_grace(settings: Settings) -> float:
    """Seconds open connections may finish after a stop (the transparent listener ends them)."""
    return settings.shutdown_grace if isinstance(settings, ProxySettings) else 0.0


def event_loop(settings: Settings) -> EventLoop:
    """The event loop a worker process runs: the proxy's settings name it (uvloop unless
    `--loop asyncio`); the transparent listener's run on asyncio's, as it was tested."""
    return settings.event_loop if isinstance(settings, ProxySettings) else "asyncio"


def kind(settings: Settings) -> str:
    """What `settings` serve, for log lines."""
    return "proxy" if isinstance(settings, ProxySettings) else "transparent listener"


def announce_address(settings: Settings, sockets: list[socket.socket]) -> None:
    """Log where the proxy listens (with its warning beyond loopback); the transparent
    listener's rules say where its connections come from."""
    if isinstance(settings, ProxySettings):
        announce(sockets[0].getsockname()[:2])
