"""The proxy's sans-IO request parsing and response rendering, with hypothesis on hostile input."""

from __future__ import annotations

import functools
import json
import ssl
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regward.agent.http1 import Body, ProtocolError, head_end, parse_response_head
from regward.agent.proxy.protocol import (
    MAX_REASON,
    NEED_MORE,
    Request,
    Target,
    client_hello_sni,
    error_response,
    forward_head,
    parse_authority,
    parse_request,
    reason_phrase,
    response_head,
    switched_to,
    upgrade_offer,
)
from regward.errors import InvalidAddress
from regward.policy.address import normalize_host

TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~"
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9\-]{0,10}[a-z0-9])?", fullmatch=True)
HOSTNAME = (
    st.lists(LABEL, min_size=1, max_size=4)
    .map(".".join)
    .filter(lambda host: not all(part.isdigit() for part in host.split(".")))
)
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(lambda address: address.compressed)
PORT = st.integers(min_value=1, max_value=65535)
FIELD_NAME = st.text(TOKEN_CHARS, min_size=1, max_size=20)
FIELD_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    lambda value: value.strip(" ")
)


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_connect_hostname() -> None:
    request = parse_request(head("CONNECT Registry.Example.com:443 HTTP/1.1", "Host: x"))
    assert request.is_connect
    assert request.target == Target("registry.example.com", 443)
    assert request.fields == ((b"Host", b"x"),)


def test_connect_ipv6_is_unbracketed_and_canonical() -> None:
    request = parse_request(head("CONNECT [2001:DB8:0::1]:5000 HTTP/1.1"))
    assert request.target == Target("2001:db8::1", 5000)
    assert request.target.authority == "[2001:db8::1]:5000"
    assert request.target.is_ip


