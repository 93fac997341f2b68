"""HTTP/1.1 framing of the plugin socket: the request head, chunked bodies, the response."""

from __future__ import annotations

MEDIA_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # dockerd caps forwarded bodies at 4 MiB (base64: ~5.4 MiB)
MAX_HEADER_BYTES = 64 * 1024


class BadRequest(Exception):
    """Bytes that are not an HTTP/1.1 request the plugin reads."""


def parse_head(head: bytes) -> tuple[str, int, bool, bool]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadRequest(lines[0][:100])
    length = 0
    chunked = False
    keep_alive = parts[2] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
            if length < 0:
                raise BadRequest("negative Content-Length")
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            keep_alive = value.strip().lower() != "close"
    return parts[1], length, chunked, keep_alive


def parse_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, end offset) of a complete chunked body at `start`, or None while incomplete."""
    chunks: list[bytes] = []
    total = 0
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0].strip(), 16)
        position = line_end + 2
        if size == 0:
            while True:  # trailers, up to the empty line
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                if line_end == position:
                    return b"".join(chunks), position + 2
                position = line_end + 2
        total += size
        if total > MAX_REQUEST_BYTES:
            raise BadRequest("chunked body too large")
        if len(buffer) < position + size + 2:
            return None
        chunks.append(bytes(buffer[position : position + size]))
        position += size + 2


def response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + body
