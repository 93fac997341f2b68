"""An organization's single sign-on settings: `GET|PUT /api/v1/orgs/{org}/sso`.

{"join": [{"email_domain": "example.com", "role": "member"},
          {"groups_claim": "platform-team", "role": "owner"}],
 "required": false}
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from regward.server.api.deps import OwnerDep, OwnerWriteDep
from regward.server.services import sso

router = APIRouter()


class SsoBody(BaseModel):
    join: list[dict[str, Any]] = Field(
        default_factory=list, max_length=sso.MAX_RULES, json_schema_extra={"items": sso.RULE_SCHEMA}
    )
    required: bool = False


@router.get("/orgs/{org}/sso", summary="Single sign-on: join rules and whether SSO is required")
def get_sso(owner: OwnerDep) -> dict[str, object]:
    return sso.get(owner.session, owner.organization).to_dict()


@router.put("/orgs/{org}/sso", summary="Set the join rules and whether SSO is required")
def put_sso(body: SsoBody, owner: OwnerWriteDep) -> dict[str, object]:
    config = sso.put(owner.session, owner.organization, owner.caller.user, body.join, body.required)
    return config.to_dict()
