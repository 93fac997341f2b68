"""A WebSocket echo (RFC 6455), stdlib only, for the transparent listener's tests: the server
side (`serve_echo`, used by tests/harness/webserver.py on `/echo`) and the client's bytes
(`handshake`, `frame`) a test or a busybox `nc` in a container sends.

    serve_echo(rfile, wfile, key)    after the request head: 101, then each text or binary
                                     message back, until a close frame (answered) or EOF
"""

from __future__ import annotations

import base64
import hashlib
from io import BufferedIOBase

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's sample key
TEXT, CLOSE = 0x1, 0x8


def accept(key: str) -> str:
    """The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()  # noqa: S324


def handshake(host: str, path: str = "/echo", key: str = KEY) -> bytes:
    """A client's opening handshake for `host` and `path`."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def frame(payload: bytes, opcode: int = TEXT, mask: bytes | None = b"\x01\x02\x03\x04") -> bytes:
    """One final frame (payload under 126 bytes); masked as a client's must be, unless
    `mask` is None (a server's)."""
    assert len(payload) < 126
    if mask is None:
        return bytes([0x80 | opcode, len(payload)]) + payload
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


def read_frame(rfile: BufferedIOBase) -> tuple[int, bytes] | None:
    """The next frame's opcode and unmasked payload; None at the end of the stream."""
    start = rfile.read(2)
    if len(start) < 2:
        return None
    length = start[1] & 0x7F
    if length == 126:
        length = int.from_bytes(rfile.read(2), "big")
    elif length == 127:
        length = int.from_bytes(rfile.read(8), "big")
    mask = rfile.read(4) if start[1] & 0x80 else b"\0\0\0\0"
    payload = rfile.read(length)
    return start[0] & 0x0F, bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def serve_echo(rfile: BufferedIOBase, wfile: BufferedIOBase, key: str) -> None:
    """Answer a handshake whose request head was read, then echo messages until closed."""
    wfile.write(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept(key).encode() + b"\r\n\r\n"
    )
    wfile.flush()
    while (received := read_frame(rfile)) is not None:
        opcode, payload = received
        wfile.write(frame(payload, opcode, mask=None))
        wfile.flush()
        if opcode == CLOSE:
            return
