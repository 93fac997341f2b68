"""The REST API under /api/v1; each module is one area of the product."""

from __future__ import annotations

from fastapi import APIRouter

from regward.server.api import accounts, feed, organizations, registry_access

router = APIRouter(prefix="/api/v1")
router.include_router(accounts.router, tags=["accounts"])
router.include_router(organizations.router, tags=["organizations"])
router.include_router(registry_access.router, tags=["registry access"])
router.include_router(feed.router, tags=["policy feed"])


@router.get("/health", tags=["accounts"], summary="Liveness: the process answers")
def health() -> dict[str, str]:
    return {"status": "ok"}
