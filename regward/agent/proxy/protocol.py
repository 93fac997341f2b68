"""The proxy's HTTP/1.1 protocol logic, sans I/O: bytes in, typed objects or bytes out.

Only what a forward proxy in front of registry clients needs:

    CONNECT registry.example:443 HTTP/1.1       authority form: a tunnel to host:port
    CONNECT [2001:db8::1]:443 HTTP/1.1           IPv6 literals are bracketed
    GET http://reg.local:5000/v2/ HTTP/1.1       absolute form: plain-HTTP registries

Grammar accepted (RFC 9112, strictly; anything else is a `ProtocolError` and a 400). The head
and body framing are the agent's one HTTP/1 reader's (`regward.agent.http1`); on top of it:

    authority    = ( reg-name / IPv4 / "[" IPv6 "]" ) ":" port       port 1-65535, required
    absolute     = "http://" authority-with-optional-port [ path-abempty [ "?" query ] ]

Hosts come out lowercased and without brackets; whether a host may be reached is not decided
here but by the policy core's host decision, and names are resolved only after it.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass

from regward.agent.http1 import Head, ProtocolError, Response, parse_head
from regward.errors import InvalidAddress
from regward.policy.address import join_host_port, normalize_host

MAX_REASON = 300

_REG_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.\-]{0,251}[a-z0-9_.])?")
_PORT = re.compile(r"[0-9]{1,5}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")

# Hop-by-hop fields a proxy must not pass on (RFC 9110 7.6.1), plus the proxy-only ones.
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"proxy-connection",
        b"keep-alive",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"te",
        b"trailer",
        b"upgrade",
    }
)

_PHRASES = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# Registry-style error codes (distribution's errcode list), so docker shows the message.
_CODES = {403: "DENIED", 503: "TOOMANYREQUESTS", 502: "UNAVAILABLE", 504: "UNAVAILABLE"}

CONNECT_ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Target:
    """Where a request wants to go: `host` lowercased, IPv6 without brackets."""

    host: str
    port: int

    @property
    def authority(self) -> str:
        return join_host_port(self.host, self.port)

    @property
    def is_ip(self) -> bool:
        return _is_ip(self.host)


@dataclass(frozen=True, slots=True)
class Request:
    """One proxy request: its head (`http1.Head`), where it goes, and for an absolute-form
    request the origin-form `path` to send there (empty for CONNECT)."""

    head: Head
    target: Target
    path: str

    @property
    def method(self) -> str:
        return self.head.method

    @property
    def version(self) -> str:
        return self.head.version

    @property
    def fields(self) -> tuple[tuple[bytes, bytes], ...]:
        return self.head.fields

    @property
    def is_connect(self) -> bool:
        return self.method == "CONNECT"


def parse_request(head: bytes, origin_port: int | None = None) -> Request:
    """Parse one request head (ending in CRLF CRLF) into a `Request` the proxy serves.

    With `origin_port`, the head is one a client sent to the server itself (the transparent
    listener's): an origin-form target (`GET /v2/ HTTP/1.1`) whose host is its one Host field,
    at `origin_port` (where the client connected) when the field names no port."""
    if origin_port is None and len(head) <= _CACHED_HEAD and head.startswith(b"CONNECT "):
        return _parse_connect(head)
    parsed = parse_head(head)
    if origin_port is not None:
        return _origin_request(parsed, origin_port)
    if parsed.method == "CONNECT":
        return Request(parsed, parse_authority(parsed.target), "")
    target, path = parse_absolute(parsed.target)
    return Request(parsed, target, path)


_CACHED_HEAD = 1024


@functools.lru_cache(maxsize=256)
def _parse_connect(head: bytes) -> Request:
    """A CONNECT head, remembered: a client sends the same few heads over and over, and
    parsing is a pure function of the bytes (a head that fails raises, and is not kept)."""
    parsed = parse_head(head)
    return Request(parsed, parse_authority(parsed.target), "")


def _origin_request(parsed: Head, port: int) -> Request:
    if not parsed.target.startswith("/"):
        raise ProtocolError(400, "request target is not a path (origin form, as in /v2/)")
    if "#" in parsed.target:
        raise ProtocolError(400, "fragment in the request target")
    hosts = parsed.values(b"host")
    if len(hosts) != 1:
        raise ProtocolError(400, "a request needs exactly one Host field")
    host = hosts[0].decode("ascii", "replace")
    return Request(parsed, parse_authority(host, default_port=port), parsed.target)


def parse_authority(text: str, default_port: int | None = None) -> Target:
    """`host:port`, `[v6]:port`, or (with `default_port`) the host alone, as a `Target`."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ProtocolError(400, "unterminated IPv6 literal in the request target")
        literal, rest = text[1:close], text[close + 1 :]
        try:
            host = ipaddress.IPv6Address(literal).compressed
        except ValueError:
            raise ProtocolError(400, "bracketed host is not an IPv6 address") from None
        if "%" in literal:
            raise ProtocolError(400, "IPv6 zone identifiers are not served")
        if rest and not rest.startswith(":"):
            raise ProtocolError(400, "unexpected text after the IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = text.rpartition(":")
        if not colon:
            host, port_text = text, None
        else:
            port_text = port_text_or_empty
        host = host.lower()
        if not host or not _REG_NAME.fullmatch(host) or ".." in host:
            raise ProtocolError(400, "request target host is not a hostname or IPv4 address")
        if not _is_ip(host) and _looks_numeric(host):
            # 127.1, 0x7f.1, 2130706433: inet_aton would turn these into addresses.
            raise ProtocolError(400, "numeric host that is not a full IPv4 address")
        host = policy_host(host)
    if port_text is None:
        if default_port is None:
            raise ProtocolError(400, "CONNECT target needs a port, as in host:443")
        return Target(host, default_port)
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise ProtocolError(400, "request target port is not a number from 1 to 65535")
    return Target(host, int(port_text))


def policy_host(host: str) -> str:
    """`host` as the policy reads it (lowercase, no trailing dot, IDNA): every path (CONNECT,
    absolute-form, the transparent listener's Host and TLS server name) decides and dials
    this one name (`reg.test.` would miss the hosts file's `reg.test`). A host the policy
    cannot read stays as sent, and the policy refuses it."""
    try:
        return normalize_host(host)
    except InvalidAddress:
        return host


def parse_absolute(text: str) -> tuple[Target, str]:
    """`http://authority/path?query` into a `Target` (port 80 by default) and the origin form."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise ProtocolError(400, "this is a proxy: send CONNECT or an absolute http:// URL")
    if scheme.lower() != "http":
        raise ProtocolError(400, f"scheme {scheme.lower()!r} is not proxied; use CONNECT")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if "@" in authority:
        raise ProtocolError(400, "user information in the URL is not served")
    if "#" in path:
        raise ProtocolError(400, "fragment in the request target")
    if not path.startswith("/"):
        path = "/" + path
    return parse_authority(authority, default_port=80), path


def _is_ip(host: str) -> bool:
    if ":" in host:
        return True  # only a bracketed IPv6 literal can hold a colon here
    if host.strip("0123456789."):
        return False  # a name: skip the costly failed parse
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return False
    return True


def _looks_numeric(host: str) -> bool:
    labels = host.rstrip(".").split(".")
    return all(
        label.isdigit() or (label[:2] == "0x" and all(c in "0123456789abcdef" for c in label[2:]))
        for label in labels
    )


def forward_head(request: Request, close: bool, upgrade: tuple[bytes, ...] = ()) -> bytes:
    """The head to send upstream for a request: origin form, hop-by-hop fields dropped, Host
    set to the target the decision was made for, and `Connection: close` when the client's
    connection ends after this request (`close`). The body's framing fields always pass, even
    when `Connection` names them: the proxy frames the body by them (`http1.Body`), and so must
    the registry. With `upgrade` (`upgrade_offer`), those protocols go on in `Upgrade` with
    `Connection: upgrade`."""
    named = _connection_names(request.fields) - _FRAMING
    out = [f"{request.method} {request.path} HTTP/1.1\r\n".encode()]
    out.append(b"Host: " + _host_value(request.target).encode() + b"\r\n")
    for name, value in request.fields:
        lowered = name.lower()
        if lowered == b"host" or lowered in _HOP_BY_HOP or lowered in named:
            continue
        out.append(name + b": " + value + b"\r\n")
    if upgrade:
        out.append(b"Upgrade: " + b", ".join(upgrade) + b"\r\n")
        out.append(
            b"Connection: upgrade, close\r\n\r\n" if close else b"Connection: upgrade\r\n\r\n"
        )
    else:
        out.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
    return b"".join(out)


def upgrade_offer(request: Request) -> tuple[bytes, ...]:
    """The protocols a request asks to switch to (`Upgrade`, with `upgrade` in `Connection`)
    that may be passed on, as the client spelled them; empty when none. Not passed on: any
    protocol of an HTTP/1.0 request (RFC 9110 7.8) or of a request with a body, and HTTP
    itself (`h2c`, `HTTP/2.0`): its requests would choose their own host and path after the
    switch, unseen (h2c smuggling); the server answers such a request over HTTP/1.1."""
    if request.version != "HTTP/1.1" or b"upgrade" not in _connection_names(request.fields):
        return ()
    if request.head.values(b"content-length") not in ([], [b"0"]):
        return ()
    if request.head.values(b"transfer-encoding"):
        return ()
    offered = []
    for value in request.head.values(b"upgrade"):
        for part in value.split(b","):
            protocol = part.strip()
            if protocol and _protocol_name(protocol) not in _HTTP_PROTOCOLS:
                offered.append(protocol)
    return tuple(dict.fromkeys(offered))


_HTTP_PROTOCOLS = frozenset({b"h2c", b"h2", b"http", b"https"})


def _protocol_name(protocol: bytes) -> bytes:
    """`websocket` of `WebSocket`, `http` of `HTTP/2.0`: the name, lowercased, no version."""
    return protocol.partition(b"/")[0].strip().lower()


def switched_to(response: Response, offered: tuple[bytes, ...]) -> None:
    """Check a `101 Switching Protocols` against what the request offered: the server must
    name in `Upgrade` only protocols the client asked for (RFC 9110 7.8), or it is a 502 (a
    server switching to something else, HTTP among it, is not relayed)."""
    names = {_protocol_name(protocol) for protocol in offered}
    chosen = [
        _protocol_name(part)
        for value in response.values(b"upgrade")
        for part in value.split(b",")
        if part.strip()
    ]
    if not chosen or not set(chosen) <= names:
        shown = b", ".join(response.values(b"upgrade")).decode("ascii", "replace")[:80]
        raise ProtocolError(
            502,
            f"the server switched to a protocol the client did not ask for ({shown or 'none'})",
        )


def _host_value(target: Target) -> str:
    return join_host_port(target.host, None if target.port == 80 else target.port)


def _connection_names(fields: tuple[tuple[bytes, bytes], ...]) -> frozenset[bytes]:
    names: set[bytes] = set()
    for name, value in fields:
        if name.lower() in (b"connection", b"proxy-connection"):
            names.update(part.strip().lower() for part in value.split(b","))
    return frozenset(names)


def response_head(head: bytes, close: bool) -> bytes:
    """An upstream response head for the client: its connection fields (they were about the
    upstream connection) dropped, and `Connection: close` when the client's connection ends
    after this response (`close`)."""
    lines = head.split(b"\r\n")
    fields = []
    for line in lines[1:-2]:
        name = line.partition(b":")[0].strip().lower()
        if name in (b"connection", b"proxy-connection", b"keep-alive"):
            continue
        fields.append(line)
    return b"\r\n".join([lines[0], *fields, *[b"Connection: close"] * close, b"", b""])


def reason_phrase(text: str, limit: int = MAX_REASON) -> str:
    """One safe status-line reason: controls replaced by spaces, at most `limit` characters,
    ASCII only (latin-1 bytes would be misread by clients)."""
    flat = _CONTROL.sub(" ", text).strip()
    flat = flat.encode("ascii", "replace").decode("ascii")
    if len(flat) > limit:
        flat = flat[: limit - 3].rstrip() + "..."
    return flat


def error_response(status: int, message: str) -> bytes:
    """A complete response for a refused or failed request: the message in the status line
    (Go clients show only that for CONNECT) and a registry-style JSON error body (docker shows
    its message for plain-HTTP registries)."""
    phrase = _PHRASES.get(status, "Error")
    reason = reason_phrase(message)
    body = json.dumps(
        {"errors": [{"code": _CODES.get(status, "UNSUPPORTED"), "message": message}]}
    ).encode()
    return (
        f"HTTP/1.1 {status} {phrase} ({reason})\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii") + body


MAX_HELLO = 64 * 1024
NEED_MORE = "need-more"


_HANDSHAKE = 0x16  # the content type of a TLS handshake record


def starts_tls(data: bytes) -> bool:
    """Whether `data` opens with a TLS handshake record, as every TLS client's first bytes do."""
    return bool(data) and data[0] == _HANDSHAKE


def client_hello_sni(data: bytes) -> str | None:
    """The server name a TLS ClientHello at the start of `data` asks for.

    Returns the name (lowercased, no trailing dot), None when `data` does not start a TLS
    handshake or the hello names no server, or `NEED_MORE` until the whole hello (possibly
    spread over several records) is there. Raises ProtocolError for a broken or oversized hello,
    so a name cannot hide in a part the proxy did not read.
    """
    if not starts_tls(data):
        return None
    handshake = bytearray()
    offset = 0
    while True:
        if len(data) < offset + 5:
            return _more(data)
        if data[offset] != _HANDSHAKE or data[offset + 1] != 0x03:
            raise ProtocolError(400, "TLS record that is not a handshake")
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        if len(data) < offset + 5 + length:
            return _more(data)
        handshake += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
        if len(handshake) >= 4:
            if handshake[0] != 0x01:
                raise ProtocolError(400, "TLS handshake that does not start with a ClientHello")
            size = int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= 4 + size:
                return _server_name(bytes(handshake[4 : 4 + size]))


def _more(data: bytes) -> str:
    if len(data) > MAX_HELLO:
        raise ProtocolError(400, "TLS ClientHello larger than 64 KiB")
    return NEED_MORE


def _server_name(hello: bytes) -> str | None:
    try:
        at = 2 + 32  # legacy version, random
        at += 1 + hello[at]  # session id
        at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher suites
        at += 1 + hello[at]  # compression methods
        if at == len(hello):
            return None  # no extensions
        end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
        at += 2
        if end != len(hello):
            raise IndexError
        while at < end:
            kind = int.from_bytes(hello[at : at + 2], "big")
            size = int.from_bytes(hello[at + 2 : at + 4], "big")
            body = hello[at + 4 : at + 4 + size]
            if len(body) != size:
                raise IndexError
            at += 4 + size
            if kind == 0:  # server_name
                names = body[2 : 2 + int.from_bytes(body[0:2], "big")]
                if not names or names[0] != 0:
                    raise IndexError
                name = names[3 : 3 + int.from_bytes(names[1:3], "big")]
                if len(name) != int.from_bytes(names[1:3], "big") or not name.isascii():
                    raise IndexError
                return name.decode("ascii").lower().rstrip(".")
    except IndexError:
        raise ProtocolError(400, "malformed TLS ClientHello") from None
    return None
