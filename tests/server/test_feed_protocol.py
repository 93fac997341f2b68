"""The feed served by `regward server run`'s HTTP protocol (regward.server.feed_protocol): the
same answers as the ASGI path, pipelining kept in order, polls held as data and let go when
their client leaves, and each request logged once."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator

import h11
import pytest
from starlette.types import Receive, Scope, Send

from regward.server.runtime import Server
from tests.harness.wait import wait_for
from tests.server.conftest import World
from tests.server.live import ThreadServer

ORG = "/api/v1/orgs/acme"
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


class Raw:
    """One HTTP/1.1 connection written by hand (several requests in one write, if need be)
    and read with h11, so framing is checked exactly."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.h11 = h11.Connection(h11.CLIENT)

    def send(self, *requests: bytes) -> None:
        self.sock.sendall(b"".join(requests))

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response on the connection (h11 follows pipelined requests itself)."""
        status, headers, body = 0, {}, b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(self.sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
                    self.h11.start_next_cycle()
                return status, headers, body
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError("the server closed the connection before answering")

    def answer(self, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        """The answer to the next request written (h11 frames it by `method`: HEAD, none)."""
        self.h11.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
        self.h11.send(h11.EndOfMessage())
        return self.response()

    def close(self) -> None:
        self.sock.close()


def request(
    path: str, token: str | None, method: str = "GET", extra: str = "", body: bytes = b""
) -> bytes:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}{length}{extra}\r\n".encode() + body


@pytest.fixture
def live(world: World) -> Iterator[ThreadServer]:
    with ThreadServer(world.app) as server:
        yield server


def held(world: World) -> int:
    server: Server = world.app.state.server
    return server.notifier.waiting("acme")


def _one(live: ThreadServer, raw_request: bytes) -> tuple[int, dict[str, str], bytes]:
    connection = Raw(live.port)
    try:
        connection.send(raw_request)
        return connection.answer()
    finally:
        connection.close()


@sqlite_only
@pytest.mark.parametrize(
    ("query", "extra", "who", "status"),
    [
        ("", "", "bob", 200),
        ("?after=1", "", "bob", 304),
        ("?wait=-1", "", "bob", 422),
        ("?after=x", "", "bob", 422),
        ("", "", "nobody", 401),
        ("", "", "eve", 404),
    ],
)
def test_the_protocol_answers_as_the_asgi_path_does(
    world: World, live: ThreadServer, query: str, extra: str, who: str, status: int
) -> None:
    token = world.tokens.get(who, "not-a-token")
    path = f"{ORG}/policy{query}"
    # A request with a body is not the protocol's: it goes through ASGI (InputGuard reads
    # the body; FeedFastPath answers). Without one, the protocol answers by itself.
    by_protocol = _one(live, request(path, token))
    by_asgi = _one(live, request(path, token, body=b"{}"))
    assert by_protocol[0] == by_asgi[0] == status
    assert by_protocol[2] == by_asgi[2]

    def same(headers: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in headers.items() if k not in ("date", "x-request-id")}

    assert same(by_protocol[1]) == same(by_asgi[1])
    assert list(by_protocol[1]) == list(by_asgi[1])  # the same headers in the same order
    if status >= 400:
        assert json.loads(by_protocol[2])["detail"]


@sqlite_only
def test_pipelined_requests_are_answered_in_order(world: World, live: ThreadServer) -> None:
    bob = world.tokens["bob"]
    connection = Raw(live.port)
    try:
        connection.send(
            request(f"{ORG}/policy", bob),
            request("/healthz", None),
            request(f"{ORG}/policy", bob, method="HEAD", extra="X-Request-ID: pipelined-3\r\n"),
        )
        for method in ("GET", "GET", "HEAD"):
            status, headers, body = connection.answer(method)
            assert status == 200
            if method == "HEAD":
                assert body == b""
                assert int(headers["content-length"]) > 0
                assert headers["x-request-id"] == "pipelined-3"
            elif headers["content-type"] == "application/json" and "etag" in headers:
                assert json.loads(body)["policy"]["organization"] == "acme"
            else:
                assert json.loads(body) == {"status": "ok"}
    finally:
        connection.close()


@sqlite_only
def test_a_request_behind_a_held_poll_waits_for_its_answer(
    world: World, live: ThreadServer
) -> None:
    revision = world.publish()
    connection = Raw(live.port)
    try:
        connection.send(
            request(f"{ORG}/policy?wait=30&after={revision}", world.tokens["bob"]),
            request("/healthz", None),
        )
        wait_for(lambda: held(world) == 1, 10, "the poll to be held")
        newer = world.publish()
        status, headers, _ = connection.answer()
        assert (status, headers["x-regward-revision"]) == (200, str(newer))
        assert connection.answer()[2] == b'{"status":"ok"}'
    finally:
        connection.close()


@sqlite_only
def test_a_poll_whose_client_leaves_is_let_go_and_logged(
    world: World, live: ThreadServer, json_lines: io.StringIO
) -> None:
    revision = world.publish()
    connection = Raw(live.port)
    connection.send(
        request(
            f"{ORG}/policy?wait=30&after={revision}",
            world.tokens["bob"],
            extra="X-Request-ID: leaving-1\r\n",
        )
    )
    wait_for(lambda: held(world) == 1, 10, "the poll to be held")
    assert live.requests_under_way() == 0  # held as data: no request, no task
    # The same poll with a body goes through ASGI: held, it is a request under way.
    asgi = Raw(live.port)
    asgi.send(request(f"{ORG}/policy?wait=30&after={revision}", world.tokens["bob"], body=b"{}"))
    wait_for(lambda: held(world) == 2, 10, "the second poll to be held")
    assert live.requests_under_way() == 1
    asgi.close()
    connection.close()
    wait_for(lambda: held(world) == 0, 10, "the polls to be let go")

    def logged() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
        return [e for e in lines if e.get("request_id") == "leaving-1"]

    wait_for(logged, 10, "the access-log line of the poll")
    (line,) = logged()
    assert line["logger"] == "regward.access"
    assert line["route"] == "/api/v1/orgs/{org}/policy"
    assert line["method"] == "GET"
    assert line["status"] == 304
    assert isinstance(line["token_id"], int)


@sqlite_only
def test_http_1_0_gets_its_answer_and_the_connection_closed(
    world: World, live: ThreadServer
) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=30) as sock:
        bearer = f"Authorization: Bearer {world.tokens['bob']}"
        sock.sendall(f"GET {ORG}/policy HTTP/1.0\r\n{bearer}\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK"
    assert "connection: close" in lines
    assert json.loads(body)["policy"]["organization"] == "acme"


def test_requests_passed_to_the_application_know_both_addresses() -> None:
    async def addresses(scope: Scope, receive: Receive, send: Send) -> None:
        body = json.dumps({"client": scope["client"], "server": scope["server"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    with ThreadServer(addresses) as live:  # type: ignore[arg-type]  # a bare ASGI application
        raw = Raw(live.port)
        try:
            raw.send(request("/", None), request("/", None))  # two on one connection
            seen = [json.loads(raw.answer()[2]) for _ in range(2)]
            mine = raw.sock.getsockname()
        finally:
            raw.close()
    for answer in seen:
        assert answer == {"client": list(mine), "server": ["127.0.0.1", live.port]}
