"""The Activity log: audit events named like Docker's, with actor, time, before and after.

Actions recorded (Docker's names where Docker has one):

    registry_access.enabled / .disabled            the toggle, as applied
    registry_access.registry_added / _updated / _removed   an entry, as applied
    registry_access.applied                        a Save & Apply (data: revision)
    organization.created
    organization.member_added / .member_removed / .member_role_changed
    organization.member_password_reset             an owner gave a member a one-time password
    device.sign_in_approved / .sign_in_denied      `regward login` on a machine (data: machine)
    device.token_revoked                           an owner stopped a machine's sync
    device.removed_stale                           an owner removed devices not seen for long
                                                   (data: days, count, agent_ids)
    sso.signed_in                                  a member signed in through the provider
    sso.settings_changed                           join rules or "SSO required" (before, after)
    sso.break_glass_sign_in                        an owner's password sign-in, SSO required
    webhook.created / .deleted                     an owner added or removed a webhook (url)
    (joins and role changes through SSO are organization.member_added / _role_changed by
    the actor `sso`, with data.via "sso")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regward.server.models import ActivityEvent, Organization
from regward.server.services.names import check_page

DESCRIPTIONS = {
    "registry_access.enabled": "Registry Access Management enabled",
    "registry_access.disabled": "Registry Access Management disabled",
    "registry_access.registry_added": "Registry Access Management registry added",
    "registry_access.registry_updated": "Registry Access Management registry updated",
    "registry_access.registry_removed": "Registry Access Management registry removed",
    "registry_access.applied": "Registry Access Management settings applied",
    "organization.created": "Organization created",
    "organization.member_added": "Member added",
    "organization.member_removed": "Member removed",
    "organization.member_role_changed": "Member role changed",
    "organization.member_password_reset": "Member's password reset",
    "device.sign_in_approved": "Machine sign-in approved",
    "device.sign_in_denied": "Machine sign-in denied",
    "device.token_revoked": "Machine's device token revoked",
    "device.removed_stale": "Devices not seen for long removed",
    "sso.signed_in": "Signed in with SSO",
    "sso.settings_changed": "Single sign-on settings changed",
    "sso.break_glass_sign_in": "Owner signed in with a password although SSO is required",
    "webhook.created": "Webhook added",
    "webhook.deleted": "Webhook deleted",
}
MAX_PAGE_SIZE = 100


def record(
    session: Session, organization: Organization, action: str, actor: str, **data: Any
) -> ActivityEvent:
    """Add one event to the current transaction."""
    item = ActivityEvent(organization_id=organization.id, action=action, actor=actor, data=data)
    session.add(item)
    return item


def describe(action: str) -> str:
    return DESCRIPTIONS.get(action, action)


@dataclass(frozen=True)
class Page:
    items: Sequence[ActivityEvent]
    total: int
    page: int
    page_size: int


def list(  # shadows the builtin on purpose: callers write activity.list(...)
    session: Session,
    organization: Organization,
    *,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: int = 1,
    page_size: int = 25,
) -> Page:
    """Events newest first, filtered by exact action (or `registry_access.*` style prefix),
    actor and time range [since, until), one page at a time (pages count from 1)."""
    page, page_size = check_page(page, page_size, MAX_PAGE_SIZE)
    query = select(ActivityEvent).where(ActivityEvent.organization_id == organization.id)
    if action:
        if action.endswith(".*"):
            query = query.where(ActivityEvent.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(ActivityEvent.action == action)
    if actor:
        query = query.where(ActivityEvent.actor == actor)
    if since is not None:
        query = query.where(ActivityEvent.created_at >= since)
    if until is not None:
        query = query.where(ActivityEvent.created_at < until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(ActivityEvent.id.desc()).limit(page_size).offset((page - 1) * page_size)
    ).all()
    return Page(items=items, total=total, page=page, page_size=page_size)
