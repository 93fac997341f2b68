"""Organizations, members, Activity, devices and denials."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from regward.policy.schema import VISIBLE_TEXT
from regward.server.api.deps import (
    CallerDep,
    MemberDep,
    OwnerDep,
    OwnerWriteDep,
    ReportDep,
    ServerDep,
)
from regward.server.errors import PermissionDenied
from regward.server.models import MAX_REVISION, Membership, Role, Token
from regward.server.runtime import WriteTurnDep
from regward.server.services import activity, auth, denials, devices, names, orgs

router = APIRouter()
PageQuery = Annotated[int, Query(ge=1, le=names.MAX_PAGE, description="pages count from 1")]


def TimeQuery(name: str, what: str) -> Any:
    """A time filter: ISO 8601 with a time zone (the server refuses one without)."""
    return Query(
        alias=name,
        description=f"{what}: ISO 8601 with a time zone, e.g. 2026-01-31T09:30:00Z",
        json_schema_extra={"format": "date-time"},
    )


class NewOrganization(BaseModel):
    name: str = Field(max_length=200, json_schema_extra=names.NAME_SCHEMA)


class NewMember(BaseModel):
    username: str = Field(max_length=200, json_schema_extra=names.NAME_SCHEMA)
    role: Role = Role.MEMBER


class RoleChange(BaseModel):
    role: Role


class EngineReport(BaseModel):
    """Whether dockerd uses the agent's AuthZ plugin and egress proxy (null: proxy off)."""

    model_config = ConfigDict(extra="forbid")
    authz: StrictBool
    proxy: StrictBool | None


class CheckIn(BaseModel):
    agent_id: str = Field(
        max_length=devices.MAX_ID_LENGTH, json_schema_extra={"minLength": 1, **VISIBLE_TEXT}
    )
    revision: int = Field(ge=0, le=MAX_REVISION)
    hostname: str | None = Field(
        default=None, max_length=devices.MAX_HOSTNAME_LENGTH, json_schema_extra=VISIBLE_TEXT
    )
    refusal: str | None = Field(default=None, max_length=devices.MAX_REFUSAL_LENGTH)
    # null or absent (an older agent): nobody knows whether the engine is protected
    engine: EngineReport | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _member(membership: Membership) -> dict[str, Any]:
    return {
        "username": membership.user.username,
        "role": membership.role,
        "since": _iso(membership.created_at),
    }


@router.get("/orgs", summary="The caller's organizations")
def list_orgs(caller: CallerDep, server: ServerDep) -> dict[str, Any]:
    with server.database.session() as session:
        rows = orgs.list_for_caller(session, caller)
    return {"organizations": [{"name": org.name, "role": role} for org, role in rows]}


@router.post("/orgs", status_code=201, summary="Create an organization; the caller owns it")
def create_org(
    body: NewOrganization, caller: CallerDep, server: ServerDep, _turn: WriteTurnDep
) -> dict[str, Any]:
    auth.require_write(caller)
    with server.database.session(write=True) as session:
        org = orgs.create(session, body.name, caller.user, server.signing_key)
        return {"name": org.name, "role": Role.OWNER}


@router.get("/orgs/{org}", summary="One organization and the caller's role in it")
def get_org(member: MemberDep) -> dict[str, Any]:
    organization = member.organization
    return {
        "name": organization.name,
        "role": orgs.role_of(member.session, member.caller.user, organization),
        "created_at": _iso(organization.created_at),
    }


@router.get("/orgs/{org}/members", summary="Members and their roles")
def list_members(member: MemberDep) -> dict[str, Any]:
    members = orgs.list_members(member.session, member.organization)
    return {"members": [_member(m) for m in members]}


@router.post(
    "/orgs/{org}/members",
    status_code=201,
    summary="Add a member; an unknown username gets an account and a one-time password",
)
def add_member(body: NewMember, owner: OwnerWriteDep) -> dict[str, Any]:
    membership, password = orgs.add_member(
        owner.session, owner.organization, owner.caller.user, body.username, body.role
    )
    answer = _member(membership)
    if password is not None:
        answer["password"] = password
    return answer


