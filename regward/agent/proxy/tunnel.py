"""A CONNECT tunnel, after its "200 Connection established": the client's first bytes are
checked, then both directions are spliced until either side ends.

    await run_tunnel(tunnels, settings, client, upstream, target, rest, plain, name_allowed)

The registry's bytes flow at once; the client's first bytes are read first: a TLS ClientHello
naming another server than the tunnel's (domain fronting) needs `name_allowed(name)`, and
bytes that are not TLS need `plain`, or the tunnel is closed.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from regward.agent.http1 import ProtocolError

from .protocol import NEED_MORE, Target, client_hello_sni, starts_tls
from .relay import Tunnel, Tunnels, send_all
from .settings import ProxySettings

log = logging.getLogger("regward.agent.proxy")


async def run_tunnel(
    tunnels: Tunnels,
    settings: ProxySettings,
    client: socket.socket,
    upstream: socket.socket,
    target: Target,
    rest: bytes,
    plain: bool,
    name_allowed: Callable[[str], bool],
) -> None:
    """Relay until the tunnel ends. `rest` is what the client sent behind its request head;
    `name_allowed` decides (and logs) a TLS server name other than `target.host`. A client
    that stays silent is ended by the idle sweep, as any quiet tunnel."""
    with tunnels.opened(client, upstream) as tunnel:
        tunnel.down.start()
        first = await _client_hello(settings, tunnel, client, rest)
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
        if name is not None and name != target.host and not name_allowed(name):
            return
        await send_all(upstream, hello)
        tunnel.start_up()  # takes over the client's watch: no second registration
        await tunnel.wait()


async def _client_hello(
    settings: ProxySettings, tunnel: Tunnel, client: socket.socket, data: bytes
) -> tuple[bytes, str | None] | None:
    """The client's first bytes and the server name they ask for (when they are a TLS
    ClientHello); None when the client leaves or the tunnel ends first (the idle sweep, a
    failed upstream). The client's socket stays registered for reading (`Tunnel.waiting`), so
    the relay that follows takes the registration over."""
    try:
        while True:
            if data:
                name = client_hello_sni(data)
                if name != NEED_MORE:
                    return data, name
            elif not await tunnel.readable(client):
                # Nothing yet (clients speak once they read the "200"): wait rather than try
                # a read that fails.
                return None
            try:
                chunk = client.recv(settings.read_size)
            except (BlockingIOError, InterruptedError):
                if not await tunnel.readable(client):
                    return None
                continue
            if not chunk:
                return None
            data += chunk
    except ProtocolError:
        return None
    except OSError:
        return None
