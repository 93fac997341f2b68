"""The agent's HTTP/1 reader beside llhttp (`httptools`) and `h11`, for speed and strictness.

Each reader frames the same requests the agent sees: the AuthZ plugin's `AuthZReq` (a POST
with a ~600-byte JSON body, as dockerd sends it), the same body chunked, a proxy `CONNECT`
and an absolute-form `GET` with a registry client's fields. Speed: microseconds per request
(head parsed, body framed and collected), best of 5 rounds. Strictness: which of a list of
requests that two readers could read differently (the issue's `0x3`, `1_0`, `notchunked`, and
the classic smuggling shapes) each reader refuses; the agent's reader must refuse them all.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h11
import httptools

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from regward.agent.http1 import Body, ProtocolError, head_end, parse_head

ROUNDS = 5
N = 20_000

_ENVELOPE = json.dumps(
    {
        "User": "",
        "RequestMethod": "POST",
        "RequestUri": "/v1.43/images/create?fromImage=ghcr.io%2Facme%2Fapp&tag=v1",
        "RequestHeaders": {
            "Content-Length": "0",
            "Content-Type": "text/plain",
            "User-Agent": "Docker-Client/24.0.7 (linux)",
            "X-Registry-Auth": "e30=",
        },
    }
).encode()


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    return b"".join(
        f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:])
    ) + (b"0\r\n\r\n")


REQUESTS = {
    "authz_post": (
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: plugin\r\nUser-Agent: Go-http-client/1.1\r\n"
        b"Content-Length: " + str(len(_ENVELOPE)).encode() + b"\r\n"
        b"Accept: application/vnd.docker.plugins.v1.2+json\r\nAccept-Encoding: gzip\r\n\r\n"
        + _ENVELOPE
    ),
    "authz_chunked": (
        b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: plugin\r\nUser-Agent: Go-http-client/1.1\r\n"
        b"Transfer-Encoding: chunked\r\nAccept-Encoding: gzip\r\n\r\n" + _chunked(_ENVELOPE)
    ),
    "proxy_connect": (
        b"CONNECT ghcr.io:443 HTTP/1.1\r\nHost: ghcr.io:443\r\n"
        b"User-Agent: Go-http-client/1.1\r\n\r\n"
    ),
    "proxy_get": (
        b"GET http://reg.local:5000/v2/acme/app/manifests/v1 HTTP/1.1\r\nHost: reg.local:5000\r\n"
        b"User-Agent: docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1 os/linux\r\n"
        b"Accept: application/vnd.docker.distribution.manifest.v2+json\r\n"
        b"Accept: application/vnd.oci.image.index.v1+json\r\n"
        b"Authorization: Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2lnbmF0dXJl\r\n"
        b"Accept-Encoding: gzip\r\nConnection: close\r\n\r\n"
    ),
}

_POST = b"POST /AuthZPlugin.AuthZReq HTTP/1.1\r\nHost: p\r\n"
HOSTILE = {
    "chunk size 0x3": _POST + b"Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "Content-Length 1_0": _POST + b"Content-Length: 1_0\r\n\r\n0123456789",
    "Content-Length +5": _POST + b"Content-Length: +5\r\n\r\nhello",
    "Transfer-Encoding notchunked": _POST + b"Transfer-Encoding: notchunked\r\n\r\n0\r\n\r\n",
    "Transfer-Encoding gzip, chunked": _POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "Content-Length and chunked": (
        _POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "two Content-Lengths": _POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "obs-fold": _POST + b"X-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n",
    "space before colon": _POST + b"Content-Length : 0\r\n\r\n",
    "bare LF": b"POST /AuthZPlugin.AuthZReq HTTP/1.1\nHost: p\nContent-Length: 0\n\n",
    "HTTP/1.2": b"POST / HTTP/1.2\r\nContent-Length: 0\r\n\r\n",
    "control byte in a value": _POST + b"X-A: a\x01b\r\nContent-Length: 0\r\n\r\n",
    "NUL in the target": b"POST /a\x00b HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "non-ASCII target": b"POST /\xc3\xa9 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "two spaces in the request line": b"POST  /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "HTTP/2.0 on HTTP/1": b"POST /x HTTP/2.0\r\nContent-Length: 0\r\n\r\n",
    "HTTP/0.9": b"POST /x HTTP/0.9\r\nContent-Length: 0\r\n\r\n",
    "method not a token": b"PO(ST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "chunk size with a space first": (
        _POST + b"Transfer-Encoding: chunked\r\n\r\n 3\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk data without CRLF": _POST + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
}


def ours(data: bytes) -> bytes:
    end = head_end(data, 64 * 1024)
    if end < 0:
        raise ProtocolError(400, "incomplete head")
    head = parse_head(data[:end])
    body = Body.of(head, keep=16 * 1024 * 1024)
    body.feed(memoryview(data)[end:])
    if not body.done:
        raise ProtocolError(400, "incomplete body")
    return bytes(body.content)


class _Callbacks:
    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.complete = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


def llhttp(data: bytes) -> bytes:
    callbacks = _Callbacks()
    parser = httptools.HttpRequestParser(callbacks)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:  # CONNECT: the head is complete
        return b""
    if not callbacks.complete:
        raise ValueError("incomplete")
    return bytes(callbacks.body)


def h11_reader(data: bytes) -> bytes:
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    body = bytearray()
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Request) and event.method == b"CONNECT":
            return b""  # the head is complete; what follows is the tunnel's
        if isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        elif event is h11.NEED_DATA or event is h11.PAUSED:
            raise ValueError("incomplete request")


READERS: dict[str, Callable[[bytes], bytes]] = {
    "regward.agent.http1": ours,
    "httptools (llhttp)": llhttp,
    "h11": h11_reader,
}


def per_request_us(reader: Callable[[bytes], bytes], data: bytes) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(N):
            reader(data)
        best = min(best, time.perf_counter() - started)
    return best / N * 1e6


def refuses(reader: Callable[[bytes], bytes], data: bytes) -> bool:
    try:
        reader(data)
    except Exception:  # each library raises its own error type; any of them is a refusal
        return True
    return False


def main() -> int:
    for name, data in REQUESTS.items():  # every reader agrees on the valid requests first
        bodies = {reader: READERS[reader](data) for reader in READERS}
        assert len(set(bodies.values())) == 1, (name, bodies)
    speed = {
        request: {reader: round(per_request_us(fn, data), 2) for reader, fn in READERS.items()}
        for request, data in REQUESTS.items()
    }
    strict = {
        case: {reader: refuses(fn, data) for reader, fn in READERS.items()}
        for case, data in HOSTILE.items()
    }
    print(f"microseconds per request (best of {ROUNDS} x {N}); lower is better")
    print(f"{'request':<16}" + "".join(f"{reader:>22}" for reader in READERS))
    for request, row in speed.items():
        print(f"{request:<16}" + "".join(f"{row[reader]:>22.2f}" for reader in READERS))
    print()
    print("refuses a request two readers could read differently")
    print(f"{'case':<34}" + "".join(f"{reader:>22}" for reader in READERS))
    for case, refused in strict.items():
        marks = "".join(f"{'refused' if refused[r] else 'ACCEPTED':>22}" for r in READERS)
        print(f"{case:<34}{marks}")
    totals = {reader: sum(row[reader] for row in strict.values()) for reader in READERS}
    label = f"refused, of {len(HOSTILE)}"
    print(f"{label:<34}" + "".join(f"{totals[r]:>22}" for r in READERS))
    print(
        f"(machine load average when measured: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )
    print(json.dumps({"http1": {"us_per_request": speed, "refuses": strict, "refused": totals}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
