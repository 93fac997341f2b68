"""`create_app(settings)`: the server's FastAPI application.

Nothing happens at import time: the engine, the signing key and the notifier are made here, and
the notifier's background task starts with the application's lifespan.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from regward import __version__
from regward.server import dashboard, keys
from regward.server.api import router
from regward.server.api.feed import FeedFastPath
from regward.server.db import UNAVAILABLE, Database, is_unavailable
from regward.server.errors import ServiceError
from regward.server.feed import FeedCache
from regward.server.notify import notifier_for
from regward.server.runtime import Server
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
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.server = server
    app.include_router(router)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(FeedFastPath)  # outermost: agents' polls skip the rest
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
    async def database_error(_request: Request, error: DBAPIError) -> JSONResponse:
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


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413.

    A declared Content-Length is checked up front; a chunked body is read (up to the limit)
    before the application sees it, then handed over unchanged."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._refuse(send)
                return
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
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
                await self._refuse(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"detail": f"request body too large; the limit is {self.limit} bytes"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
