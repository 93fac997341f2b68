"""The HTTP/1.1 protocol `regward server run` serves: uvicorn's (httptools), except that the
policy feed's polls are answered here, before any ASGI request exists.

Every agent holds a long-poll all the time. Served as an ASGI request, each held poll kept a
request cycle, its events, a task and a coroutine stack through the middleware alive (about
17 KB at 10,000 agents). Here the poll is read from the parsed request, opened by
`LongPolls` (a token check batched with the others) and, when it must wait, parked as a small
object: the connection, the token and the revision the agent has (regward.server.long_polls).
An apply, the wait's end or a closed connection answers it; the answer is written to the
connection with the same status, headers and body as the ASGI path's, and logged and counted
the same way (regward.server.observe).

What is served here: `GET` or `HEAD /api/v1/orgs/{org}/policy` without a body, without
`Expect`, not pipelined behind an unanswered request, without NUL in its path or query.
Anything else (a feed request included) goes to the ASGI application as before, whose
`FeedFastPath` answers the feed through the same `LongPolls`, and whose `InputGuard` refuses
hostile input as it always has.

Each connection also costs less: uvicorn's flow control makes its asyncio Event only when
writing pauses, the queue for pipelined requests is a list (an empty deque is 760 bytes), and
the addresses are read from the socket when a request needs them, and a waiting poll's
connection puts its parser down until more data comes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.utils import get_local_addr, get_remote_addr

from regward.server.api.feed import PATH, ROUTE, error_answer, request_of
from regward.server.errors import ServiceError
from regward.server.inputs import has_nul
from regward.server.long_polls import Answer, Poll
from regward.server.observe import Caller, new_request_id, record, request_id_of

if TYPE_CHECKING:
    from regward.server.metrics import ServerMetrics
    from regward.server.runtime import Server

log = logging.getLogger(__name__)
_INTERNAL = json.dumps({"detail": "internal error; the server log has the details"}).encode()


class _NoEvent:
    """What uvicorn sets on a request's message event: nobody waits for a feed request's."""

    @staticmethod
    def set() -> None:
        return None


class FeedCycle(Poll):
    """A feed request on a connection: its poll, and what uvicorn's protocol reads from the
    request it is serving (`response_complete`, `keep_alive`, `more_body`, ...)."""

    __slots__ = (
        "disconnected",
        "head",
        "keep_alive",
        "more_body",
        "request_id",
        "response_complete",
        "started",
    )
    message_event = _NoEvent()

    def __init__(self, sink: FeedProtocol, head: bool, keep_alive: bool, given_id: bytes) -> None:
        super().__init__("", None, None, 0.0, None, sink)
        self.head = head
        self.keep_alive = keep_alive
        self.request_id = request_id_of(given_id) if given_id else None
        self.started = time.perf_counter()
        self.response_complete = False
        self.disconnected = False
        self.more_body = True


class FeedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering the feed's polls itself (see the module)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvicorn's own signature narrows BaseTransport to Transport the same way)
        super().connection_made(transport)
        self.flow = _FlowControl(transport)
        self.pipeline = _Pipeline()  # type: ignore[assignment]  # the two calls uvicorn makes

    # The connection's two addresses are asked of the socket when a request's ASGI scope needs
    # them, not kept (two tuples, two strings, two numbers: about 400 bytes a connection), and
    # not for the feed's polls (two system calls each): `_beginning` while uvicorn starts a
    # request's scope, filled in when the request goes to the application.
    # (Of the class: should another thread's server begin a request meanwhile, its addresses
    # are looked up a moment later, when the request goes to its application.)
    _beginning = False

    def on_message_begin(self) -> None:
        FeedProtocol._beginning = True
        try:
            super().on_message_begin()
        finally:
            FeedProtocol._beginning = False

    @property  # in place of uvicorn's plain attribute, read the same way
    def client(self) -> tuple[str, int] | None:
        if self.transport is None or FeedProtocol._beginning:
            return None
        return get_remote_addr(self.transport)

    @client.setter
    def client(self, _value: object) -> None:
        return None

    @property
    def server(self) -> tuple[str, int | None] | None:
        if self.transport is None or FeedProtocol._beginning:
            return None
        return get_local_addr(self.transport)

    @server.setter
    def server(self, _value: object) -> None:
        return None

    def data_received(self, data: bytes) -> None:
        if self.parser is None:  # put down while a poll waited (below)
            self.parser = _parser(self)
        super().data_received(data)
        cycle = self.cycle
        if (
            isinstance(cycle, FeedCycle)
            and not (cycle.response_complete or cycle.more_body)
            and cycle.keep_alive
        ):
            # The request is whole and waits: its parser (about 1 KB, with the callbacks it
            # holds) is made again for the next request, at a message boundary as now.
            self.parser = None

    def connection_lost(self, exc: Exception | None) -> None:
        cycle = self.cycle
        super().connection_lost(exc)
        server = self._server()
        if isinstance(cycle, FeedCycle) and not cycle.response_complete and server is not None:
            server.long_polls.drop(cycle)  # no-op while it is being opened: `_open` drops it

    def shutdown(self) -> None:
        cycle = self.cycle
        if isinstance(cycle, FeedCycle) and not cycle.response_complete:
            self.transport.close()  # a held poll would hold the shutdown; agents poll again
            return
        super().shutdown()

    def on_headers_complete(self) -> None:
        if not self._serve_feed():
            self.scope["server"], self.scope["client"] = self.server, self.client
            super().on_headers_complete()

    def _state(self) -> Any:
        """The served application's state (None for an application that has none)."""
        return getattr(self.config.app, "state", None)

    def _server(self) -> Server | None:
        """The Regward server of the application served (None: another application)."""
        server: Server | None = getattr(self._state(), "server", None)
        return server

    def _metrics(self) -> ServerMetrics:
        metrics: ServerMetrics = self._state().metrics
        return metrics

    def _serve_feed(self) -> bool:
        """Take the request when it is a feed poll this protocol serves; False otherwise."""
        method = self.parser.get_method()
        server = self._server()
        if (
            (self.cycle is not None and not self.cycle.response_complete)
            or method not in (b"GET", b"HEAD")
            or self.expect_100_continue
            or self.parser.should_upgrade()
            or self.limit_concurrency is not None
            or server is None
        ):
            return False
        try:
            url = httptools.parse_url(self.url)
            path = url.path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return False
        query: bytes = url.query or b""
        path = self.root_path + _unquote(path)  # as uvicorn makes the ASGI path (%2F too)
        match = PATH.fullmatch(path)
        if match is None or has_nul(path, query):
            return False
        headers: dict[bytes, bytes] = {}
        for name, value in self.headers:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return False  # a body: InputGuard reads and checks it
            headers[name] = value
        version = self.parser.get_http_version()
        keep_alive = version != "1.0" and self.parser.should_keep_alive()
        cycle = FeedCycle(self, method == b"HEAD", keep_alive, headers.get(b"x-request-id", b""))
        self.cycle = cycle  # type: ignore[assignment]  # uvicorn reads the fields it has
        # The parsed request is all in the cycle now; drop what a parked poll need not keep.
        self.scope = self.headers = None  # type: ignore[assignment]
        self.url = b""
        try:
            cycle.organization, cycle.token, cycle.wait, cycle.after = request_of(
                match.group(1), query, headers.get(b"authorization", b"").decode("latin-1")
            )
        except ServiceError as error:
            self.failed(cycle, error)
            return True
        cycle.if_none_match = (
            headers[b"if-none-match"].decode("latin-1") if b"if-none-match" in headers else None
        )
        task = self.loop.create_task(self._open(server, cycle), name="regward-feed-open")
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        return True

    async def _open(self, server: Server, cycle: FeedCycle) -> None:
        try:
            answer = await server.long_polls.open(cycle)
        except Exception as error:
            self.failed(cycle, error)
            return
        if answer is not None:
            self.answered(cycle, answer)
        elif cycle.disconnected:
            server.long_polls.drop(cycle)  # the client left while it was being opened

    def answered(self, poll: Poll, answer: Answer) -> None:
        """Write `answer` as the response to `poll` (a FeedCycle of this connection)."""
        poll = _cycle(poll)
        if poll.response_complete:
            return
        poll.response_complete = True
        status, _headers, body = answer
        request_id = poll.request_id = poll.request_id or new_request_id()
        parts = [_head(answer, self.server_state.default_headers), request_id.encode()]
        parts.append(b"\r\n\r\n" if poll.keep_alive else b"\r\nconnection: close\r\n\r\n")
        if not poll.head:
            parts.append(body)
        if not self.transport.is_closing():
            self.transport.write(b"".join(parts))
        seconds = time.perf_counter() - poll.started
        method = "HEAD" if poll.head else "GET"
        caller = Caller(None, poll.token_id)
        record(self._metrics(), method, ROUTE, status, seconds, caller, request_id)
        if not poll.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def failed(self, poll: Poll, error: Exception) -> None:
        poll = _cycle(poll)
        try:
            answer = error_answer(error, self._metrics())
        except Exception as bug:
            poll.request_id = poll.request_id or new_request_id()
            log.error("the policy feed failed", exc_info=bug, extra={"request_id": poll.request_id})
            answer = 500, {"content-type": "application/json"}, _INTERNAL
        self.answered(poll, answer)