UsernamePath = Annotated[str, Path(json_schema_extra=names.NAME_SCHEMA)]


@router.put("/orgs/{org}/members/{username}", summary="Change a member's role")
def set_role(username: UsernamePath, body: RoleChange, owner: OwnerWriteDep) -> dict[str, Any]:
    membership = orgs.set_role(
        owner.session, owner.organization, owner.caller.user, username, body.role
    )
    return _member(membership)


@router.delete("/orgs/{org}/members/{username}", status_code=204, summary="Remove a member")
def remove_member(username: UsernamePath, owner: OwnerWriteDep) -> None:
    orgs.remove_member(owner.session, owner.organization, owner.caller.user, username)


@router.get("/orgs/{org}/activity", summary="Activity: who changed what, when, before and after")
def list_activity(
    owner: OwnerDep,
    action: str | None = None,
    actor: str | None = None,
    since: Annotated[str | None, TimeQuery("from", "events at or after this time")] = None,
    until: Annotated[str | None, TimeQuery("to", "events before this time")] = None,
    page: PageQuery = 1,
    page_size: Annotated[int, Query(ge=1, le=activity.MAX_PAGE_SIZE)] = 25,
) -> dict[str, Any]:
    start = None if since is None else names.check_time(since, "from")
    end = None if until is None else names.check_time(until, "to")
    result = activity.list(
        owner.session,
        owner.organization,
        action=action,
        actor=actor,
        since=start,
        until=end,
        page=page,
        page_size=page_size,
    )
    return {
        "total": result.total,
        "page": result.page,
        "page_size": result.page_size,
        "logs": [
            {
                "id": event.id,
                "account": owner.organization.name,
                "action": event.action,
                "action_description": activity.describe(event.action),
                "actor": event.actor,
                "data": event.data,
                "timestamp": _iso(event.created_at),
            }
            for event in result.items
        ],
    }


@router.post(
    "/orgs/{org}/devices/check-in",
    summary="An agent reports the revision it enforces, the one it refused last and whether "
    "the Docker Engine uses it",
)
def check_in(body: CheckIn, member: ReportDep) -> dict[str, Any]:
    agent_id = member.caller.agent_id
    if agent_id is not None and agent_id != body.agent_id:
        raise PermissionDenied(
            f"agent_id: {body.agent_id!r} is not the machine this device token was "
            "issued to; sign this machine in with `regward login`"
        )
    device = devices.check_in(
        member.session,
        member.organization,
        member.caller.user,
        body.agent_id,
        body.revision,
        body.hostname,
        body.refusal,
        devices.Engine(body.engine.authz, body.engine.proxy) if body.engine else None,
        by_device_token=member.caller.is_device,
    )
    return {
        "agent_id": device.agent_id,
        "applied_revision": device.applied_revision,
        "current_revision": devices.current_revision(member.session, member.organization),
    }


def FilterQuery(what: str, **schema: Any) -> Any:
    """A list's filter; `schema` what the server takes (surrounding blanks are ignored)."""
    return Query(description=f"{what}; empty or absent matches all", json_schema_extra=schema)


# A filter's revision: digits, as `names.revision_text` takes them (ten digits may pass the
# largest revision, so the schema says nine).
_REVISION_FILTER = {"pattern": "^[0-9]{0,9}$"}


