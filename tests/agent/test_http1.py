"""The agent's one HTTP/1 reader: heads against a naive reader, body framing, hostile input,
and the responses a registry sends back on a connection kept alive."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.agent.http1 import (
    MAX_FIELDS,
    Body,
    Head,
    ProtocolError,
    head_end,
    parse_head,
    parse_response_head,
    response_body,
)
from tests.agent.http1_naive import naive_parse_head

TOKEN = st.text(string.ascii_letters + string.digits + "!#$%&'*+-.^_`|~", min_size=1, max_size=12)
VALUE = st.binary(max_size=30).filter(lambda v: b"\r" not in v and b"\n" not in v)
TARGET = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    """Request heads, well formed or close to it: the bytes a hostile client would try."""
    method = draw(st.one_of(TOKEN, st.sampled_from(["G T", "GET(", ""])))
    target = draw(st.one_of(TARGET, st.sampled_from(["/a b", "/\x00", "/\xe9", ""])))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1"]))
    line = draw(st.sampled_from([" ", "  ", "\t"])).join([method, target, version])
    fields = draw(
        st.lists(
            st.tuples(
                st.one_of(TOKEN.map(str.encode), st.sampled_from([b"", b"a b", b"\x00", b" x"])),
                st.sampled_from([b":", b": ", b" :", b":\t", b""]),
                VALUE,
            ),
            max_size=6,
        )
    )
    ending = draw(st.sampled_from([b"\r\n\r\n", b"\r\n\r\n", b"\n\n", b"\r\n"]))
    lines = [line.encode("utf-8")] + [name + sep + value for name, sep, value in fields]
    return b"\r\n".join(lines) + ending


def outcome(parse: object, data: bytes) -> Head | int:
    try:
        return parse(data)  # type: ignore[operator, no-any-return]
    except ProtocolError as error:
        return error.status


@given(heads())
def test_the_reader_agrees_with_the_naive_one(data: bytes) -> None:
    assert outcome(parse_head, data) == outcome(naive_parse_head, data)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_head_or_a_protocol_error(data: bytes) -> None:
    assert outcome(parse_head, data + b"\r\n\r\n") == outcome(naive_parse_head, data + b"\r\n\r\n")


def test_values_lose_surrounding_whitespace_only() -> None:
    head = parse_head(b"GET / HTTP/1.1\r\nA:  x y \t\r\nB:\r\nC: \t \r\nD: \xff\r\n\r\n")
    assert head.fields == ((b"A", b"x y"), (b"B", b""), (b"C", b""), (b"D", b"\xff"))


def test_too_many_fields_is_431() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * (MAX_FIELDS + 1) + b"\r\n"
    with pytest.raises(ProtocolError) as raised:
        parse_head(data)
    assert raised.value.status == 431


@pytest.mark.parametrize(
    ("fields", "keep_alive"),
    [
        ((), True),
        ((b"Connection: close",), False),
        ((b"Connection: keep-alive, Close",), False),
        ((b"Connection: keep-alive",), True),
    ],
)
def test_keep_alive(fields: tuple[bytes, ...], keep_alive: bool) -> None:
    data = b"\r\n".join([b"GET / HTTP/1.1", *fields]) + b"\r\n\r\n"
    assert parse_head(data).keep_alive is keep_alive
    old = parse_head(data.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert old.keep_alive is (keep_alive and bool(fields))


def body_of(*fields: bytes, keep: int = 0) -> Body:
    return Body.of(parse_head(b"\r\n".join([b"POST / HTTP/1.1", *fields]) + b"\r\n\r\n"), keep)


@pytest.mark.parametrize(
    "fields",
    [
        # The AuthZ plugin's own reader took these: chunk size 0x3 as 3, 1_0 as 10, and
        # `notchunked` as chunked.
        (b"Content-Length: 1_0",),
        (b"Content-Length: +5",),
        (b"Content-Length: 5 5",),
        (b"Transfer-Encoding: notchunked",),
        (b"Transfer-Encoding: chunked, identity",),
        (b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        (b"Content-Length: 5", b"Content-Length: 6"),
    ],
)
def test_framing_two_readers_could_read_differently_is_400(fields: tuple[bytes, ...]) -> None:
    with pytest.raises(ProtocolError) as raised:
        body_of(*fields)
    assert raised.value.status == 400


@pytest.mark.parametrize(
    "data", [b"0x3\r\nabc\r\n0\r\n\r\n", b"-3\r\nabc\r\n", b" 3\r\nabc\r\n", b"3_0\r\n"]
)
def test_malformed_chunk_sizes_are_400(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        body_of(b"Transfer-Encoding: chunked").feed(data)


def chunked(parts: list[bytes], extension: bytes = b"") -> bytes:
    out = b"".join(f"{len(p):x}".encode() + extension + b"\r\n" + p + b"\r\n" for p in parts if p)
    return out + b"0\r\nX-Trailer: 1\r\n\r\n"


@given(
    parts=st.lists(st.binary(max_size=40), max_size=6),
    after=st.binary(max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=50), max_size=20),
    extension=st.sampled_from([b"", b";a=1", b" ;x"]),
)
def test_chunked_bodies_decode_and_end_where_they_end(
    parts: list[bytes], after: bytes, cuts: list[int], extension: bytes
) -> None:
    framed = chunked(parts, extension)
    data = framed + after
    body = body_of(b"Transfer-Encoding: Chunked", keep=1000)
    taken, at = 0, 0
    for size in [*cuts, len(data)]:  # however the bytes arrive
        piece = data[at : at + size]
        at += len(piece)
        used = body.feed(piece)
        taken += used
        if body.done:
            break
        assert used == len(piece)
    assert body.done and taken == len(framed)
    assert bytes(body.content) == b"".join(parts)


@given(content=st.binary(max_size=100), after=st.binary(max_size=20))
def test_content_length_bodies_end_after_their_length(content: bytes, after: bytes) -> None:
    body = body_of(f"Content-Length: {len(content)}".encode(), keep=100)
    assert body.feed(content + after) == len(content) and body.done
    assert bytes(body.content) == content


def test_a_kept_body_beyond_its_limit_is_413() -> None:
    body = body_of(b"Transfer-Encoding: chunked", keep=4)
    with pytest.raises(ProtocolError) as raised:
        body.feed(b"5\r\nhello\r\n")
    assert raised.value.status == 413


@given(st.binary(max_size=200))
def test_any_chunked_bytes_give_a_count_or_a_protocol_error(data: bytes) -> None:
    body = body_of(b"Transfer-Encoding: chunked", keep=100)
    try:
        used = body.feed(data)
    except ProtocolError:
        return
    assert 0 <= used <= len(data)
    assert used == len(data) or body.done


def test_head_end_finds_the_end_or_refuses_an_oversized_head() -> None:
    assert head_end(b"GET / HTTP/1.1\r\n\r\nrest") == len(b"GET / HTTP/1.1\r\n\r\n")
    assert head_end(b"GET / HTTP/1.1\r\n") == -1
    with pytest.raises(ProtocolError) as raised:
        head_end(b"x" * 101, max_head=100)
    assert raised.value.status == 431


# ---- responses ------------------------------------------------------------------------------


def response(*lines: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_response_head_reads_its_status_version_and_fields() -> None:
    parsed = parse_response_head(
        response(b"HTTP/1.1 404 Not Found", b"A: x ", b"Connection: close")
    )
    assert (parsed.status, parsed.version) == (404, "HTTP/1.1")
    assert parsed.values(b"a") == [b"x"] and not parsed.keep_alive
    assert parse_response_head(response(b"HTTP/1.0 200")).keep_alive is False
    assert parse_response_head(response(b"HTTP/1.0 200 OK", b"Connection: keep-alive")).keep_alive
    assert parse_response_head(response(b"HTTP/1.1 200 OK")).keep_alive


@pytest.mark.parametrize(
    "head",
    [
        response(b"SSH-2.0-x"),
        response(b"HTTP/1.1 2000 OK"),
        response(b"HTTP/1.1"),
        response(b"HTTP/2 200 OK"),
        response(b"HTTP/1.1 200 OK", b"A : b"),
        response(b"HTTP/1.1 200 OK", b" folded"),
        response(b"HTTP/1.1 200 OK", b"A: \x00"),
        b"HTTP/1.1 200 OK\r\n",
    ],
)
def test_a_response_head_that_is_not_strictly_http_1_is_502(head: bytes) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_response_head(head)
    assert raised.value.status == 502


@pytest.mark.parametrize(
    ("method", "status", "fields", "length"),
    [
        ("GET", 200, (b"Content-Length: 5",), 5),
        ("HEAD", 200, (b"Content-Length: 5",), 0),  # the length of what GET would send
        ("GET", 204, (), 0),
        ("GET", 304, (b"Content-Length: 5",), 0),
        ("GET", 101, (), 0),
        ("GET", 200, (b"Content-Length: 7", b"Content-Length: 7"), 7),
        ("GET", 200, (b"Transfer-Encoding: chunked",), None),
    ],
)
def test_where_a_response_body_ends(
    method: str, status: int, fields: tuple[bytes, ...], length: int | None
) -> None:
    head = parse_response_head(response(f"HTTP/1.1 {status} X".encode(), *fields))
    body = response_body(method, head)
    assert body is not None and body.left == length


def test_a_response_without_framing_ends_with_the_connection() -> None:
    assert response_body("GET", parse_response_head(response(b"HTTP/1.1 200 OK"))) is None


@pytest.mark.parametrize(
    "fields",
    [
        (b"Content-Length: 5", b"Transfer-Encoding: chunked"),
        (b"Content-Length: 5", b"Content-Length: 6"),
        (b"Content-Length: -1",),
        (b"Transfer-Encoding: gzip, chunked",),
        (b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked"),
    ],
)
def test_response_framing_two_readers_could_read_differently_is_502(
    fields: tuple[bytes, ...],
) -> None:
    head = parse_response_head(response(b"HTTP/1.1 200 OK", *fields))
    with pytest.raises(ProtocolError) as raised:
        response_body("GET", head)
    assert raised.value.status == 502


@given(
    content=st.binary(max_size=200),
    chunks=st.lists(st.integers(min_value=1, max_value=50), max_size=8),
    after=st.binary(max_size=60),
    cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=20),
    chunked_framing=st.booleans(),
)
def test_a_response_body_is_taken_whole_and_nothing_after_it(
    content: bytes, chunks: list[int], after: bytes, cuts: list[int], chunked_framing: bool
) -> None:
    """However the bytes arrive, exactly the response's body is taken: a second response the
    registry sends behind it (or anything else) is never relayed as part of the first."""
    if chunked_framing:
        parts, at = [], 0
        for size in chunks:
            parts.append(content[at : at + size])
            at += size
        parts = [part for part in [*parts, content[at:]] if part]
        framed = chunked(parts)
        field = b"Transfer-Encoding: chunked"
    else:
        framed, field = content, b"Content-Length: %d" % len(content)
    body = response_body("GET", parse_response_head(response(b"HTTP/1.1 200 OK", field)))
    assert body is not None
    data = framed + after
    taken, at = 0, 0
    for size in [*cuts, len(data)]:
        piece = data[at : at + size]
        at += len(piece)
        used = body.feed(piece)
        taken += used
        if body.done:
            break
        assert used == len(piece)
    assert body.done and taken == len(framed)


@given(st.binary(max_size=300))
def test_any_bytes_as_a_response_head_give_a_response_or_a_502(data: bytes) -> None:
    try:
        parsed = parse_response_head(data + b"\r\n\r\n")
    except ProtocolError as error:
        assert error.status == 502
        return
    assert 0 <= parsed.status <= 999
    try:
        response_body("GET", parsed)
    except ProtocolError as error:
        assert error.status == 502
