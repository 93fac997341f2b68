"""The agent's one HTTP/1.1 reader, sans I/O: the egress proxy, the transparent listener and
the AuthZ plugin's socket all frame requests with it, so a request means the same thing to
each; the proxy and the listener frame a registry's responses with it too, so a connection
kept alive carries each response whole and nothing more.

    end = head_end(buffer, max_head)       # -1: need more bytes; 431 when too large
    head = parse_head(buffer[:end])        # Head(method, target, version, fields)
    body = Body.of(head, keep=limit)       # where the body ends; its content when kept
    used = body.feed(data)                 # how much of `data` is body; body.done at its end

    response = parse_response_head(head)   # Response(status, version, fields); 502 when bad
    body = response_body("GET", response)  # Body, or None: the body ends with the connection

Grammar (RFC 9112), strictly; anything else is a `ProtocolError` (400, 431 or 413), never a
guess, because two readers that disagree on where a request ends are a smuggling bug:

    head         = request-line *( field-line CRLF ) CRLF
    request-line = method SP request-target SP "HTTP/1." ("0" / "1") CRLF
    method       = token
    target       = 1*( %x21-7E )                 visible ASCII: no spaces, controls, non-ASCII
    field-line   = token ":" OWS value OWS       no obs-fold, no whitespace before ":",
                                                 no control characters but HTAB in the value
    body         = nothing                       without Content-Length or Transfer-Encoding
                 / N bytes                       Content-Length: N   (digits only, one value)
                 / chunked                       Transfer-Encoding: chunked (exactly that)
    chunk-size   = 1*16HEXDIG [ OWS ";" ext ] CRLF     no "0x", no "_", no sign

Refused framing: both Content-Length and Transfer-Encoding, two different lengths, any other
coding (`notchunked`, `gzip, chunked`), `Content-Length: 1_0` or `+5`, chunk size `0x3`.

Responses (RFC 9112 section 4 and 6.3), as strictly, a problem being a 502 (the registry's):

    status-line  = "HTTP/1." ("0" / "1") SP 3DIGIT [ SP reason ]     reason: HTAB, SP, VCHAR,
                                                                      obs-text
    body         = nothing                       to HEAD; status 1xx, 204, 304
                 / N bytes, chunked              as a request's, the same refusals
                 / until the server closes       neither field

Why our own and not a library (`bench/http1.py`, the same requests through each): llhttp
(`httptools`) frames 2-5x faster, but takes four of the twenty ambiguous requests this reader
refuses (`Transfer-Encoding: gzip, chunked`, two spaces in the request line, `HTTP/2.0`,
`HTTP/0.9`), refuses any method outside its own list, and cannot say where a message ends in
the bytes fed to it, which the proxy needs so a pipelined request never rides along. `h11` takes
seven of them (obs-fold, bare LF, both framings at once) and is 3-5x slower than this reader.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD = 16 * 1024
MAX_FIELDS = 100
MAX_CHUNK_LINE = 4096

_TOKEN_CHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN = re.compile(_TOKEN_CHARS)
_REQUEST_LINE = re.compile(b"(" + _TOKEN_CHARS + rb") ([!-~]+) (HTTP/1\.[01])")
_VALUE_CHAR = rb"[^\x00-\x08\x0a-\x1f\x7f]"  # HTAB, SP, visible ASCII and obs-text
_VALUE_END = rb"[^\x00-\x20\x7f]"  # the same without HTAB and SP
# name ":" OWS value OWS CRLF, the value without the spaces and tabs around it
_FIELD = re.compile(
    b"(" + _TOKEN_CHARS + b"):[ \t]*((?:" + _VALUE_CHAR + b"*" + _VALUE_END + rb")?)[ \t]*\r\n"
)
_FIELDS = re.compile(b"(?:" + _TOKEN_CHARS + b":" + _VALUE_CHAR + rb"*\r\n)*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[^\r\n]*)?\r\n")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: [\t -~\x80-\xff]*)?")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")


class ProtocolError(Exception):
    """A request that will not be served; `status` and `message` become the response."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Message:
    """What a request head and a response head share: `version` and `fields`."""

    __slots__ = ()
    version: str
    fields: tuple[tuple[bytes, bytes], ...]

    def values(self, name: bytes) -> list[bytes]:
        """Every value of the field `name` (lowercase), in order."""
        return [value for field, value in self.fields if field.lower() == name]

    @property
    def keep_alive(self) -> bool:
        """May the connection carry another message after this one (RFC 9112 9.3)?"""
        tokens = {
            token.strip().lower()
            for value in self.values(b"connection")
            for token in value.split(b",")
        }
        if b"close" in tokens:
            return False
        return self.version == "HTTP/1.1" or b"keep-alive" in tokens


