"""The Registry Access draft, Save & Apply, and the policy feed (with long-poll)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from regward.server.api.deps import CallerDep, ServerDep
from regward.server.feed import FeedDocument
from regward.server.models import Role
from regward.server.services import orgs, registry_access

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


class ChangeOut(BaseModel):
    action: str = Field(examples=["registry_access.registry_added"])
    address: str | None = Field(examples=["ghcr.io"])
    repositories: list[str] = Field(
        default_factory=list,
        examples=[["acme/*"]],
        description="the entry's repository patterns (with `address`, the entry's key)",
    )
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    edited_by: str | None = Field(
        default=None, description="the owner who made this change in the draft, where known"
    )


class DraftOut(BaseModel):
    """The draft: `enabled` and `registries` exactly as in the policy file, and `version`."""

    organization: str
    enabled: bool
    registries: list[dict[str, Any]] = Field(
        examples=[[{"address": "docker.io", "nickname": "Docker Hub", "allowed": True}]]
    )
    version: int
    updated_at: datetime
    updated_by: str | None
    applied_revision: int
    pending_changes: list[ChangeOut]


class AppliedOut(BaseModel):
    revision: int
    created_at: datetime
    changes: list[ChangeOut]


@router.get(
    "/orgs/{org}/registry-access",
    response_model=DraftOut,
    summary="The draft settings and pending changes",
)
def get_draft(org: str, caller: CallerDep, server: ServerDep) -> dict[str, Any]:
    with server.database.session() as session:
        organization = orgs.access(session, caller, org)
        return registry_access.get_draft(session, organization).to_dict()


@router.put(
    "/orgs/{org}/registry-access",
    response_model=DraftOut,
    summary="Replace the draft (toggle and entries)",
)
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


@router.put(
    "/orgs/{org}/registry-access/enabled",
    response_model=DraftOut,
    summary="Turn Registry Access on or off",
)
def set_enabled(
    org: str, body: EnabledBody, caller: CallerDep, server: ServerDep
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.set_enabled(
            session, organization, caller.user, body.enabled, body.version
        ).to_dict()


@router.post(
    "/orgs/{org}/registry-access/registries",
    status_code=201,
    response_model=DraftOut,
    summary="Add a registry entry",
)
def add_entry(org: str, body: EntryBody, caller: CallerDep, server: ServerDep) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.add_entry(
            session, organization, caller.user, body.entry_dict(), body.version
        ).to_dict()


RepositoriesQuery = Annotated[
    str | None,
    Query(
        description=(
            "Which entry of `address`, when it has several that differ in repositories: the "
            "entry's repository patterns, comma-separated, in any order (`acme/*,acme/tools`); "
            "an empty value (`repositories=`) is the entry without repositories (every "
            "repository). Without it, an address with several entries gets 409 naming them."
        ),
        examples=["acme/*"],
        max_length=100_000,
    ),
]


@router.put(
    "/orgs/{org}/registry-access/registries/{address}",
    response_model=DraftOut,
    summary="Edit a registry entry",
)
def update_entry(
    org: str,
    address: str,
    body: EntryBody,
    caller: CallerDep,
    server: ServerDep,
    repositories: RepositoriesQuery = None,
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.update_entry(
            session,
            organization,
            caller.user,
            address,
            body.entry_dict(),
            body.version,
            repositories=registry_access.parse_repositories(repositories),
        ).to_dict()


@router.delete(
    "/orgs/{org}/registry-access/registries/{address}",
    response_model=DraftOut,
    summary="Remove a registry entry",
)
def remove_entry(
    org: str,
    address: str,
    caller: CallerDep,
    server: ServerDep,
    version: Annotated[int | None, Query()] = None,
    repositories: RepositoriesQuery = None,
) -> dict[str, Any]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return registry_access.remove_entry(
            session,
            organization,
            caller.user,
            address,
            version,
            repositories=registry_access.parse_repositories(repositories),
        ).to_dict()


@router.post(
    "/orgs/{org}/registry-access/apply",
    response_model=AppliedOut,
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
    # Committed: this process's long-polls answer from the cache without reading it back.
    server.feed.remember(FeedDocument(org, applied.revision, applied.signed_json.encode()))
    return {
        "revision": applied.revision,
        "created_at": applied.created_at.isoformat(),
        "changes": [change.to_dict() for change in applied.changes],
    }