def test_absolute_form_defaults_to_port_80_and_keeps_query() -> None:
    request = parse_request(head("GET http://reg.local/v2/x/tags/list?n=1 HTTP/1.1"))
    assert request.target == Target("reg.local", 80)
    assert request.path == "/v2/x/tags/list?n=1"
    request = parse_request(head("HEAD http://reg.local:5000 HTTP/1.0"))
    assert (request.target.port, request.path, request.version) == (5000, "/", "HTTP/1.0")


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("CONNECT reg.test HTTP/1.1", "needs a port"),
        ("CONNECT reg.test:0 HTTP/1.1", "port"),
        ("CONNECT reg.test:65536 HTTP/1.1", "port"),
        ("CONNECT reg.test:+443 HTTP/1.1", "port"),
        ("CONNECT 127.1:443 HTTP/1.1", "numeric host"),
        ("CONNECT 0x7f.0.0.1:443 HTTP/1.1", "numeric host"),
        ("CONNECT 2130706433:443 HTTP/1.1", "numeric host"),
        ("CONNECT [fe80::1%25eth0]:443 HTTP/1.1", "IPv6"),
        ("CONNECT [::1:443 HTTP/1.1", "unterminated"),
        ("CONNECT user@reg.test:443 HTTP/1.1", "not a hostname"),
        ("CONNECT reg..test:443 HTTP/1.1", "not a hostname"),
        ("GET /v2/ HTTP/1.1", "this is a proxy"),
        ("GET https://reg.test/v2/ HTTP/1.1", "use CONNECT"),
        ("GET http://user:pw@reg.test/ HTTP/1.1", "user information"),
        ("GET http://reg.test/#x HTTP/1.1", "fragment"),
        ("GET http://reg.test/ HTTP/2.0", "HTTP/1.0 and HTTP/1.1"),
        ("GET  http://reg.test/ HTTP/1.1", "request line"),
        ("G(T http://reg.test/ HTTP/1.1", "token"),
    ],
)
def test_bad_request_lines_are_400(line: str, why: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(head(line))
    assert caught.value.status == 400
    assert why in caught.value.message


@pytest.mark.parametrize(
    "field",
    ["Host : x", " folded", "Name\x00: v", "Name: a\x01b", "NoColon", "Na me: v", "X: a\rb"],
)
def test_bad_fields_are_400(field: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_request(head("CONNECT reg.test:443 HTTP/1.1", field))
    assert caught.value.status == 400


def test_head_limits() -> None:
    assert head_end(b"CONNECT a:1 HTTP/1.1\r\n") == -1
    with pytest.raises(ProtocolError) as caught:
        head_end(b"x" * 200, max_head=100)
    assert caught.value.status == 431
    many = head("CONNECT a.b:1 HTTP/1.1", *[f"X-{i}: v" for i in range(101)])
    with pytest.raises(ProtocolError) as caught:
        parse_request(many)
    assert caught.value.status == 431


@given(
    host=st.one_of(HOSTNAME, IPV4, IPV6),
    port=PORT,
    fields=st.lists(st.tuples(FIELD_NAME, FIELD_VALUE), max_size=8),
)
def test_connect_round_trip(host: str, port: int, fields: list[tuple[str, str]]) -> None:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", *(f"{n}: {v}" for n, v in fields)]
    request = parse_request(head(*lines))
    assert request.target == Target(host, port)
    assert request.target.authority == authority
    assert parse_request(head(*lines)) == request  # a CONNECT head seen before: remembered
    assert [(n.decode(), v.decode()) for n, v in request.fields] == fields


@given(
    host=st.one_of(HOSTNAME, IPV4, IPV6),
    port=st.one_of(st.none(), PORT),
    path=st.from_regex(r"(/[a-zA-Z0-9._~%-]{0,12}){0,4}(\?[a-z=&0-9]{0,10})?", fullmatch=True),
    method=st.text(TOKEN_CHARS, min_size=1, max_size=8).filter(lambda m: m != "CONNECT"),
    fields=st.lists(st.tuples(FIELD_NAME, FIELD_VALUE), max_size=8),
)
def test_absolute_form_forwarding(
    host: str, port: int | None, path: str, method: str, fields: list[tuple[str, str]]
) -> None:
    shown = f"[{host}]" if ":" in host else host
    authority = shown if port is None else f"{shown}:{port}"
    lines = [f"{method} http://{authority}{path} HTTP/1.1", *(f"{n}: {v}" for n, v in fields)]
    request = parse_request(head(*lines))
    assert request.target == Target(host, port or 80)
    out = forward_head(request, close=True)
    again = parse_request(out.replace(b" " + request.path.encode(), b" http://x.test/", 1))
    names = [name.lower() for name, _ in again.fields]
    # The upstream sees exactly one Host (the decided target) and one Connection: close.
    assert names.count(b"host") == 1 and names.count(b"connection") == 1
    assert (b"Connection", b"close") in again.fields
    # Kept alive, the same head without any Connection field.
    kept = forward_head(request, close=False)
    assert kept == out.replace(b"Connection: close\r\n", b"")
    again = parse_request(kept.replace(b" " + request.path.encode(), b" http://x.test/", 1))
    assert b"connection" not in [name.lower() for name, _ in again.fields]
    assert not {b"proxy-connection", b"proxy-authorization", b"keep-alive"} & set(names)
    host_value = dict((n.lower(), v) for n, v in again.fields)[b"host"].decode()
    expected_port = port or 80
    assert host_value == (shown if expected_port == 80 else f"{shown}:{expected_port}")
    origin = path if path.startswith("/") else "/" + path
    assert out.startswith(f"{method} {origin} HTTP/1.1\r\n".encode())


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_protocol_errors(data: bytes) -> None:
    try:
        end = head_end(data, max_head=256)
        if end >= 0:
            parse_request(data[:end])
    except ProtocolError as error:
        assert 400 <= error.status < 500


@settings(max_examples=300)
@given(st.text(max_size=80), st.text(max_size=200))
def test_mutated_request_lines_only_raise_protocol_errors(target: str, field: str) -> None:
    data = f"CONNECT {target} HTTP/1.1\r\nX: {field}\r\n\r\n".encode("utf-8", "surrogatepass")
    try:
        request = parse_request(data)
    except ProtocolError as error:
        assert error.status in (400, 431)
        with pytest.raises(ProtocolError):  # a refusal is never remembered as a request
            parse_request(data)
    else:
        assert request.target.port > 0
        assert request.target.host == request.target.host.lower()


@given(st.text(max_size=1000))
def test_reason_phrase_is_one_bounded_ascii_line(text: str) -> None:
    phrase = reason_phrase(text)
    assert len(phrase) <= MAX_REASON
    assert phrase.isascii()
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in phrase)


def test_error_response_carries_the_reason_twice() -> None:
    message = "Access to evil.test:443 is restricted\r\nInjected: yes"
    data = error_response(403, message)
    status_line, _, rest = data.partition(b"\r\n")
    assert status_line == (
        b"HTTP/1.1 403 Forbidden (Access to evil.test:443 is restricted Injected: yes)"
    )
    body = rest.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body) == {"errors": [{"code": "DENIED", "message": message}]}
    assert b"Content-Length: %d\r\n" % len(body) in rest


