"""Where a redirected connection was going, and where it came from.

    original_destination(sock) -> ("10.77.0.3", 443) | None   (None: not redirected to us)
    interface_of("172.17.0.1")  -> "docker0"                  (the address it was redirected to)

The kernel keeps a redirected connection's destination in its connection tracking;
`SO_ORIGINAL_DST` (IPv4) and `IP6T_SO_ORIGINAL_DST` (IPv6) read it back. A connection that
reached the listener directly has none, or has the listener's own address: it is refused (the
listener is no proxy for whoever can reach its port).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
import time

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same number
_SIOCGIFADDR = 0x8915
_INTERFACES_TTL = 30.0


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """The (address, port) the client connected to before the redirect, or None when the
    connection was not redirected here."""
    try:
        if sock.family == socket.AF_INET6:
            raw = sock.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
            port = struct.unpack_from("!H", raw, 2)[0]
            address = str(ipaddress.IPv6Address(raw[8:24]))
        else:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port = struct.unpack_from("!H", raw, 2)[0]
            address = socket.inet_ntoa(raw[4:8])
    except OSError:
        return None
    local = sock.getsockname()
    if (address, port) == (local[0], local[1]):
        return None
    return address, port


class Interfaces:
    """IPv4 address -> interface name, read from the kernel and kept `_INTERFACES_TTL` s."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._read = 0.0

    def name_of(self, address: str) -> str:
        """The interface holding `address` (where a redirect sent the connection), `lo` for
        loopback, else the address itself."""
        if ipaddress.ip_address(address).is_loopback:
            return "lo"
        now = time.monotonic()
        if now - self._read > _INTERFACES_TTL or address not in self._names:
            self._names, self._read = _ipv4_interfaces(), now
        return self._names.get(address, address)


def _ipv4_interfaces() -> dict[str, str]:
    names: dict[str, str] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address
            names[socket.inet_ntoa(answer[20:24])] = name
    return names
