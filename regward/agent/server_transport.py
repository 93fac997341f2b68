"""The agent's connections to its Regward server, marked so its own rules never take them.

    transport = server_transport(ssl_context, mark)     # for httpx.AsyncClient(transport=...)

With transparent enforcement on (loopback by default, `--transparent-host` for every address),
the agent's nftables rules take this machine's new connections on the taken ports, except the
sockets carrying the agent's mark (`TransparentSettings.mark`). The sync long-poll, check-ins
and denial reports must be among those: through the agent's own listener they would be decided
by the policy, and one that refuses the server's host (or no verified policy at all, which
refuses everything) would cut the agent off from the revision that would set it right.

The mark has to be on the socket before its first packet (the rules decide a connection by its
SYN), and httpx sets `socket_options` only after connecting, so the connection is made here,
by the proxy's `Dialer` (which marks before it connects), and handed to httpcore as a stream.
"""

from __future__ import annotations

import ssl
from typing import Any

import anyio
import httpcore
import httpx
from httpcore._backends.anyio import AnyIOStream

from regward.agent.http1 import ProtocolError
from regward.agent.proxy.protocol import Target
from regward.agent.proxy.settings import ProxySettings
from regward.agent.proxy.upstream import Dialer


class MarkedBackend(httpcore.AnyIOBackend):
    """httpcore's network backend, its TCP connections made with the socket mark `mark`."""

    def __init__(self, mark: int, connect_timeout: float = 10.0) -> None:
        self.mark = mark
        self._dialer = Dialer(ProxySettings(mark=mark, connect_timeout=connect_timeout))

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            sock = await self._dialer.connect(Target(host, port))
        except ProtocolError as error:
            failure = httpcore.ConnectTimeout if error.status == 504 else httpcore.ConnectError
            raise failure(error.message) from None
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            stream = await anyio.abc.SocketStream.from_socket(sock)
        except BaseException:
            sock.close()
            raise
        return AnyIOStream(stream)


def server_transport(context: ssl.SSLContext, mark: int | None) -> httpx.AsyncHTTPTransport:
    """httpx's transport for the server: as httpx makes it, with `mark` on every connection
    (none: the system's ordinary connections)."""
    transport = httpx.AsyncHTTPTransport(verify=context)
    if mark is not None:
        limits = httpx.Limits()  # httpx's defaults, as the transport above has them
        # httpx takes no network backend of its own; its pool, made again with one.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=MarkedBackend(mark),
        )
    return transport