@dataclass(frozen=True, slots=True)
class Head(_Message):
    """One parsed request head; `fields` keeps the raw (name, value) pairs in order, values
    without surrounding whitespace."""

    method: str
    target: str
    version: str
    fields: tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Response(_Message):
    """One parsed response head; `fields` as in `Head`."""

    status: int
    version: str
    fields: tuple[tuple[bytes, bytes], ...]


def head_end(buffer: bytes | bytearray, max_head: int = MAX_HEAD) -> int:
    """Index just past the head's final CRLF CRLF, or -1 when more bytes are needed.

    Raises ProtocolError (431) once the buffer holds more than `max_head` bytes without an end.
    """
    end = buffer.find(b"\r\n\r\n", 0, max_head + 4)
    if end >= 0:
        return end + 4
    if len(buffer) > max_head:
        raise ProtocolError(431, f"request head larger than {max_head} bytes")
    return -1


def parse_head(head: bytes | bytearray) -> Head:
    """Parse one request head (ending in CRLF CRLF)."""
    data = bytes(head)
    line_end = data.find(b"\r\n")
    if not data.endswith(b"\r\n\r\n") or line_end < 0:
        raise ProtocolError(400, "request head does not end with an empty line")
    block = data[line_end + 2 : -2]
    # Two C calls check and split every field line: one validates the whole block, one
    # extracts the pairs (a field per line, each line already known to be well formed).
    if block.count(b"\r\n") > MAX_FIELDS:
        raise ProtocolError(431, f"more than {MAX_FIELDS} header fields")
    if _FIELDS.fullmatch(block) is None:
        raise ProtocolError(400, _field_problem(block))
    fields = tuple(_FIELD.findall(block))
    match = _REQUEST_LINE.fullmatch(data, 0, line_end)
    if match is None:
        raise ProtocolError(400, _request_line_problem(data[:line_end]))
    method, target, version = match.groups()
    return Head(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), fields)


def parse_response_head(head: bytes | bytearray) -> Response:
    """Parse one response head (ending in CRLF CRLF); ProtocolError (502) names the problem."""
    data = bytes(head)
    line_end = data.find(b"\r\n")
    if not data.endswith(b"\r\n\r\n") or line_end < 0:
        raise ProtocolError(502, "the registry's response head does not end with an empty line")
    line = _STATUS_LINE.fullmatch(data, 0, line_end)
    if line is None:
        raise ProtocolError(502, "the registry sent something that is not an HTTP/1 response")
    block = data[line_end + 2 : -2]
    if block.count(b"\r\n") > MAX_FIELDS:
        raise ProtocolError(502, f"the registry sent more than {MAX_FIELDS} header fields")
    if _FIELDS.fullmatch(block) is None:
        raise ProtocolError(502, f"the registry's response has a {_field_problem(block)}")
    return Response(int(line[2]), line[1].decode("ascii"), tuple(_FIELD.findall(block)))


def response_body(method: str, response: Response) -> Body | None:
    """Where the body of `response`, the answer to a `method` request, ends: a `Body` (empty
    for HEAD, 1xx, 204 and 304), or None when it ends only with the connection. Framing two
    readers could read differently is a ProtocolError (502)."""
    if method == "HEAD" or response.status < 200 or response.status in (204, 304):
        return Body(0)
    lengths = set(response.values(b"content-length"))
    if not lengths and not response.values(b"transfer-encoding"):
        return None
    return _framed(lengths, response.values(b"transfer-encoding"), 502, "response", 0)


