"""The REST API under /api/v1; each module is one area of the product."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from regward.server.api import (
    accounts,
    device,
    feed,
    organizations,
    registry_access,
    sso,
    webhooks,
)


class ErrorBody(BaseModel):
    """Every error: one line naming the bad value and what to do."""

    detail: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "no, unknown, expired or revoked token"),
        (403, "a member, or a read-only token, asking for an owner's write"),
        (404, "not found; also an organization the caller does not belong to"),
        (409, "a stale draft version, a name taken, the last owner leaving"),
        (413, "request body over 1 MiB"),
        (422, "a bad field value; `detail` names the field and the value"),
        (503, "the database is unavailable; retry"),
    )
}
router = APIRouter(prefix="/api/v1", responses=_ERRORS)
router.include_router(accounts.router, tags=["accounts"])
router.include_router(device.router, tags=["device sign-in"])
router.include_router(organizations.router, tags=["organizations"])
router.include_router(registry_access.router, tags=["registry access"])
router.include_router(feed.router, tags=["policy feed"])
router.include_router(sso.router, tags=["single sign-on"])
router.include_router(webhooks.router, tags=["webhooks"])


@router.get("/health", tags=["accounts"], summary="Liveness: the process answers")
def health() -> dict[str, str]:
    return {"status": "ok"}
