"""The plugin socket's side of HTTP/1.1: its limits and its responses. Requests are read by
the agent's one strict reader, `regward.agent.http1`."""

from __future__ import annotations

MEDIA_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # dockerd caps forwarded bodies at 4 MiB (base64: ~5.4 MiB)
MAX_HEADER_BYTES = 64 * 1024


def response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = _REASONS.get(status, "Error")
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + body


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
}
