"""What the server tells its operators about each request: one access-log line, its id.

`RequestObserver` is the outermost middleware. For every HTTP request it takes the client's
`X-Request-ID` (when it is a short token) or makes one, answers with it, makes it the
`request_id` of every log line written while serving the request (errors included; see
`regward.logs`), and when the answer is sent counts it in the server's metrics and logs one
line on `regward.access`:

    ... INFO regward.access: request method=GET route=/api/v1/orgs/{org}/policy status=304
        duration_ms=30012.4 user=None token_id=17 request_id=4f0c...

The route is the template, never the path or query (which may carry names or secrets), and the
caller is a user name and a token id (never the token). Services note the caller they resolve
with `note_caller`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regward import logs

if TYPE_CHECKING:
    from regward.server.metrics import ServerMetrics

access_log = logging.getLogger("regward.access")

UNMATCHED = "(unmatched)"
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclass
class Caller:
    user: str | None = None
    token_id: int | None = None


# Mutable per request: a sync route runs in a thread with a copy of the context, and the copy
# still refers to this one object.
_caller: ContextVar[Caller | None] = ContextVar("regward_caller", default=None)


def note_caller(user: str | None, token_id: int | None) -> None:
    """Record who the request being served is from (a no-op outside a request)."""
    caller = _caller.get()
    if caller is not None:
        caller.user, caller.token_id = user, token_id


def route_of(scope: Scope) -> str:
    """The route template that served `scope` (`/api/v1/orgs/{org}`), never the raw path."""
    # FastAPI (0.165) keeps an included router's prefix beside the route, in its own scope
    # key; tests/server/test_observe.py notices if that moves.
    effective = (scope.get("fastapi") or {}).get("effective_route_context")
    for path in (
        getattr(effective, "path", None),
        getattr(scope.get("route"), "path", None),
        scope.get("regward.route"),
    ):
        if isinstance(path, str):
            return path
    # A mount (the dashboard's /static) adds its path to root_path.
    mounted = str(scope.get("root_path", "")).removeprefix(str(scope.get("app_root_path", "")))
    return mounted or UNMATCHED


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(dict(scope["headers"]).get(b"x-request-id", b""))
        # Not reset afterwards: each request runs in a task of its own, and the server's own
        # line about an unhandled error comes after this middleware returns.
        logs.request_id.set(request_id)
        caller = Caller()
        _caller.set(caller)
        status = 500  # unless an answer starts: an error raised through here
        started = time.perf_counter()

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            seconds = time.perf_counter() - started
            record(self.metrics, scope["method"], route_of(scope), status, seconds, caller)


def record(
    metrics: ServerMetrics,
    method: str,
    route: str,
    status: int,
    seconds: float,
    caller: Caller,
    request_id: str | None = None,
) -> None:
    """Count a request in the metrics and write its access-log line (with `request_id`, or
    the one of the request being served); inside `held()`, when that ends."""
    batch: list[_Recorded] | None = getattr(_holding, "batch", None)
    if batch is not None:
        batch.append((metrics, method, route, status, seconds, caller, request_id))
        return
    metrics.observe(method, route, status, [seconds])
    _log(method, route, status, seconds, caller, request_id)


_Recorded = tuple["ServerMetrics", str, str, int, float, Caller, str | None]
_holding = threading.local()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Requests `record`ed by this thread inside are counted and logged when it ends: the
    counts once per method, route and status, the access-log lines (still one per request)
    in one write. For answering thousands of long-polls at once, the answers first."""
    if getattr(_holding, "batch", None) is not None:
        yield  # already held further out
        return
    batch: list[_Recorded] = []
    _holding.batch = batch
    try:
        yield
    finally:
        _holding.batch = None
        kinds: dict[tuple[ServerMetrics, str, str, int], list[float]] = {}
        for metrics, method, route, status, seconds, _caller, _id in batch:
            kinds.setdefault((metrics, method, route, status), []).append(seconds)
        for (metrics, method, route, status), durations in kinds.items():
            metrics.observe(method, route, status, durations)
        with logs.held():
            for _metrics, method, route, status, seconds, caller, request_id in batch:
                _log(method, route, status, seconds, caller, request_id)


def _log(
    method: str, route: str, status: int, seconds: float, caller: Caller, request_id: str | None
) -> None:
    extra: dict[str, object] = {
        "fields": {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 1),
            "user": caller.user,
            "token_id": caller.token_id,
        }
    }
    if request_id is not None:
        extra["request_id"] = request_id
    if access_log.isEnabledFor(logging.INFO):  # as `info` does, without finding the caller
        access_log.handle(
            access_log.makeRecord(
                access_log.name, logging.INFO, __file__, 0, "request", (), None, "record", extra
            )
        )


def request_id_of(given: bytes) -> str:
    """The client's `X-Request-ID` when it is a short token, else a new id."""
    text = given.decode("latin-1")
    return text if _CLIENT_ID.fullmatch(text) else new_request_id()


_PROCESS = secrets.token_hex(8)  # this process's ids apart from every other's
_NEXT = itertools.count()


def new_request_id() -> str:
    """32 hex digits, unique: this process's random half and a count (ids name requests, they
    are not secrets; no system call per request)."""
    return f"{_PROCESS}{next(_NEXT) & 0xFFFFFFFFFFFFFFFF:016x}"
