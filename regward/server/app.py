"""`create_app(settings)`: the server's FastAPI application.

Nothing happens at import time: the engine, the signing key and the notifier are made here, and
the notifier's background task starts with the application's lifespan.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from regward import __version__
from regward.server import dashboard, health, keys, metrics
from regward.server.api import router
from regward.server.api.feed import FeedFastPath
from regward.server.db import (
    Database,
    WriteTurn,
    is_disk_full,
    is_unavailable,
    unavailable_reason,
)
from regward.server.errors import ServiceError
from regward.server.feed import FeedAccess, FeedCache
from regward.server.inputs import InputGuard, declare_text, shown
from regward.server.notify import notifier_for
from regward.server.observe import RequestObserver
from regward.server.oidc import OidcClient
from regward.server.runtime import Server
from regward.server.services.limits import SignInLimiter
from regward.server.services.tokens import UsageClock
from regward.server.settings import Settings
from regward.server.webhooks import DeliveryQueue

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, database: Database | None = None) -> FastAPI:
    """The application for `settings`; the database schema must be migrated already."""
    database = database or Database(settings.database_url)
    notifier = notifier_for(database)
    notifier.install(database)
    write_turn = WriteTurn(database)
    deliveries = DeliveryQueue(database, settings, write_turn)
    deliveries.install()
    token_usage = UsageClock(database)
    server = Server(
        settings=settings,
        database=database,
        signing_key=keys.load_or_create(settings.signing_key_path),
        notifier=notifier,
        feed=FeedCache(database),
        feed_access=FeedAccess(database, token_usage),
        sign_in_limiter=SignInLimiter(database),
        # Wrong codes typed on the device approval page, counted apart from password failures.
        device_code_limiter=SignInLimiter(database, prefix="device-code:"),
        token_usage=token_usage,
        webhooks=deliveries,
        write_turn=write_turn,
        key_chain=tuple(keys.load_chain(settings.signing_key_path)),
        oidc=OidcClient(settings.oidc) if settings.oidc else None,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await notifier.start()
        await deliveries.start()
        try:
            yield
        finally:
            await deliveries.stop()
            await notifier.stop()
            if server.oidc is not None:
                server.oidc.close()
            database.dispose()

    app = _App(
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
    # In front of FastAPI's own stack, outermost first: every request is logged and counted
    # (refused ones too), raw input is checked, and agents' polls are answered without
    # FastAPI's per-request layers (each held poll keeps every layer's frame alive).
    app.front = RequestObserver(
        InputGuard(FeedFastPath(app.rest), limit=settings.max_body_bytes),
        metrics=app.state.metrics,
    )
    dashboard.install(app)  # the owners' pages at /, assets at /static
    return app


class _App(FastAPI):
    """FastAPI with Regward's front: `front` serves every HTTP request and hands what it does
    not answer itself to `rest`, FastAPI's whole stack (middleware, error pages, routes)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.front is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        await self.front(scope, receive, send)

    async def rest(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)

    def openapi(self) -> dict[str, Any]:
        """FastAPI's schema, with the text rule every request meets (`inputs.declare_text`)."""
        if self.openapi_schema is None:
            # A copy: FastAPI's schema shares dictionaries with the modules' constants.
            schema = copy.deepcopy(super().openapi())
            declare_text(schema)
            self.openapi_schema = schema
        return self.openapi_schema


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, error: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        body = {"detail": str(error)}
        if error.field:
            body["field"] = error.field  # as data, for clients that place it beside an input
        return JSONResponse(body, status_code=error.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # Only what the client can act on: where, what is wrong, and the value quoted safely
        # (a value may be odd enough that echoing it whole could not be encoded).
        if any(isinstance(item.get("input"), bytes) for item in error.errors()):
            # FastAPI hands a body it did not read as JSON (curl -d sends a form) over as is.
            sent = request.headers.get("content-type") or "none"
            detail = (
                "body: send a JSON object with Content-Type: application/json "
                f"(this request's Content-Type: {shown(sent)})"
            )
            return JSONResponse({"detail": detail}, status_code=422)
        problems = [
            {
                "loc": [str(part) for part in item.get("loc", ())],
                "msg": str(item.get("msg", "invalid")),
                "type": str(item.get("type", "")),
                "input": shown(item.get("input")),
            }
            for item in error.errors()
        ]
        return JSONResponse(
            {"detail": "; ".join(_describe(item) for item in problems), "errors": problems},
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        headers = dict(error.headers or {})
        detail = str(error.detail)
        if error.status_code == 405:
            # Each method of a path is its own route; Starlette's Allow names the first one.
            allowed = _allowed_methods(request)
            headers["Allow"] = ", ".join(allowed)
            detail = f"method {request.method} is not allowed here; use {' or '.join(allowed)}"
        return JSONResponse({"detail": detail}, status_code=error.status_code, headers=headers)

    @app.exception_handler(IntegrityError)
    async def integrity(_request: Request, error: IntegrityError) -> JSONResponse:
        log.info("integrity error (concurrent change): %s", error.orig)
        return _error(409, "a concurrent change conflicted with this one; reload and try again")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, error: DBAPIError) -> JSONResponse:
        request.app.state.metrics.database_error(is_unavailable(error))
        if is_unavailable(error):
            if is_disk_full(error):
                log.error("database disk full: %s", error.orig)
            else:
                log.warning("database unavailable: %s", error.orig)
            return _error(503, unavailable_reason(error))
        log.error("database error", exc_info=error)
        return _error(500, "internal error; the server log has the details")


_SOURCES = {"body", "query", "path", "header", "cookie"}


def _describe(problem: dict[str, Any]) -> str:
    loc = (
        problem["loc"][1:]
        if problem["loc"][:1] and problem["loc"][0] in _SOURCES
        else problem["loc"]
    )
    location = ".".join(loc)
    if problem["type"] == "missing":  # an empty form field arrives as a missing one
        within = "" if problem["input"] == "None" else f" (in {problem['input']})"
        return f"{location or 'body'}: required, and missing or empty{within}"
    return f"{location or 'body'}: {problem['msg']} (got {problem['input']})"


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route answers at the request's path."""
    return [
        method
        for method in _METHODS
        if any(
            route.matches({"type": "http", "path": request.scope["path"], "method": method})[0]
            is Match.FULL
            for route in request.app.router.routes
        )
    ]