def test_response_head_loses_its_connection_fields_and_closes_when_asked() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nA: b\r\n\r\n"
    assert response_head(raw, close=True) == b"HTTP/1.1 200 OK\r\nA: b\r\nConnection: close\r\n\r\n"
    assert response_head(raw, close=False) == b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"


@functools.cache
def client_hello(server_name: str | None) -> bytes:
    """The ClientHello OpenSSL (through Python's ssl) really sends."""
    context = ssl.create_default_context()
    if server_name is None:
        context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_client_hello_server_name() -> None:
    hello = client_hello("Registry.Example.COM")
    assert client_hello_sni(hello) == "registry.example.com"
    for cut in range(len(hello)):
        assert client_hello_sni(hello[:cut]) in (NEED_MORE, None)
    assert client_hello_sni(hello + b"trailing application data") == "registry.example.com"
    assert client_hello_sni(client_hello(None)) is None
    assert client_hello_sni(b"GET / HTTP/1.1\r\n\r\n") is None


def test_client_hello_split_over_records() -> None:
    hello = client_hello("fronted.example")
    body = hello[5:]
    records = b"".join(
        b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
        for part in (body[:7], body[7:100], body[100:])
    )
    assert client_hello_sni(records) == "fronted.example"
    assert client_hello_sni(records[:-1]) == NEED_MORE


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_tls_bytes_only_raise_protocol_errors(data: bytes) -> None:
    try:
        name = client_hello_sni(b"\x16\x03" + data)
    except ProtocolError as error:
        assert error.status == 400
    else:
        assert name is None or name == NEED_MORE or name.isascii()


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=8))
def test_corrupted_client_hellos_only_raise_protocol_errors(at: int, junk: bytes) -> None:
    hello = bytearray(client_hello("good.example"))
    hello[at % len(hello) : at % len(hello) + len(junk)] = junk
    try:
        client_hello_sni(bytes(hello))
    except ProtocolError as error:
        assert error.status == 400


def body_of(*fields: str) -> Body:
    return Body.of(parse_request(head("PUT http://reg.test:5000/v2/x HTTP/1.1", *fields)).head)


@pytest.mark.parametrize(
    ("fields", "data", "length"),
    [
        ((), b"GET /next HTTP/1.1\r\n\r\n", 0),
        (("Content-Length: 5",), b"hello" + b"GET /next HTTP/1.1\r\n\r\n", 5),
        (
            ("Transfer-Encoding: Chunked",),
            b"5;ext=1\r\nhello\r\na\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
            44,
        ),
    ],
)
def test_request_body_ends_where_its_framing_says(
    fields: tuple[str, ...], data: bytes, length: int
) -> None:
    whole = body_of(*fields)
    assert whole.feed(data) == length and whole.done
    bytewise = body_of(*fields)  # the same end, however the bytes arrive
    taken = [bytewise.feed(data[i : i + 1]) for i in range(len(data)) if not bytewise.done]
    assert sum(taken) == length and bytewise.done


@pytest.mark.parametrize(
    "fields",
    [
        ("Content-Length: 5", "Transfer-Encoding: chunked"),
        ("Content-Length: 5", "Content-Length: 6"),
        ("Content-Length: -1",),
        ("Content-Length: 0x10",),
        ("Transfer-Encoding: gzip, chunked",),
        ("Transfer-Encoding: chunked", "Transfer-Encoding: chunked"),
    ],
)
def test_ambiguous_body_framing_is_400(fields: tuple[str, ...]) -> None:
    with pytest.raises(ProtocolError) as raised:
        body_of(*fields)
    assert raised.value.status == 400


