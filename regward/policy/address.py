"""Registry address patterns: which hosts and ports an entry of the policy covers.

Grammar:

    address   := pattern [ ":" port ]
    pattern   := hostname | "*." hostname | IPv4 | "[" IPv6 "]"

Hostnames compare case-insensitively, with a trailing dot removed and IDNA (UTS #46) applied, so
`GHCR.IO.` is `ghcr.io` and `bücher.example` is `xn--bcher-kva.example`. `*.example.com` covers
every subdomain at any depth but never `example.com` itself. Matching is by whole labels:
`docker.io` never covers `docker.io.evil.com`. Without a port an address covers the default
ports (443, and 80 for plain-HTTP registries); with one, exactly that port.

    ghcr.io                ghcr.io:443, ghcr.io:80
    registry.internal:5000 registry.internal:5000 only
    *.azurecr.io           acme.azurecr.io, a.b.azurecr.io; not azurecr.io
    [::1]:5000             the IPv6 loopback, port 5000
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

from regward.errors import InvalidAddress, quote

DEFAULT_PORTS = frozenset({443, 80})
MAX_HOST_LENGTH = 253
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
"""One hostname label, lowercase ASCII (after IDNA), 1-63 characters."""
_LABEL = re.compile(LABEL)
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address pattern; build it with `Address.parse`."""

    host: str
    """Normalized host; for a wildcard, the domain after `*.`; IPv6 without brackets."""
    port: int | None
    wildcard: bool = False

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse an address pattern; raise InvalidAddress naming the value and the fix."""
        if not isinstance(text, str):
            raise InvalidAddress(
                f"registry address must be a string, not {quote(text)}", value=text
            )
        raw = text.strip()
        if not raw:
            raise InvalidAddress("registry address is empty", value=text)
        if "://" in raw:
            host = raw.split("://", 1)[1].split("/", 1)[0]
            raise InvalidAddress(
                f"registry address {quote(text)} has a scheme: give the host only, e.g. "
                f"{quote(host or 'ghcr.io')}",
                value=text,
            )
        if "/" in raw:
            host, path = raw.split("/", 1)
            raise InvalidAddress(
                f"registry address {quote(text)} has a path: give the host only "
                f"({quote(host)}) and list {quote(path.strip('/'))} under repositories",
                value=text,
            )
        host, port = _split_port(raw, text)
        wildcard = host.startswith("*.")
        if wildcard:
            host = host[2:]
        elif "*" in host:
            raise InvalidAddress(
                f"registry address {quote(text)}: a wildcard is allowed only as a leading '*.'"
            )
        host = normalize_host(host, text)
        if wildcard and _is_ip(host):
            raise InvalidAddress(f"registry address {quote(text)}: an IP address cannot take '*.'")
        return cls(host=host, port=port, wildcard=wildcard)

    def matches(self, host: str, port: int) -> bool:
        """True when the normalized `host` and `port` are covered by this pattern."""
        if self.port is None:
            if port not in DEFAULT_PORTS:
                return False
        elif port != self.port:
            return False
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Orders patterns that match the same host: exact over wildcard, longer, with port."""
        return (0 if self.wildcard else 1, self.host.count(".") + 1, self.port is not None)

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.host)

    def __str__(self) -> str:
        return join_host_port(("*." if self.wildcard else "") + self.host, self.port)


def join_host_port(host: str, port: int | None = None) -> str:
    """`host:port`, or `host` alone without a port, with brackets around an IPv6 host (Go's
    `net.JoinHostPort`): `("::1", 5000)` -> `[::1]:5000`, `("ghcr.io", None)` -> `ghcr.io`."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def normalize_host(host: str, original: str | None = None) -> str:
    """Lowercase, strip one trailing dot, IDNA-encode; IP literals in canonical form.

    Raise InvalidAddress for anything that is not a hostname or an IP address.
    """
    shown = original if original is not None else host
    if ":" in host or host.startswith("["):  # an IPv6 literal, with or without brackets
        try:
            return ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]")).compressed
        except ValueError:
            raise InvalidAddress(f"registry address {quote(shown)}: not an IPv6 address") from None
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise InvalidAddress(f"registry address {quote(shown)} has no host")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if host.isascii():
        ascii_host = host.lower()
    else:
        try:
            ascii_host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as error:
            raise InvalidAddress(
                f"registry address {quote(shown)}: not a valid hostname ({error})"
            ) from None
    labels = ascii_host.split(".")
    if len(ascii_host) > MAX_HOST_LENGTH or not all(_LABEL.fullmatch(lbl) for lbl in labels):
        raise InvalidAddress(
            f"registry address {quote(shown)}: not a valid hostname (letters, digits and '-' "
            "in dot-separated labels)"
        )
    if all(label.isdigit() for label in labels):
        # Forms like 127.1 or 2130706433 reach an address through inet_aton; refuse them.
        raise InvalidAddress(f"registry address {quote(shown)}: write an IPv4 address in full")
    return ascii_host


def _split_port(raw: str, original: str) -> tuple[str, int | None]:
    if raw.startswith("["):
        close = raw.find("]")
        if close == -1:
            raise InvalidAddress(
                f"registry address {quote(original)}: missing ']' after IPv6 address"
            )
        host, rest = raw[: close + 1], raw[close + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidAddress(f"registry address {quote(original)}: unexpected text after ']'")
        port_text = rest[1:] if rest else None
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
    elif ":" in raw:
        raise InvalidAddress(
            f"registry address {quote(original)}: put an IPv6 address in brackets, "
            "e.g. '[::1]:5000'"
        )
    else:
        host, port_text = raw, None
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise InvalidAddress(f"registry address {quote(original)}: port must be 1-65535")
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