def _framed(lengths: set[bytes], codings: list[bytes], status: int, what: str, keep: int) -> Body:
    """A body framed by its Content-Length values and Transfer-Encoding fields, or a
    ProtocolError (`status`) for framing two readers could read differently."""
    if codings and lengths:
        raise ProtocolError(status, f"{what} has both Transfer-Encoding and Content-Length")
    if codings:
        if len(codings) > 1 or codings[0].lower() != b"chunked":
            raise ProtocolError(status, "only 'Transfer-Encoding: chunked' bodies are read")
        return Body(None, keep)
    if not lengths:
        return Body(0, keep)
    (length,) = lengths if len(lengths) == 1 else (b"",)
    if not length.isdigit() or len(length) > 18:
        raise ProtocolError(status, f"{what} Content-Length {length[:40]!r} is not one number")
    return Body(int(length), keep)


def _field_problem(block: bytes) -> str:
    for line in block.split(b"\r\n")[:-1]:
        name, colon, _ = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            return "malformed header field line"
    return "control character in a header field value"


def _request_line_problem(line: bytes) -> str:
    parts = line.split(b" ")
    if len(parts) != 3:
        return "request line is not 'METHOD TARGET HTTP/1.1'"
    method, _, version = parts
    if not _TOKEN.fullmatch(method):
        return "request method is not a token"
    if version not in _VERSIONS:
        return "only HTTP/1.0 and HTTP/1.1 requests are served"
    return "request target has spaces, controls or non-ASCII bytes"


class Body:
    """Where a request body ends (RFC 9112 section 6): `feed` takes the bytes that follow the
    head and says how many of them belong to the body, and `done` turns true at its end, so
    nothing after it is taken for body (a pipelined request stays a request).

    With `keep`, the body's content (chunks decoded) is collected in `content`, up to `keep`
    bytes; more is a ProtocolError (413). Framing that two readers could read differently is a
    ProtocolError (400) from `Body.of`, before a byte of the body is used.
    """

    __slots__ = ("_chunked", "_keep", "_left", "_line", "_state", "content", "length")

    def __init__(self, length: int | None, keep: int = 0) -> None:
        """`length` bytes, or chunked when None; keep at most `keep` bytes of content."""
        self.length = length
        self._left = length or 0
        self._state = "size" if length is None else ("data" if length else "done")
        self._chunked = length is None
        self._line = bytearray()
        self._keep = keep
        self.content = bytearray()

    @classmethod
    def of(cls, head: Head, keep: int = 0) -> Body:
        """The body of the request `head` heads."""
        lengths = set(head.values(b"content-length"))
        return _framed(lengths, head.values(b"transfer-encoding"), 400, "request", keep)

    @property
    def done(self) -> bool:
        return self._state == "done"

    @property
    def left(self) -> int | None:
        """Bytes of the body still to come, where its length is known (None: chunked)."""
        return None if self._chunked else self._left

    def feed(self, data: bytes | bytearray | memoryview) -> int:
        """How many bytes at the start of `data` are body; the rest comes after the body."""
        at = 0
        size = len(data)
        while at < size and self._state != "done":
            if self._state == "data":
                taken = min(self._left, size - at)
                if self._keep:
                    self._collect(data[at : at + taken])
                self._left -= taken
                at += taken
                if not self._left:
                    self._state = "crlf" if self._chunked else "done"
                continue
            end = bytes(data[at : at + MAX_CHUNK_LINE + 1]).find(b"\n")
            stop = size if end < 0 else at + end + 1
            self._line += data[at:stop]
            if len(self._line) > MAX_CHUNK_LINE:
                raise ProtocolError(400, "chunk line of the request body too long")
            if end < 0:
                return size
            at = stop
            self._line_done(bytes(self._line))
            self._line.clear()
        return at

    def _collect(self, part: bytes | bytearray | memoryview) -> None:
        if len(self.content) + len(part) > self._keep:
            raise ProtocolError(413, f"request body larger than {self._keep} bytes")
        self.content += part

    def _line_done(self, line: bytes) -> None:
        if self._state == "size":
            size = _CHUNK_SIZE.fullmatch(line)
            if size is None:
                raise ProtocolError(400, "malformed chunk size in the request body")
            self._left = int(size[1], 16)
            self._state = "data" if self._left else "trailer"
        elif self._state == "crlf":
            if line != b"\r\n":
                raise ProtocolError(400, "chunk of the request body not followed by CRLF")
            self._state = "size"
        elif line == b"\r\n":  # the empty line that ends the trailer
            self._state = "done"
        elif not line.endswith(b"\r\n"):
            raise ProtocolError(400, "malformed trailer line in the request body")
