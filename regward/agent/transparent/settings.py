"""What transparent enforcement takes and how: interfaces, ports, the listener, its limits.

    parse_interfaces("docker0,br-*")   -> ("docker0", "br-*")
    parse_ports("80,443,5000")         -> frozenset({80, 443, 5000})
    parse_ports("all")                 -> ALL_PORTS
    parse_interfaces("eth0;rm"), parse_ports("80,x"), parse_ports("0")   ConfigError
    describe_taken(("docker0",), True, {443, 80}) -> "interfaces docker0; loopback; ports 80,443"
    describe_taken((), True, {443}, host=True)     -> "this machine; ports 443"

An interface pattern is a Linux interface name (at most 15 characters of letters, digits and
`_.-@:`) with an optional trailing `*` (nftables matches it as a prefix); a port list is
comma-separated numbers from 1 to 65535, or `all`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from regward.errors import ConfigError

ALL_PORTS: frozenset[int] = frozenset()
"""`--transparent-ports all`: every destination port (the empty set stands for it)."""
DEFAULT_INTERFACES = ("docker0", "br-*")
DEFAULT_PORTS = frozenset({80, 443, 5000})
DEFAULT_LISTEN_PORT = 3129
MARK = 0x5257
"""The firewall mark on the agent's own upstream sockets: the rules leave them alone."""
_INTERFACE = re.compile(r"[A-Za-z0-9_.@:-]{1,15}\*?|[A-Za-z0-9_.@:-]{0,14}\*")


@dataclass(frozen=True)
class TransparentSettings:
    """One transparent listener and the rules that feed it: connections from the container
    `interfaces` (none: containers are not taken) and, with `loopback`, this machine's own
    connections to loopback addresses; with `host`, this machine's own connections to any
    address (containers on the host's network, clients that ignore the proxy variables)."""

    interfaces: tuple[str, ...] = DEFAULT_INTERFACES
    loopback: bool = True
    host: bool = False
    ports: frozenset[int] = DEFAULT_PORTS  # ALL_PORTS: every port
    listen_port: int = DEFAULT_LISTEN_PORT
    skip_ports: frozenset[int] = frozenset()  # the agent's other listeners (the proxy)
    mark: int = MARK
    silence: float = 0.3  # a client silent this long may speak a server-first protocol
    handshake_timeout: float = 10.0  # to send a whole request head or TLS ClientHello
    probe_timeout: float = 3.0  # for the `GET /v2/` probe of an unknown TLS host
    probe_ttl: float = 600.0  # seconds a probe's answer is kept
    probe_cache: int = 4096  # answers kept; the oldest goes first
    max_connections: int = 4096
    idle_timeout: float = 300.0  # a relay with no bytes either way for this long is closed

    @property
    def all_ports(self) -> bool:
        return self.ports == ALL_PORTS

    @property
    def bind_hosts(self) -> tuple[str, str]:
        """Where the listener binds: every address when containers' connections arrive on
        their interfaces' addresses, else loopback only (an output redirect goes there)."""
        if self.interfaces:
            return ("0.0.0.0", "::")  # noqa: S104 - the container networks' addresses
        return ("127.0.0.1", "::1")


def parse_interfaces(text: str) -> tuple[str, ...]:
    """`--transparent-interfaces`: comma-separated names, each optionally ending in `*`."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ConfigError(
            f"--transparent-interfaces {text!r} names no interface; use e.g. docker0,br-*"
        )
    for name in names:
        if not _INTERFACE.fullmatch(name):
            raise ConfigError(
                f"--transparent-interfaces: {name!r} is not an interface name (at most 15 "
                "letters, digits or _.-@:, optionally ending in *), as in docker0,br-*"
            )
    return tuple(dict.fromkeys(names))


def parse_ports(text: str) -> frozenset[int]:
    """`--transparent-ports`: comma-separated ports 1-65535, or `all` (ALL_PORTS)."""
    if text.strip().lower() == "all":
        return ALL_PORTS
    ports: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part.isascii() or not part.isdigit() or not 0 < int(part) < 65536:
            raise ConfigError(
                f"--transparent-ports: {part!r} is not a port from 1 to 65535; give a list "
                "such as 80,443,5000, or all"
            )
        ports.add(int(part))
    return frozenset(ports)


def describe_taken(
    interfaces: Sequence[str], loopback: bool, ports: Collection[int], host: bool = False
) -> str:
    """What the rules take, in the words of the agent's log and `regward status`; no `ports`
    (ALL_PORTS) is every port; `host` (this machine's connections anywhere) covers loopback."""
    taken = [f"interfaces {','.join(interfaces)}"] if interfaces else []
    taken += ["this machine"] if host else ["loopback"] if loopback else []
    shown = ",".join(map(str, sorted(ports))) if ports else "all"
    return "; ".join([*(taken or ["nothing"]), f"ports {shown}"])