@pytest.mark.parametrize("data", [b"5\r\nhelloXX\r\n", b"zz\r\n", b"5\nhello\r\n", b"1" * 5000])
def test_malformed_chunks_are_400(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_of("Transfer-Encoding: chunked").feed(data)


def test_connection_cannot_drop_the_body_framing() -> None:
    request = parse_request(
        head(
            "POST http://reg.test/v2/ HTTP/1.1",
            "Connection: transfer-encoding, content-length, x-drop",
            "Transfer-Encoding: chunked",
            "X-Drop: 1",
        )
    )
    assert forward_head(request, close=True) == head(
        "POST /v2/ HTTP/1.1", "Host: reg.test", "Transfer-Encoding: chunked", "Connection: close"
    )
    assert forward_head(request, close=False) == head(
        "POST /v2/ HTTP/1.1", "Host: reg.test", "Transfer-Encoding: chunked"
    )


def _encode_chunked(chunks: list[bytes], extensions: list[str], trailers: list[str]) -> bytes:
    out = b""
    for data, extension in zip(chunks, extensions, strict=False):
        out += f"{len(data):x}{extension}\r\n".encode() + data + b"\r\n"
    return out + b"0\r\n" + b"".join(f"{t}\r\n".encode() for t in trailers) + b"\r\n"


@given(
    st.lists(st.binary(min_size=1, max_size=300), max_size=6),
    st.lists(st.sampled_from(["", ";x=1", " ;name"]), min_size=6, max_size=6),
    st.lists(st.sampled_from(["X-T: 1", "Checksum: abc"]), max_size=2),
    st.binary(max_size=100),
    st.lists(st.integers(1, 64), min_size=1, max_size=40),
)
def test_a_chunked_body_ends_at_its_last_chunk_however_it_arrives(
    chunks: list[bytes],
    extensions: list[str],
    trailers: list[str],
    after: bytes,
    cuts: list[int],
) -> None:
    """Whatever the chunks and however the bytes are split, exactly the body is taken and what
    follows it (a pipelined request) is not."""
    body = _encode_chunked(chunks, extensions, trailers)
    data, taken, at = body + after, 0, 0
    parser = body_of("Transfer-Encoding: chunked")
    for size in [*cuts, len(data)]:
        if parser.done:
            break
        taken += parser.feed(data[at : at + size])
        at += size
    assert parser.done and taken == len(body)


@given(st.integers(0, 10_000), st.binary(max_size=200), st.integers(1, 97))
def test_a_sized_body_ends_after_its_length(length: int, after: bytes, step: int) -> None:
    parser = body_of(f"Content-Length: {length}")
    data, taken = bytes(length) + after, 0
    for at in range(0, len(data), step):
        if parser.done:
            break
        taken += parser.feed(data[at : at + step])
    assert parser.done == (length <= len(data)) and taken == length


@given(st.binary(max_size=400))
def test_any_chunked_bytes_give_a_body_end_or_a_400(data: bytes) -> None:
    parser = body_of("Transfer-Encoding: chunked")
    try:
        taken = parser.feed(data)
    except ProtocolError as error:
        assert error.status == 400
    else:
        assert 0 <= taken <= len(data)
        assert taken == len(data) or parser.done


# ---- Upgrade (the transparent listener's WebSockets) -----------------------------------------


def websocket(
    *extra: str, version: str = "HTTP/1.1", connection: str = "keep-alive, Upgrade"
) -> Request:
    return parse_request(
        head(
            f"GET /chat?x=1 {version}",
            "Host: ws.test",
            "Upgrade: websocket",
            f"Connection: {connection}",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            *extra,
        ),
        origin_port=80,
    )


def test_an_upgrade_request_keeps_upgrade_and_says_connection_upgrade() -> None:
    request = websocket("Keep-Alive: 5", "Proxy-Authorization: Basic eDp5")
    offer = upgrade_offer(request)
    assert offer == (b"websocket",)
    expected = [
        "GET /chat?x=1 HTTP/1.1",
        "Host: ws.test",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        "Upgrade: websocket",
    ]
    assert forward_head(request, close=False, upgrade=offer) == head(
        *expected, "Connection: upgrade"
    )
    assert forward_head(request, close=True, upgrade=offer) == head(
        *expected, "Connection: upgrade, close"
    )
    # Without an offer (the egress proxy), the same request loses its Upgrade, as before.
    assert forward_head(request, close=False) == head(*expected[:-1])


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (websocket(connection="keep-alive"), "no upgrade in Connection"),
        (websocket(version="HTTP/1.0"), "HTTP/1.0 ignores Upgrade"),
        (websocket("Content-Length: 3"), "a body"),
        (websocket("Transfer-Encoding: chunked"), "a chunked body"),
        (
            parse_request(
                head(
                    "GET / HTTP/1.1",
                    "Host: h.test",
                    "Connection: Upgrade, HTTP2-Settings",
                    "Upgrade: h2c",
                    "HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA",
                ),
                origin_port=80,
            ),
            "h2c: HTTP itself, whose requests would pick their own host and path",
        ),
    ],
)
def test_what_is_not_an_upgrade_passed_on(request_: Request, why: str) -> None:
    assert upgrade_offer(request_) == (), why


