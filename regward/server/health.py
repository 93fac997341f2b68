"""Health for load balancers and orchestrators, outside the API's prefix.

    GET /healthz   200 {"status": "ok"}: the process answers (liveness)
    GET /readyz    200 {"status": "ready", "checks": {...}} when the database answers, its
                   schema is at the migration this release ships and the signing key is
                   loaded; otherwise 503 {"status": "not ready", "checks": {...}} with each
                   failed check saying what is wrong and what to do

Neither needs a token and neither says more than an operator's probe needs.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from regward.server.db import MIGRATIONS
from regward.server.runtime import server_of

router = APIRouter(tags=["health"])


def head_revision() -> str:
    """The newest migration this release ships."""
    from alembic.script import ScriptDirectory

    from regward.server.db import alembic_config

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return head


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable, schema current, signing key loaded",
    responses={503: {"description": "not ready; `checks` says which check failed and why"}},
)
def readyz(request: Request) -> JSONResponse:
    server = server_of(request)
    checks: dict[str, str] = {}
    try:
        with server.database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            checks["database"] = "ok"
            checks["schema"] = _schema(connection, request.app.state.schema_head)
    except DBAPIError as error:
        checks["database"] = f"unreachable ({type(error.orig).__name__}); see the server log"
        checks["schema"] = "unknown: the database did not answer"
    checks["signing_key"] = _signing_key(server.signing_key)
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )


def _schema(connection: Connection, wanted: str) -> str:
    try:
        versions = list(connection.scalars(text("SELECT version_num FROM alembic_version")))
    except DBAPIError:
        versions = []
    if versions == [wanted]:
        return "ok"
    found = ", ".join(versions) or "no migration"
    return f"at {found}, this release needs {wanted}: run `regward server db upgrade`"


def _signing_key(key: Ed25519PrivateKey) -> str:
    """The key signs, and its public half (what agents pin) verifies the signature."""
    probe = b"regward readiness"
    try:
        key.public_key().verify(key.sign(probe), probe)
    except InvalidSignature:
        return "the signing key does not verify its own signature; restore it from a backup"
    return "ok"
