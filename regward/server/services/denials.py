"""Denials: pulls and pushes that agents refused, reported for owners to review."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, selectinload

from regward.errors import RegwardError, quote
from regward.policy import Action, ImageReference
from regward.server.errors import InvalidInput
from regward.server.models import MAX_REVISION, Denial, Organization, User, utcnow
from regward.server.services import webhooks
from regward.server.services.names import (
    check_page,
    check_revision,
    check_time,
    filter_text,
    revision_text,
)

MAX_BATCH = 500
MAX_PAGE_SIZE = 100
EXPORT_BATCH = 1000
MAX_REFERENCE_LENGTH = 512
MAX_AGENT_ID_LENGTH = 128
_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["reference", "action"],
    "properties": {
        "reference": {"type": "string", "minLength": 1, "maxLength": MAX_REFERENCE_LENGTH},
        "action": {"type": "string", "enum": [action.value for action in Action]},
        "revision": {"type": "integer", "minimum": 0, "maximum": MAX_REVISION},
        "reason": {"type": "string", "description": "kept to its first 1000 characters"},
        "agent_id": {"type": "string", "maxLength": MAX_AGENT_ID_LENGTH},
        "occurred_at": {"type": "string", "format": "date-time"},
    },
}
REPORT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "required": ["denials"],
            "properties": {
                "denials": {"type": "array", "items": _ITEM_SCHEMA, "maxItems": MAX_BATCH}
            },
        },
        _ITEM_SCHEMA,
    ],
    "description": "one denial, or a batch of them under `denials`",
}
"""How the API's schema describes a report: what `report` and `_parse` check."""


@dataclass(frozen=True)
class Page:
    items: Sequence[Denial]
    total: int
    page: int
    page_size: int


def _parse(item: object, where: str) -> dict[str, object]:
    if not isinstance(item, Mapping):
        raise InvalidInput(f"{where}: expected an object with 'reference' and 'action'")
    reference = item.get("reference")
    if not isinstance(reference, str) or not 0 < len(reference) <= MAX_REFERENCE_LENGTH:
        raise InvalidInput(f"{where}.reference: {reference!r} must be an image reference")
    try:
        registry = ImageReference.parse(reference).registry
    except RegwardError:
        registry = ""  # agents report what they refused, unparseable references included
    action = item.get("action")
    try:
        action = Action(str(action))
    except ValueError:
        raise InvalidInput(f"{where}.action: {action!r} must be 'pull' or 'push'") from None
    revision = check_revision(item.get("revision", 0), f"{where}.revision")
    reason = item.get("reason") or ""
    agent_id = item.get("agent_id") or ""
    if (
        not isinstance(reason, str)
        or not isinstance(agent_id, str)
        or len(agent_id) > MAX_AGENT_ID_LENGTH
    ):
        raise InvalidInput(f"{where}: 'reason' and 'agent_id' must be text")
    occurred_at = item.get("occurred_at")
    when = utcnow() if occurred_at is None else check_time(occurred_at, f"{where}.occurred_at")
    return {
        "reference": reference,
        "registry_host": registry,
        "action": str(action),
        "revision": revision,
        "reason": reason[:1000],
        "agent_id": agent_id,
        "occurred_at": when,
    }


def report(
    session: Session, organization: Organization, user: User, items: Sequence[object]
) -> int:
    """Store a batch of denials (each: reference, action, revision, reason, agent_id,
    occurred_at); returns how many were stored."""
    if len(items) > MAX_BATCH:
        raise InvalidInput(f"denials: {len(items)} in one batch; send at most {MAX_BATCH}")
    rows = [_parse(item, f"denials[{i}]") for i, item in enumerate(items)]
    for row in rows:
        session.add(Denial(organization_id=organization.id, user_id=user.id, **row))
    if rows:
        webhooks.emit(
            session,
            organization,
            "denials.reported",
            user.username,
            {"count": len(rows), "denials": [_public(row) for row in rows]},
        )
    session.flush()
    return len(rows)


def _public(row: Mapping[str, object]) -> dict[str, object]:
    """A parsed denial as webhook receivers get it (times as ISO 8601)."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }


@dataclass(frozen=True)
class DenialFilter:
    """Which denials a list shows; an empty field matches every denial.

    `registry` is a registry host as denials name it (`ghcr.io`, `localhost:5000`), `user` a
    username and `device` an agent id (exactly), `action` pull or push, and the time range
    [since, until) is of when the agent refused it (query parameters `from` and `to`)."""

    registry: str = ""
    user: str = ""
    device: str = ""
    action: str = ""
    revision: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(
        cls,
        *,
        registry: str = "",
        user: str = "",
        device: str = "",
        action: str = "",
        revision: str = "",
        since: str = "",
        until: str = "",
        naive_is_utc: bool = False,
    ) -> DenialFilter:
        """The filter from what a person or script typed; InvalidInput names a bad value. A
        time without a zone is UTC with `naive_is_utc` (the page's fields say so)."""
        action = action.strip()
        if action and action not in ("pull", "push"):
            raise InvalidInput(
                f"{quote(action)} is not an action; use pull or push", field="action", value=action
            )
        start, end = (
            check_time(text.strip(), field, naive_is_utc=naive_is_utc) if text.strip() else None
            for text, field in ((since, "from"), (until, "to"))
        )
        return cls(
            registry=filter_text(registry, "registry", 300).lower(),
            user=filter_text(user, "user", 64),
            device=filter_text(device, "device", 128),
            action=action,
            revision=revision_text(revision, "revision"),
            since=start,
            until=end,
        )

    @property
    def active(self) -> bool:
        return self != DenialFilter()

    def query(self, organization: Organization) -> Select[Denial]:
        """The organization's denials that match, unordered."""
        query = select(Denial).where(Denial.organization_id == organization.id)
        if self.registry:
            query = query.where(Denial.registry_host == self.registry)
        if self.user:
            query = query.where(
                Denial.user_id.in_(select(User.id).where(User.username == self.user))
            )
        if self.device:
            query = query.where(Denial.agent_id == self.device)
        if self.action:
            query = query.where(Denial.action == self.action)
        if self.revision is not None:
            query = query.where(Denial.revision == self.revision)
        if self.since is not None:
            query = query.where(Denial.occurred_at >= self.since)
        if self.until is not None:
            query = query.where(Denial.occurred_at < self.until)
        return query


def list(  # shadows the builtin on purpose: callers write denials.list(...)
    session: Session,
    organization: Organization,
    where: DenialFilter = DenialFilter(),
    *,
    page: int = 1,
    page_size: int = 25,
) -> Page:
    """The denials that match, newest first, one page at a time."""
    page, page_size = check_page(page, page_size, MAX_PAGE_SIZE)
    query = where.query(organization)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.options(selectinload(Denial.user))
        .order_by(Denial.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    return Page(items=items, total=total, page=page, page_size=page_size)


def export(
    session: Session, organization: Organization, where: DenialFilter = DenialFilter()
) -> Iterator[Denial]:
    """Every denial that matches, newest first, read a batch at a time (by id, so rows
    reported meanwhile neither repeat nor shift the batches)."""
    query = where.query(organization).options(selectinload(Denial.user))
    below: int | None = None
    while True:
        batch = query if below is None else query.where(Denial.id < below)
        rows = session.scalars(batch.order_by(Denial.id.desc()).limit(EXPORT_BATCH)).all()
        yield from rows
        if len(rows) < EXPORT_BATCH:
            return
        below = rows[-1].id