_heads: dict[int, tuple[Answer, object, bytes]] = {}


def _head(answer: Answer, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The response's head up to the request id's value: the status line, the server's headers,
    `answer`'s and its length. Made once per answer (the same object goes to every poll an
    apply wakes) and for the server's headers of the second (uvicorn's `date` header)."""
    made = _heads.get(id(answer))
    if made is not None and made[0] is answer and made[1] is default_headers:
        return made[2]
    status, headers, body = answer
    parts = [STATUS_LINE[status]]
    for name, value in default_headers:
        parts += [name, b": ", value, b"\r\n"]
    for text, value_text in headers.items():
        parts += [text.encode(), b": ", value_text.encode(), b"\r\n"]
    parts += [b"content-length: ", str(len(body)).encode(), b"\r\n", b"x-request-id: "]
    head = b"".join(parts)
    if len(_heads) >= 16:
        _heads.clear()
    _heads[id(answer)] = (answer, default_headers, head)  # holding `answer`: its id stays its
    return head


def _parser(protocol: FeedProtocol) -> httptools.HttpRequestParser:
    """A parser for `protocol`'s next request, as uvicorn makes one for a connection."""
    parser = httptools.HttpRequestParser(protocol)
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


def _cycle(poll: Poll) -> FeedCycle:
    if not isinstance(poll, FeedCycle):
        raise TypeError(f"{poll!r} is not a request of this connection")
    return poll


def _unquote(path: str) -> str:
    return unquote(path) if "%" in path else path


class _FlowControl(FlowControl):
    """uvicorn's flow control, making its writable Event only when writing pauses."""

    def __init__(self, transport: asyncio.Transport) -> None:  # no super(): no Event yet
        self._transport = transport
        self.read_paused = False
        self.write_paused = False

    async def drain(self) -> None:
        if self.write_paused:
            await self._is_writable_event.wait()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._is_writable_event = asyncio.Event()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            self._is_writable_event.set()


class _Pipeline(list[Any]):
    """The queue of pipelined requests uvicorn keeps: `appendleft` and `pop`, as on its deque."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)