def test_of_several_protocols_only_http_ones_are_dropped() -> None:
    request = websocket("Upgrade: h2c, HTTP/2.0,  IRC/6.9 ,websocket")
    assert upgrade_offer(request) == (b"websocket", b"IRC/6.9")
    out = forward_head(request, close=False, upgrade=upgrade_offer(request))
    assert b"\r\nUpgrade: websocket, IRC/6.9\r\n" in out and b"h2c" not in out


@pytest.mark.parametrize(
    ("answer", "ok"),
    [
        ("Upgrade: websocket", True),
        ("Upgrade: WebSocket", True),  # protocol names are case-insensitive
        ("Upgrade: h2c", False),  # not asked for: never relayed
        ("Upgrade: websocket, h2c", False),
        ("X-None: 1", False),  # a 101 that names nothing
    ],
)
def test_a_101_must_name_a_protocol_the_client_offered(answer: str, ok: bool) -> None:
    response = parse_response_head(
        f"HTTP/1.1 101 Switching Protocols\r\n{answer}\r\nConnection: Upgrade\r\n\r\n".encode()
    )
    if ok:
        switched_to(response, (b"websocket",))
    else:
        with pytest.raises(ProtocolError, match="did not ask for") as raised:
            switched_to(response, (b"websocket",))
        assert raised.value.status == 502


PROTOCOL = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,8}(/[A-Za-z0-9.]{1,4})?", fullmatch=True)


@given(
    protocols=st.lists(
        st.one_of(PROTOCOL, st.sampled_from(["h2c", "H2C", "HTTP/2.0", "http/1.1", "h2"])),
        min_size=1,
        max_size=5,
    ),
    connection=st.sampled_from(["Upgrade", "keep-alive, upgrade", "close, UPGRADE"]),
)
def test_any_offer_passes_on_what_the_client_sent_but_http(
    protocols: list[str], connection: str
) -> None:
    request = websocket(f"Upgrade: {', '.join(protocols)}", connection=connection)
    offer = upgrade_offer(request)
    sent = [b"websocket", *(protocol.encode() for protocol in protocols)]
    assert list(offer) == list(
        dict.fromkeys(
            p for p in sent if p.split(b"/")[0].lower() not in {b"h2c", b"h2", b"http", b"https"}
        )
    )
    out = forward_head(request, close=not request.head.keep_alive, upgrade=offer)
    again = parse_request(out, origin_port=80)
    assert again.head.values(b"upgrade") == [b", ".join(offer)]
    (said,) = again.head.values(b"connection")
    assert said.split(b", ")[0] == b"upgrade"
    if offer:
        response = parse_response_head(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: " + offer[-1] + b"\r\n\r\n"
        )
        switched_to(response, offer)


@pytest.mark.parametrize(
    ("head", "host"),
    [
        (b"CONNECT Registry.Test.:443 HTTP/1.1\r\n\r\n", "registry.test"),
        (b"GET http://registry.test.:5000/v2/ HTTP/1.1\r\nHost: x\r\n\r\n", "registry.test"),
        (b"CONNECT under_score.test:443 HTTP/1.1\r\n\r\n", "under_score.test"),
    ],
)
def test_every_request_kind_names_its_host_as_the_policy_reads_it(head: bytes, host: str) -> None:
    """A trailing dot or uppercase is decided and dialled as the policy reads the name (one
    normalisation for CONNECT, absolute-form and the transparent listener's Host); a name the
    policy cannot read stays as sent (and the policy refuses it)."""
    assert parse_request(head).target.host == host


@settings(max_examples=300)
@given(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,40}\.?", fullmatch=True))
def test_any_accepted_host_is_the_policys_reading_of_it(host: str) -> None:
    try:
        target = parse_authority(f"{host}:443")
    except ProtocolError:
        return
    try:
        expected = normalize_host(host)
    except InvalidAddress:
        expected = host.lower()
    assert target.host == expected
