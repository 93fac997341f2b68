"""Figures counted in the database, a few grouped queries however many devices and denials
there are: one organization's for its Overview page, every organization's for the metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from regward.server.models import Denial, Device, Organization, Revision, utcnow
from regward.server.services.devices import (
    STALE_AFTER,
    STATES,
    Engine,
    current_revision,
    state_column,
    state_of,
)

DAYS = 30
TOP_REGISTRIES = 10


@dataclass(frozen=True)
class Overview:
    """One organization's fleet: devices by state and by revision, denials by day and by
    registry over the last `DAYS` days (UTC), today included."""

    current_revision: int
    devices: int
    states: dict[str, int]  # every one of STATES, in that order
    stale: int  # devices not seen for STALE_AFTER (whatever their state)
    revisions: list[tuple[int, int]]  # (revision, devices), newest revision first
    days: list[tuple[date, int]]  # (day, denials), oldest first, DAYS of them
    registries: list[tuple[str, int]]  # (host, denials), most first, at most TOP_REGISTRIES
    since: datetime  # the start of the first day
    until: datetime  # the end of today

    @property
    def denials(self) -> int:
        return sum(count for _, count in self.days)


def _day(column: InstrumentedAttribute[datetime], dialect: str) -> ColumnElement[str]:
    """The UTC day of a timestamp as `YYYY-MM-DD` text. SQLite keeps UTC timestamps as text;
    PostgreSQL's are converted from the session's time zone to UTC first."""
    if dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column)


def device_states(session: Session, organization: Organization, revision: int) -> dict[str, int]:
    """How many devices are in each of STATES (all of them, in that order), when `revision`
    is the current one."""
    state = state_column(revision)
    states = dict.fromkeys(STATES, 0)
    for name, count in session.execute(
        select(state, func.count()).where(Device.organization_id == organization.id).group_by(state)
    ):
        states[name] = count
    return states


def of(session: Session, organization: Organization, now: datetime | None = None) -> Overview:
    """The Overview of `organization` as of `now`."""
    now = now or utcnow()
    revision = current_revision(session, organization)
    states = device_states(session, organization, revision)
    org_devices = Device.organization_id == organization.id
    stale = session.scalar(
        select(func.count()).where(org_devices, Device.last_seen < now - STALE_AFTER)
    )
    revisions = session.execute(
        select(Device.applied_revision, func.count())
        .where(org_devices)
        .group_by(Device.applied_revision)
        .order_by(Device.applied_revision.desc())
    ).all()
    today = now.astimezone(UTC).date()
    first = today - timedelta(days=DAYS - 1)
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(today + timedelta(days=1), time(), UTC)
    window = (
        Denial.organization_id == organization.id,
        Denial.occurred_at >= since,
        Denial.occurred_at < until,
    )
    day = _day(Denial.occurred_at, session.get_bind().dialect.name)
    by_day = dict(session.execute(select(day, func.count()).where(*window).group_by(day)).all())
    tally = func.count().label("denials")
    registries = session.execute(
        select(Denial.registry_host, tally)
        .where(*window, Denial.registry_host != "")
        .group_by(Denial.registry_host)
        .order_by(tally.desc(), Denial.registry_host)
        .limit(TOP_REGISTRIES)
    ).all()
    days = [first + timedelta(days=n) for n in range(DAYS)]
    return Overview(
        current_revision=revision,
        devices=sum(states.values()),
        states=states,
        stale=stale or 0,
        revisions=[(number, devices) for number, devices in revisions],
        days=[(d, by_day.get(d.isoformat(), 0)) for d in days],
        registries=[(host, denials) for host, denials in registries],
        since=since,
        until=until,
    )


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
