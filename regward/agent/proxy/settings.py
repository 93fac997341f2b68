"""What the proxy is given: where it listens, its limits, and the host decision it asks.

    parse_listen("127.0.0.1:3128") -> ("127.0.0.1", 3128)
    parse_listen("[::1]:3128")     -> ("::1", 3128)
    parse_listen("::1:3128"), parse_listen("[::1:3128"), parse_listen("host:0")  ConfigError

`parse_listen` is the one reader of a listen address, for `regward agent proxy --listen`,
`regward agent run --proxy-listen` and the dockerd settings `regward agent install` writes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from regward.agent.http1 import MAX_HEAD
from regward.defaults import PROXY_LISTEN, PROXY_PORT
from regward.errors import ConfigError
from regward.policy import Decision

from .loop import EventLoop

HostDecider = Callable[[str, int], Decision]
DEFAULT_LISTEN = PROXY_LISTEN
_PORT = re.compile(r"[0-9]{1,5}")
_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?")


@dataclass(frozen=True)
class ProxySettings:
    """Where the proxy listens and the limits that keep slow or hostile clients cheap."""

    host: str = "127.0.0.1"
    port: int = PROXY_PORT
    max_connections: int = 4096
    max_head: int = MAX_HEAD  # a client's request head
    max_response_head: int = 4 * MAX_HEAD  # a registry's response head (many Link fields)
    handshake_timeout: float = 10.0  # to send a complete request head (slowloris)
    connect_timeout: float = 10.0  # to resolve and connect to the registry
    idle_timeout: float = 300.0  # a tunnel with no bytes either way for this long is closed
    shutdown_grace: float = 2.0  # open tunnels may finish this long after close()
    backlog: int = 1024
    read_size: int = 65536  # bytes asked of one socket read the proxy makes itself
    accepts_per_wakeup: int = 64  # connections taken per readiness of the listener, then yield
    accept_pause: float = 0.1  # seconds to stop accepting after accept() fails (EMFILE)
    resolve_ttl: float = 5.0  # seconds a registry name's addresses are reused
    resolve_cache: int = 512  # names kept; the cache starts over when full
    mark: int | None = None  # SO_MARK on upstream sockets (the agent's nftables rules skip them)
    event_loop: EventLoop = "uvloop"  # worker processes' loop (`regward.agent.proxy.loop`)

    @classmethod
    def from_listen(cls, listen: str) -> ProxySettings:
        """Default limits on `listen`, as given to --listen."""
        host, port = parse_listen(listen)
        return cls(host=host, port=port)


def parse_listen(listen: str) -> tuple[str, int]:
    """`HOST:PORT` or `[V6]:PORT` into (host, port), port 1-65535; ConfigError names the bad
    value and the forms that work."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = _ipv6(host[1:-1])
    elif not _NAME.fullmatch(host):
        host = ""
    if not sep or not host or not _PORT.fullmatch(port) or not 0 < int(port) < 65536:
        raise ConfigError(
            f"listen address {listen!r} is not HOST:PORT with a port of 1-65535; "
            f"use e.g. {DEFAULT_LISTEN} or [::1]:{PROXY_PORT}"
        )
    return host, int(port)


def _ipv6(text: str) -> str:
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return ""
