"""The policy feed agents follow: `GET /api/v1/orgs/{org}/policy[?wait=S&after=N]`.

The answer is the newest revision as SignedPolicy JSON with its ETag (`If-None-Match` -> 304).
With `after=N` (or an `If-None-Match` naming the newest revision) and `wait=S`, the request is
held until a newer revision is applied (200) or S seconds pass (304).

Every agent holds one of these requests all the time. `regward server run` answers them in
its HTTP protocol (regward.server.feed_protocol), so a waiting poll is a parked object
(regward.server.long_polls) and no request at all. Whatever reaches the ASGI application
(a request that protocol passes on, or any other server) is answered by `FeedFastPath`, a
small middleware in front of FastAPI's per-request machinery, through the same `LongPolls`;
it answers HEAD the same way, without the body. The FastAPI route below documents the endpoint
in the OpenAPI schema (and answers, should the middleware be left out); all share `request_of`
and `LongPolls`. A wait ends with a fresh check of the token, so a credential revoked meanwhile
gets 401.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from regward.server.api.deps import BearerDep, OrgPath
from regward.server.db import UNAVAILABLE, is_unavailable
from regward.server.errors import InvalidInput, ServiceError
from regward.server.long_polls import Answer, Poll
from regward.server.runtime import Server, server_of

if TYPE_CHECKING:
    from regward.server.metrics import ServerMetrics

router = APIRouter()
PATH = re.compile(r"/api/v1/orgs/([^/]+)/policy")
ROUTE = "/api/v1/orgs/{org}/policy"  # the access log's and the metrics' name for it


class _Reply:
    """A poll's sink for an ASGI request: the coroutine serving it awaits `future`."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def answered(self, _poll: Poll, answer: Answer) -> None:
        if not self.future.done():
            self.future.set_result(answer)

    def failed(self, _poll: Poll, error: Exception) -> None:
        if not self.future.done():
            self.future.set_exception(error)


async def respond(
    server: Server,
    org: str,
    token: str | None,
    wait: float,
    after: int | None,
    if_none_match: str | None,
    disconnected: Callable[[], Coroutine[Any, Any, None]],
) -> Answer:
    """The feed's answer to an ASGI request; raises ServiceError (401/404) like every other
    route. A client that goes away ends its wait at once."""
    reply = _Reply()
    poll = Poll(org, token, after, wait, if_none_match, reply)
    answer = await server.long_polls.open(poll)
    if answer is not None:
        return answer
    gone = asyncio.create_task(disconnected(), name="regward-feed-disconnect")
    gone.add_done_callback(lambda _gone: server.long_polls.drop(poll))
    try:
        return await reply.future
    finally:
        gone.cancel()


def request_of(
    path_org: str, query_string: bytes, authorization: str
) -> tuple[str, str | None, float, int | None]:
    """(organization, bearer token, wait, after) of a feed request, as both of its servers
    (FeedFastPath here, regward.server.feed_protocol) read them; InvalidInput (422) for a
    negative or non-numeric wait or after."""
    scheme, _, token = authorization.partition(" ")
    query = parse_qs(query_string.decode("latin-1"))
    wait = _number(query, "wait", float) or 0.0
    after = _number(query, "after", int)
    return (
        unquote(path_org),
        token.strip() if scheme.lower() == "bearer" else None,
        wait,
        None if after is None else int(after),
    )


def error_answer(error: Exception, metrics: ServerMetrics) -> Answer:
    """The answer to a feed request that failed with `error`: a ServiceError's status and
    words, 503 while the database is unavailable; any other error is raised again (a bug,
    not an outage: the caller's 500 and the log)."""
    if isinstance(error, ServiceError):
        headers = {"content-type": "application/json"}
        if error.status == 401:
            headers["www-authenticate"] = "Bearer"
        return error.status, headers, json.dumps({"detail": str(error)}).encode()
    if isinstance(error, DBAPIError):
        metrics.database_error(is_unavailable(error))
        if is_unavailable(error):
            body = json.dumps({"detail": UNAVAILABLE}).encode()
            return 503, {"content-type": "application/json"}, body
    raise error


def _until_disconnect(receive: Receive) -> Callable[[], Coroutine[Any, Any, None]]:
    async def wait() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    return wait


_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": 'SignedPolicy JSON: {"policy": {...}, "signature": base64}'},
    304: {"description": "no newer revision (at once, or when `wait` ran out)"},
}


@router.head(
    "/orgs/{org}/policy",
    operation_id="policy_head",
    summary="The feed's headers only",
    responses=_ANSWERS,
)
@router.get(
    "/orgs/{org}/policy",
    operation_id="policy",
    summary="The applied policy, signed; long-poll with ?wait=SECONDS&after=REVISION",
    responses=_ANSWERS,
)
async def policy(
    org: OrgPath,
    request: Request,
    credentials: BearerDep,
    wait: Annotated[float, Query(ge=0, description="seconds to wait for a newer revision")] = 0,
    after: Annotated[int | None, Query(ge=0, description="the revision the client has")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    server = server_of(request)
    token = credentials.credentials if credentials else None
    status, headers, body = await respond(
        server, org, token, wait, after, if_none_match, _until_disconnect(request.receive)
    )
    return Response(body, status_code=status, headers=headers)


def _number(query: dict[str, list[str]], name: str, kind: type[float] | type[int]) -> float | None:
    values = query.get(name)
    if not values:
        return None
    try:
        value = kind(values[-1])
    except ValueError:
        value = -1
    if value < 0 or value != value:  # negative or NaN
        raise InvalidInput(f"{name}: {values[-1]!r} must be a number >= 0")
    return value


class FeedFastPath:
    """Serves `GET` and `HEAD /api/v1/orgs/{org}/policy` without FastAPI's per-request
    frames (so both read the query the same way)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        scope["regward.route"] = ROUTE  # for the access log
        server: Server = scope["app"].state.server
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            org, token, wait, after = request_of(
                match.group(1), scope["query_string"], headers.get("authorization", "")
            )
            status, answer_headers, body = await respond(
                server,
                org,
                token,
                wait,
                after,
                headers.get("if-none-match"),
                _until_disconnect(receive),
            )
        except (ServiceError, DBAPIError) as error:
            status, answer_headers, body = error_answer(error, scope["app"].state.metrics)
        raw = [(k.encode(), v.encode()) for k, v in answer_headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
