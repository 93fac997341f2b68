"""The Registry Access draft, Save & Apply, and the policy feed (with long-poll)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from regward.server.api.deps import CallerDep, ServerDep
from regward.server.feed import FeedDocument, load
from regward.server.models import Role
from regward.server.runtime import Server
from regward.server.services import auth, orgs, registry_access

router = APIRouter()


class DraftBody(BaseModel):
    enabled: bool
    registries: list[Any] = Field(max_length=registry_access.MAX_ENTRIES)
    version: int = Field(description="the version this edit is based on; stale gets 409")


class EnabledBody(BaseModel):
    enabled: bool
    version: int | None = None


class EntryBody(BaseModel):
    """One entry, either wrapped (`{"entry": {...}, "version": 3}`) or bare (`{"address": ...}`)."""

    model_config = {"extra": "allow"}
    entry: dict[str, Any] | None = None
    version: int | None = None

    def entry_dict(self) -> dict[str, Any]:
        if self.entry is not None:
            return self.entry
        return dict(self.model_extra or {})


class ApplyBody(BaseModel):
    version: int | None = None


@router.get("/orgs/{org}/registry-access", summary="The draft settings and pending changes")
def get_draft(org: str, caller: CallerDep, server: ServerDep) -> dict[str, Any]:
    with server.database.session() as session:
        organization = orgs.access(session, caller, org)
        return registry_access.get_draft(session, organization).to_dict()


@router.put("/orgs/{org}/registry-access", summary="Replace the draft (toggle and entries)")
def replace_draft(
    org: str, body: DraftBody, caller: CallerDep, server: ServerDep
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.replace_draft(
            session,
            organization,
            caller.user,
            enabled=body.enabled,
            registries=body.registries,
            version=body.version,
        ).to_dict()


@router.put("/orgs/{org}/registry-access/enabled", summary="Turn Registry Access on or off")
def set_enabled(
    org: str, body: EnabledBody, caller: CallerDep, server: ServerDep
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.set_enabled(
            session, organization, caller.user, body.enabled, body.version
        ).to_dict()


@router.post(
    "/orgs/{org}/registry-access/registries", status_code=201, summary="Add a registry entry"
)
def add_entry(org: str, body: EntryBody, caller: CallerDep, server: ServerDep) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.add_entry(
            session, organization, caller.user, body.entry_dict(), body.version
        ).to_dict()


@router.put("/orgs/{org}/registry-access/registries/{address}", summary="Edit a registry entry")
def update_entry(
    org: str, address: str, body: EntryBody, caller: CallerDep, server: ServerDep
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.update_entry(
            session, organization, caller.user, address, body.entry_dict(), body.version
        ).to_dict()


@router.delete(
    "/orgs/{org}/registry-access/registries/{address}", summary="Remove a registry entry"
)
def remove_entry(
    org: str,
    address: str,
    caller: CallerDep,
    server: ServerDep,
    version: Annotated[int | None, Query()] = None,
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.remove_entry(
            session, organization, caller.user, address, version
        ).to_dict()


@router.post(
    "/orgs/{org}/registry-access/apply",
    summary="Save & Apply: publish the draft as the next signed revision",
)
def apply(
    org: str, caller: CallerDep, server: ServerDep, body: ApplyBody | None = None
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        applied = registry_access.apply(
            session, organization, caller.user, server.signing_key, body.version if body else None
        )
    return {
        "revision": applied.revision,
        "created_at": applied.created_at.isoformat(),
        "changes": [
            {"action": c.action, "address": c.address, "before": c.before, "after": c.after}
            for c in applied.changes
        ],
    }


# --- the feed ----------------------------------------------------------------------------


def _open_feed(server: Server, caller: auth.Caller, org: str) -> FeedDocument:
    with server.database.session() as session:
        orgs.access(session, caller, org)
    document = load(server.database, org)
    server.feed.remember(document)
    return document


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


def _answer(document: FeedDocument, *, modified: bool) -> Response:
    headers = {
        "ETag": document.etag,
        "Cache-Control": "no-cache",
        "X-Regward-Revision": str(document.revision),
    }
    if not modified:
        return Response(status_code=304, headers=headers)
    return Response(document.body, media_type="application/json", headers=headers)


@router.get(
    "/orgs/{org}/policy",
    summary="The applied policy, signed; long-poll with ?wait=SECONDS&after=REVISION",
    responses={304: {"description": "no newer revision (at once, or when `wait` ran out)"}},
)
async def policy(
    org: str,
    request: Request,
    caller: CallerDep,
    wait: Annotated[float, Query(ge=0, description="seconds to wait for a newer revision")] = 0,
    after: Annotated[int | None, Query(ge=0, description="the revision the client has")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    server: Server = request.app.state.server
    document = await run_in_threadpool(_open_feed, server, caller, org)
    if after is None:
        if not _matches(if_none_match, document.etag):
            return _answer(document, modified=True)
        after = document.revision
    if document.revision > after:
        return _answer(document, modified=True)
    deadline = time.monotonic() + min(wait, server.settings.max_wait)
    while (remaining := deadline - time.monotonic()) > 0:
        latest = await server.notifier.wait(org, after, remaining)
        if latest is None:
            break
        document = await server.feed.at_least(org, max(latest, after + 1))
        if document.revision > after:
            return _answer(document, modified=True)
    return _answer(document, modified=False)
