"""Figures about every organization at once, for the server's metrics (a few grouped queries,
however many devices and denials there are)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regward.server.models import Denial, Device, Organization, Revision
from regward.server.services.devices import STATES, Engine, state_of


@dataclass
class OrganizationFigures:
    name: str
    revision: int = 0  # the newest applied revision
    applies: int = 0  # Save & Apply count (revisions after the first, made with the org)
    denial_reports: int = 0
    devices: Counter[str] = field(default_factory=Counter)  # by devices.STATES


def organizations(session: Session) -> Sequence[OrganizationFigures]:
    """Every organization's figures, by name."""
    figures = {
        org_id: OrganizationFigures(name)
        for org_id, name in session.execute(select(Organization.id, Organization.name))
    }
    for org_id, newest, count in session.execute(
        select(Revision.organization_id, func.max(Revision.revision), func.count()).group_by(
            Revision.organization_id
        )
    ):
        figures[org_id].revision = newest
        figures[org_id].applies = count - 1
    for org_id, count in session.execute(
        select(Denial.organization_id, func.count()).group_by(Denial.organization_id)
    ):
        figures[org_id].denial_reports = count
    refused = Device.refusal.is_not(None)
    for org_id, applied, was_refused, authz, proxy, count in session.execute(
        select(
            Device.organization_id,
            Device.applied_revision,
            refused,
            Device.engine_authz,
            Device.engine_proxy,
            func.count(),
        ).group_by(
            Device.organization_id,
            Device.applied_revision,
            refused,
            Device.engine_authz,
            Device.engine_proxy,
        )
    ):
        engine = None if authz is None else Engine(authz, proxy)
        org = figures[org_id]
        org.devices[state_of(applied, org.revision, bool(was_refused), engine)] += count
    for org in figures.values():
        for state in STATES:
            org.devices.setdefault(state, 0)
    return sorted(figures.values(), key=lambda org: org.name)
