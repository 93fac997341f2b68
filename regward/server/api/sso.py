"""An organization's single sign-on settings: `GET|PUT /api/v1/orgs/{org}/sso`.

{"join": [{"email_domain": "example.com", "role": "member"},
          {"groups_claim": "platform-team", "role": "owner"}],
 "required": false}
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from regward.server.api.deps import CallerDep, ServerDep
from regward.server.models import Role
from regward.server.services import orgs, sso

router = APIRouter()


class SsoBody(BaseModel):
    join: list[dict[str, Any]] = Field(default_factory=list, max_length=sso.MAX_RULES)
    required: bool = False


@router.get("/orgs/{org}/sso", summary="Single sign-on: join rules and whether SSO is required")
def get_sso(org: str, caller: CallerDep, server: ServerDep) -> dict[str, object]:
    with server.database.session() as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER)
        return sso.get(session, organization).to_dict()


@router.put("/orgs/{org}/sso", summary="Set the join rules and whether SSO is required")
def put_sso(org: str, body: SsoBody, caller: CallerDep, server: ServerDep) -> dict[str, object]:
    with server.database.session(write=True) as session:
        organization = orgs.access(session, caller, org, role=Role.OWNER, write=True)
        return sso.put(session, organization, caller.user, body.join, body.required).to_dict()
