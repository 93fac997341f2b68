"""`create_app(settings)`: the server's FastAPI application.

Nothing happens at import time: the engine, the signing key and the notifier are made here, and
the notifier's background task starts with the application's lifespan.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regward import __version__
from regward.server import dashboard, health, keys, metrics
from regward.server.api import router
from regward.server.api.feed import FeedFastPath
from regward.server.db import UNAVAILABLE, Database, is_unavailable
from regward.server.errors import ServiceError
from regward.server.feed import FeedCache
from regward.server.notify import notifier_for
from regward.server.observe import RequestObserver
from regward.server.runtime import Server
from regward.server.services.limits import SignInLimiter
from regward.server.settings import Settings

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """The application for `settings`; the database schema must be migrated already."""
    database = database or Database(settings.database_url)
    notifier = notifier_for(database)
    notifier.install(database)
    server = Server(
        settings=settings,
        database=database,
        signing_key=keys.load_or_create(settings.signing_key_path),
        notifier=notifier,
        feed=FeedCache(database),
        sign_in_limiter=SignInLimiter(database),
        # Wrong codes typed on the device approval page, counted apart from password failures.
        device_code_limiter=SignInLimiter(database, prefix="device-code:"),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await notifier.start()
        try:
            yield
        finally:
            await notifier.stop()
            database.dispose()

    app = FastAPI(
        title="Regward policy server",
        version=__version__,
        description="Registry Access Management: organizations, settings, Save & Apply, "
        "Activity and the signed policy feed agents follow.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        # Swagger UI and ReDoc load their scripts from a CDN, which many networks cannot reach
        # (nor can these machines); the schema itself is served, for any OpenAPI viewer.
        docs_url=None,
        redoc_url=None,
    )
    app.state.server = server
    app.state.metrics = metrics.ServerMetrics(server, lambda: server.sign_in_limiter.failures)
    app.state.schema_head = health.head_revision()
    app.include_router(router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    _install_error_handlers(app)
    app.add_middleware(FeedFastPath)  # agents' polls skip FastAPI's machinery
    app.add_middleware(InputGuard, limit=settings.max_body_bytes)
    # Outermost: refused requests are logged and counted too.
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    dashboard.install(app)  # the owners' pages at /, assets at /static
    return app


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, error: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse({"detail": str(error)}, status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [_describe(item) for item in error.errors()]
        return JSONResponse(
            {
                "detail": "; ".join(problems),
                "errors": json.loads(json.dumps(error.errors(), default=str)),
            },
            status_code=422,
        )

    @app.exception_handler(IntegrityError)
    async def integrity(_request: Request, error: IntegrityError) -> JSONResponse:
        log.info("integrity error (concurrent change): %s", error.orig)
        return _error(409, "a concurrent change conflicted with this one; reload and try again")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, error: DBAPIError) -> JSONResponse:
        request.app.state.metrics.database_error(is_unavailable(error))
        if is_unavailable(error):
            log.warning("database unavailable: %s", error.orig)
            return _error(503, UNAVAILABLE)
        log.error("database error", exc_info=error)
        return _error(500, "internal error; the server log has the details")


def _describe(item: dict[str, Any]) -> str:
    location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
    value = item.get("input")
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{location or 'body'}: {item.get('msg', 'invalid')} (got {shown})"


# NUL as it can arrive: raw; percent-encoded in a query or form; as the escape `\u0000` in
# JSON (after an even run of backslashes: `\\u0000` is a backslash and the text "u0000").
# PostgreSQL text cannot hold it and no name, address or reference may contain it.
_PERCENT_NUL = re.compile(rb"\x00|%00")
_JSON_NUL = re.compile(rb"\x00|(?<!\\)(?:\\\\)*\\u0000")
_FORM = b"application/x-www-form-urlencoded"


class InputGuard:
    """Refuse request bodies over `limit` bytes (413) and any input carrying a NUL (422).

    A declared Content-Length over the limit is refused up front; otherwise the body is read
    (up to the limit) before the application sees it, checked, and handed over unchanged."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or _PERCENT_NUL.search(scope["query_string"]):
            await _refuse(send, 422, "text must not contain NUL characters")
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        chunked = b"chunked" in headers.get(b"transfer-encoding", b"").lower()
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _refuse(send, 413, f"request body too large; the limit is {self.limit} bytes")
            return
        if not chunked and (length is None or length == b"0"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _refuse(send, 413, f"request body too large; the limit is {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        # A form percent-encodes; anything else may be read as JSON (FastAPI reads a body
        # without a content type as JSON too).
        form = headers.get(b"content-type", b"").lower().startswith(_FORM)
        if (_PERCENT_NUL if form else _JSON_NUL).search(body):
            await _refuse(send, 422, "text must not contain NUL characters")
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, detail: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": json.dumps({"detail": detail}).encode()})