@router.get(
    "/orgs/{org}/devices",
    summary="Devices, the revision each enforces, last seen; filtered and paged",
)
def list_devices(
    owner: OwnerDep,
    state: Annotated[
        str, FilterQuery("current, outdated, refused or unprotected", enum=["", *devices.STATES])
    ] = "",
    revision: Annotated[str, FilterQuery("the applied revision, e.g. 7", **_REVISION_FILTER)] = "",
    user: Annotated[str, FilterQuery("the username the device belongs to", maxLength=64)] = "",
    seen: Annotated[
        str,
        FilterQuery(
            "recent (seen within 7 days) or stale (not seen for 7 days)",
            enum=["", *devices.SEEN],
        ),
    ] = "",
    search: Annotated[
        str, FilterQuery("part of the hostname or agent id, any case", maxLength=255)
    ] = "",
    page: PageQuery = 1,
    page_size: Annotated[int, Query(ge=1, le=devices.MAX_PAGE_SIZE)] = 100,
) -> dict[str, Any]:
    where = devices.DeviceFilter.parse(
        state=state, revision=revision, user=user, seen=seen, search=search
    )
    result = devices.list(owner.session, owner.organization, where, page=page, page_size=page_size)
    return {
        "total": result.total,
        "page": result.page,
        "page_size": result.page_size,
        "current_revision": result.current_revision,
        "devices": [
            {
                "agent_id": status.device.agent_id,
                "hostname": status.device.hostname,
                "user": status.device.user.username if status.device.user else None,
                "applied_revision": status.device.applied_revision,
                "current_revision": status.current_revision,
                "up_to_date": status.up_to_date,
                "state": status.state,
                "refusal": status.device.refusal,
                "engine": status.engine.to_dict() if status.engine else None,
                "token": _device_token(status.token),
                "first_seen": _iso(status.device.first_seen),
                "last_seen": _iso(status.device.last_seen),
            }
            for status in result.items
        ],
    }


def _device_token(token: Token | None) -> dict[str, Any] | None:
    if token is None:
        return None
    return {"id": token.id, "name": token.name, "active": token.revoked_at is None}


@router.delete(
    "/orgs/{org}/devices/{agent_id}/token",
    status_code=204,
    summary="Revoke a machine's device token: its sync stops, its last verified policy stays",
)
def revoke_device_token(
    agent_id: Annotated[str, Path(max_length=devices.MAX_ID_LENGTH)], owner: OwnerWriteDep
) -> None:
    devices.revoke_token(owner.session, owner.organization, owner.caller.user, agent_id)


DenialsBody = Annotated[dict[str, Any], Body(json_schema_extra=denials.REPORT_SCHEMA)]


@router.post("/orgs/{org}/denials", status_code=201, summary="An agent reports refused pulls")
def report_denials(body: DenialsBody, member: ReportDep) -> dict[str, int]:
    items = body["denials"] if isinstance(body.get("denials"), list) else [body]
    stored = denials.report(member.session, member.organization, member.caller.user, items)
    return {"stored": stored}


@router.get(
    "/orgs/{org}/denials", summary="Pulls and pushes that agents refused; filtered and paged"
)
def list_denials(
    owner: OwnerDep,
    registry: Annotated[str, FilterQuery("the registry host, e.g. ghcr.io", maxLength=300)] = "",
    user: Annotated[str, FilterQuery("the username whose machine refused it", maxLength=64)] = "",
    device: Annotated[str, FilterQuery("the agent id of the machine", maxLength=128)] = "",
    action: Annotated[str, FilterQuery("pull or push", enum=["", "pull", "push"])] = "",
    revision: Annotated[
        str, FilterQuery("the revision that refused it, e.g. 7", **_REVISION_FILTER)
    ] = "",
    since: Annotated[str, TimeQuery("from", "refused at or after this time")] = "",
    until: Annotated[str, TimeQuery("to", "refused before this time")] = "",
    page: PageQuery = 1,
    page_size: Annotated[int, Query(ge=1, le=denials.MAX_PAGE_SIZE)] = 25,
) -> dict[str, Any]:
    where = denials.DenialFilter.parse(
        registry=registry,
        user=user,
        device=device,
        action=action,
        revision=revision,
        since=since,
        until=until,
    )
    result = denials.list(owner.session, owner.organization, where, page=page, page_size=page_size)
    return {
        "total": result.total,
        "page": result.page,
        "page_size": result.page_size,
        "denials": [
            {
                "id": d.id,
                "reference": d.reference,
                "registry": d.registry_host,
                "action": d.action,
                "revision": d.revision,
                "reason": d.reason,
                "agent_id": d.agent_id,
                "user": d.user.username if d.user else None,
                "occurred_at": _iso(d.occurred_at),
            }
            for d in result.items
        ],
    }
