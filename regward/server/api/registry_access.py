"""The Registry Access draft, Save & Apply, and the policy feed (with long-poll)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from regward.policy import policy_file_text
from regward.policy.files import Format
from regward.policy.schema import ADDRESS, REPOSITORY_PATTERN, entry_schema
from regward.server.api.deps import MemberDep, OwnerWriteDep, ServerDep
from regward.server.feed import FeedDocument
from regward.server.models import MAX_REVISION
from regward.server.services import policy_files, registry_access

router = APIRouter()


Version = Annotated[StrictInt, Field(ge=1, le=MAX_REVISION)]


ENTRY = entry_schema()


class DraftBody(BaseModel):
    enabled: StrictBool
    registries: list[Any] = Field(
        max_length=registry_access.MAX_ENTRIES, json_schema_extra={"items": ENTRY}
    )
    version: Version = Field(description="the version this edit is based on; stale gets 409")


class EnabledBody(BaseModel):
    enabled: StrictBool
    version: Version | None = None


def _entry_body_schema(schema: dict[str, Any]) -> None:
    version = schema["properties"]["version"]
    wrapped = {
        "type": "object",
        "required": ["entry"],
        "properties": {"entry": ENTRY, "version": version},
        "additionalProperties": False,
    }
    bare = {**ENTRY, "properties": {**ENTRY["properties"], "version": version}}
    schema.clear()
    schema.update(anyOf=[wrapped, bare], title="EntryBody")


class EntryBody(BaseModel):
    """One entry, either wrapped (`{"entry": {...}, "version": 3}`) or bare (`{"address": ...}`)."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_entry_body_schema)
    entry: dict[str, Any] | None = None
    version: Version | None = None

    def entry_dict(self) -> dict[str, Any]:
        if self.entry is not None:
            return self.entry
        return dict(self.model_extra or {})


class ApplyBody(BaseModel):
    version: Version | None = None


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
def get_draft(member: MemberDep) -> dict[str, Any]:
    return registry_access.get_draft(member.session, member.organization).to_dict()


@router.put(
    "/orgs/{org}/registry-access",
    response_model=DraftOut,
    summary="Replace the draft (toggle and entries)",
)
def replace_draft(body: DraftBody, owner: OwnerWriteDep) -> dict[str, Any]:
    return registry_access.replace_draft(
        owner.session,
        owner.organization,
        owner.caller.user,
        enabled=body.enabled,
        registries=body.registries,
        version=body.version,
    ).to_dict()


@router.put(
    "/orgs/{org}/registry-access/enabled",
    response_model=DraftOut,
    summary="Turn Registry Access on or off",
)
def set_enabled(body: EnabledBody, owner: OwnerWriteDep) -> dict[str, Any]:
    return registry_access.set_enabled(
        owner.session, owner.organization, owner.caller.user, body.enabled, body.version
    ).to_dict()


@router.post(
    "/orgs/{org}/registry-access/registries",
    status_code=201,
    response_model=DraftOut,
    summary="Add a registry entry",
)
def add_entry(body: EntryBody, owner: OwnerWriteDep) -> dict[str, Any]:
    return registry_access.add_entry(
        owner.session, owner.organization, owner.caller.user, body.entry_dict(), body.version
    ).to_dict()


# A query value the server reads whole: a request line past about 64 KiB never reaches the app
# (the HTTP parser answers a plain-text 400), so a longer value could not get its JSON 422.
MAX_QUERY_TEXT = 8192
_REPOSITORY_LIST = f"^(?:{REPOSITORY_PATTERN.strip('^$')}(?:,{REPOSITORY_PATTERN.strip('^$')})*)?$"
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
        max_length=MAX_QUERY_TEXT,
        json_schema_extra={"pattern": _REPOSITORY_LIST},
    ),
]
AddressPath = Annotated[str, Path(json_schema_extra=ADDRESS)]


@router.put(
    "/orgs/{org}/registry-access/registries/{address}",
    response_model=DraftOut,
    summary="Edit a registry entry",
)
def update_entry(
    address: AddressPath,
    body: EntryBody,
    owner: OwnerWriteDep,
    repositories: RepositoriesQuery = None,
) -> dict[str, Any]:
    return registry_access.update_entry(
        owner.session,
        owner.organization,
        owner.caller.user,
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
    address: AddressPath,
    owner: OwnerWriteDep,
    version: Annotated[int | None, Query(ge=1, le=MAX_REVISION)] = None,
    repositories: RepositoriesQuery = None,
) -> dict[str, Any]:
    return registry_access.remove_entry(
        owner.session,
        owner.organization,
        owner.caller.user,
        address,
        version,
        repositories=registry_access.parse_repositories(repositories),
    ).to_dict()


@router.post(
    "/orgs/{org}/registry-access/apply",
    response_model=AppliedOut,
    summary="Save & Apply: publish the draft as the next signed revision",
)
def apply(owner: OwnerWriteDep, server: ServerDep, body: ApplyBody | None = None) -> dict[str, Any]:
    applied = registry_access.apply(
        owner.session,
        owner.organization,
        owner.caller.user,
        server.signing_key,
        body.version if body else None,
    )
    # Once committed, this process's long-polls answer from the cache without reading it back.
    document = FeedDocument(owner.organization.name, applied.revision, applied.signed_json.encode())
    owner.after_commit(lambda: server.feed.remember(document))
    return {
        "revision": applied.revision,
        "created_at": applied.created_at.isoformat(),
        "changes": [change.to_dict() for change in applied.changes],
    }


async def _raw_body(request: Request) -> bytes:
    return await request.body()


FormatQuery = Annotated[Format, Query(alias="format", description="`yaml` (default) or `json`")]
MEDIA_TYPES = {"yaml": "application/yaml", "json": "application/json"}


@router.get(
    "/orgs/{org}/registry-access/file",
    summary="The draft, or an applied revision, as a policy file",
    response_class=Response,
    responses={200: {"content": {"application/yaml": {}, "application/json": {}}}},
)
def export_file(
    member: MemberDep,
    kind: FormatQuery = "yaml",
    revision: Annotated[int | None, Query(ge=1, le=MAX_REVISION)] = None,
) -> Response:
    """The file `regward check --policy` and `agent run --policy` read; without `revision`, the
    draft (with no revision number: it is not published)."""
    policy = policy_files.export(member.session, member.organization, revision)
    name = policy_files.file_name(member.organization.name, revision, kind)
    return Response(
        policy_file_text(policy, kind),
        media_type=MEDIA_TYPES[kind],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.put(
    "/orgs/{org}/registry-access/file",
    response_model=DraftOut,
    summary="Import a policy file into the draft (pending until Save & Apply)",
    openapi_extra={"requestBody": {"content": {"application/yaml": {}, "application/json": {}}}},
)
def import_file(
    owner: OwnerWriteDep,
    data: Annotated[bytes, Depends(_raw_body)],
    kind: FormatQuery = "yaml",
    version: Annotated[int | None, Query(ge=1, le=MAX_REVISION)] = None,
) -> dict[str, Any]:
    """The body is the file. Its toggle and entries replace the draft's; a file with problems
    gets 422 naming each one with its line, and changes nothing."""
    return policy_files.import_file(
        owner.session,
        owner.organization,
        owner.caller.user,
        data,
        f"import.{kind}",
        version,
    ).to_dict()
