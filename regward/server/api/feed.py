"""The policy feed agents follow: `GET /api/v1/orgs/{org}/policy[?wait=S&after=N]`.

The answer is the newest revision as SignedPolicy JSON with its ETag (`If-None-Match` -> 304).
With `after=N` (or an `If-None-Match` naming the newest revision) and `wait=S`, the request is
held until a newer revision is applied (200) or S seconds pass (304).

Every agent holds one of these requests all the time, so GET requests skip FastAPI's
per-request machinery (`FeedFastPath`, a small ASGI middleware): a held poll then costs a
coroutine and its connection, not a dependency-injection frame stack. The middleware answers
HEAD the same way, without the body. The FastAPI route below documents the endpoint in the
OpenAPI schema (and answers, should the middleware be left out); both share `respond`.
A wait ends with a fresh check of the token, so a credential revoked meanwhile gets 401.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any
from urllib.parse import parse_qs, unquote

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Receive, Scope, Send

from regward.server.api.deps import BearerDep, OrgPath
from regward.server.db import UNAVAILABLE, is_unavailable
from regward.server.errors import InvalidInput, ServiceError
from regward.server.feed import FeedDocument
from regward.server.runtime import Server, server_of

router = APIRouter()
Answer = tuple[int, dict[str, str], bytes]
_PATH = re.compile(r"/api/v1/orgs/([^/]+)/policy")


async def _open(server: Server, token: str | None, org: str) -> FeedDocument:
    """Authenticate, check access and find the newest revision (batched with other polls'
    checks); the document itself usually comes from the cache."""
    _organization_id, revision, _token_id = (await server.feed_access.check(org, token)).unwrap()
    document = server.feed.get(org, revision)
    if document is None:
        document = await server.feed.at_least(org, revision)
    return document


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


def _answer(document: FeedDocument, *, modified: bool) -> Answer:
    headers = {
        "etag": document.etag,
        "cache-control": "no-cache",
        "x-regward-revision": str(document.revision),
    }
    if not modified:
        return 304, headers, b""
    return 200, {**headers, "content-type": "application/json"}, document.body


async def respond(
    server: Server,
    org: str,
    token: str | None,
    wait: float,
    after: int | None,
    if_none_match: str | None,
    disconnected: Callable[[], Coroutine[Any, Any, None]],
) -> Answer:
    """The feed's answer; raises ServiceError (401/404) like every other route. Every answer
    names the key that signs (`X-Regward-Signing-Key`), so agents notice a rotation even
    while the revision stays the same."""
    status, headers, body = await _respond(
        server, org, token, wait, after, if_none_match, disconnected
    )
    return status, {**headers, "x-regward-signing-key": server.public_key}, body


async def _respond(
    server: Server,
    org: str,
    token: str | None,
    wait: float,
    after: int | None,
    if_none_match: str | None,
    disconnected: Callable[[], Coroutine[Any, Any, None]],
) -> Answer:
    document = await _open(server, token, org)
    if after is None:
        if not _matches(if_none_match, document.etag):
            return _answer(document, modified=True)
        after = document.revision
    if document.revision > after:
        return _answer(document, modified=True)
    deadline = time.monotonic() + min(wait, server.settings.max_wait)
    if deadline <= time.monotonic():
        return _answer(document, modified=False)
    # A client that goes away ends its wait at once, so polls of vanished agents cost nothing.
    gone = asyncio.create_task(disconnected(), name="regward-feed-disconnect")
    modified = False
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            latest = await server.notifier.wait(org, after, remaining, cancel=gone)
            if latest is None:
                break
            document = await server.feed.at_least(org, max(latest, after + 1))
            if document.revision > after:
                modified = True
                break
    finally:
        gone.cancel()
    # The token may have been revoked (sign-out, password change) or its user removed from
    # the organization while the request waited: such a wait ends refused, never answered.
    (await server.feed_access.check(org, token)).unwrap()
    return _answer(document, modified=modified)


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
        match = _PATH.fullmatch(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        scope["regward.route"] = "/api/v1/orgs/{org}/policy"  # for the access log
        server: Server = scope["app"].state.server
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scheme, _, token = headers.get("authorization", "").partition(" ")
        try:
            query = parse_qs(scope["query_string"].decode("latin-1"))
            wait = _number(query, "wait", float) or 0.0
            after = _number(query, "after", int)
            status, answer_headers, body = await respond(
                server,
                unquote(match.group(1)),
                token.strip() if scheme.lower() == "bearer" else None,
                wait,
                None if after is None else int(after),
                headers.get("if-none-match"),
                _until_disconnect(receive),
            )
        except ServiceError as error:
            status, body = error.status, json.dumps({"detail": str(error)}).encode()
            answer_headers = {"content-type": "application/json"}
            if status == 401:
                answer_headers["www-authenticate"] = "Bearer"
        except DBAPIError as error:
            scope["app"].state.metrics.database_error(is_unavailable(error))
            if not is_unavailable(error):
                raise  # a bug, not an outage: Starlette's 500 and the log
            status, answer_headers = 503, {"content-type": "application/json"}
            body = json.dumps({"detail": UNAVAILABLE}).encode()
        raw = [(k.encode(), v.encode()) for k, v in answer_headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
