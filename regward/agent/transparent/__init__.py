"""Enforcement that needs no client's cooperation: the agent's nftables table sends new TCP
connections from container networks (and this machine's own connections to loopback
registries) to a transparent listener that decides by the name the client sends.

    settings = TransparentSettings(interfaces=("docker0", "br-*"), ports=DEFAULT_PORTS)
    async with Transparent(settings, guard) as transparent:   # listener + rules, kept in step
        ...                                                    # rules removed on exit

Layout: `settings` (what is taken, parsed from the flags), `rules` (the nft script and the `nft`
command), `origin` (SO_ORIGINAL_DST, the interface a connection came in on), `probe` (is an
unknown TLS server a registry?), `listener` (the decisions and the relaying, with the egress
proxy's dialer, forwarding and tunnels), `service` (the listener and its rules together).
"""

from .settings import (
    ALL_PORTS,
    DEFAULT_INTERFACES,
    DEFAULT_LISTEN_PORT,
    DEFAULT_PORTS,
    TransparentSettings,
    describe_taken,
    parse_interfaces,
    parse_ports,
)

__all__ = [
    "ALL_PORTS",
    "DEFAULT_INTERFACES",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_PORTS",
    "TransparentSettings",
    "describe_taken",
    "parse_interfaces",
    "parse_ports",
]
