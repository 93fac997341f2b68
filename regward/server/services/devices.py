"""Devices: machines running the agent, the revision each enforces, and when it was last seen."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Select, and_, case, false, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, selectinload

from regward.errors import quote
from regward.policy.text import refuse_invisible
from regward.server.errors import Conflict, InvalidInput, NotFound
from regward.server.models import Device, Organization, Token, TokenKind, User, utcnow
from regward.server.services import activity, registry_access, webhooks
from regward.server.services.names import (
    check_page,
    check_revision,
    filter_text,
    revision_text,
)

MAX_ID_LENGTH = 128
MAX_HOSTNAME_LENGTH = 255
MAX_REFUSAL_LENGTH = 500


@dataclass(frozen=True)
class Engine:
    """What an agent found in its machine's Docker Engine: whether dockerd uses the agent's
    AuthZ plugin, and its egress proxy (None when the agent runs without one)."""

    authz: bool
    proxy: bool | None

    @property
    def protected(self) -> bool:
        return self.authz and self.proxy is not False

    @classmethod
    def parse(cls, value: object) -> Engine | None:
        """`{"authz": bool, "proxy": bool | null}` (both keys, nothing else), or None; raise
        InvalidInput naming the field and value otherwise."""
        if value is None or isinstance(value, Engine):
            return value
        if not isinstance(value, dict) or set(value) != {"authz", "proxy"}:
            raise InvalidInput(
                f'engine: {value!r} must be {{"authz": true|false, "proxy": true|false|null}} '
                "or null"
            )
        authz, proxy = value["authz"], value["proxy"]
        if not isinstance(authz, bool):
            raise InvalidInput(f"engine.authz: {authz!r} must be true or false")
        if proxy is not None and not isinstance(proxy, bool):
            raise InvalidInput(f"engine.proxy: {proxy!r} must be true, false or null")
        return cls(authz, proxy)

    def to_dict(self) -> dict[str, bool | None]:
        return {"authz": self.authz, "proxy": self.proxy}


STATES = ("current", "outdated", "refused", "unprotected")
SEEN = ("recent", "stale")
"""Last seen within `STALE_AFTER`, or not for that long."""
STALE_AFTER = timedelta(days=7)
MAX_PAGE_SIZE = 500


def state_of(
    applied_revision: int, current_revision: int, refused: bool, engine: Engine | None
) -> str:
    """One word for a device's compliance, the worst first: `refused` (its agent refused the
    last revision it was sent), `unprotected` (its Docker Engine does not use the agent),
    `outdated` (an older revision than the organization's), else `current`."""
    if refused:
        return "refused"
    if engine is not None and not engine.protected:
        return "unprotected"
    if applied_revision < current_revision:
        return "outdated"
    return "current"


def state_column(current_revision: int) -> ColumnElement[str]:
    """`state_of` in SQL, for counting and filtering devices in the database."""
    unprotected = and_(
        Device.engine_authz.is_not(None),
        or_(Device.engine_authz.is_(False), Device.engine_proxy.is_(False)),
    )
    return case(
        (Device.refusal.is_not(None), "refused"),
        (unprotected, "unprotected"),
        (Device.applied_revision < current_revision, "outdated"),
        else_="current",
    )


@dataclass(frozen=True)
class DeviceFilter:
    """Which devices a list shows; an empty field matches every device.

    `state` is one of STATES, `seen` one of SEEN, `user` a username (exactly), `search` a
    part of the hostname or agent id (any case)."""

    state: str = ""
    revision: int | None = None
    user: str = ""
    seen: str = ""
    search: str = ""

    @classmethod
    def parse(
        cls,
        *,
        state: str = "",
        revision: str = "",
        user: str = "",
        seen: str = "",
        search: str = "",
    ) -> DeviceFilter:
        """The filter from what a person or script typed; InvalidInput names a bad value."""
        state = state.strip()
        if state and state not in STATES:
            raise InvalidInput(
                f"{quote(state)} is not a state; use one of {', '.join(STATES)}",
                field="state",
                value=state,
            )
        seen = seen.strip()
        if seen and seen not in SEEN:
            raise InvalidInput(
                f"{quote(seen)} is not a choice; use recent (seen within 7 days) or stale",
                field="seen",
                value=seen,
            )
        return cls(
            state=state,
            revision=revision_text(revision, "revision"),
            user=filter_text(user, "user", 64),
            seen=seen,
            search=filter_text(search, "search"),
        )

    @property
    def active(self) -> bool:
        return self != DeviceFilter()

    def query(
        self, organization: Organization, current_revision: int, now: datetime
    ) -> Select[Device]:
        """The organization's devices that match, unordered."""
        query = select(Device).where(Device.organization_id == organization.id)
        if self.state:
            query = query.where(state_column(current_revision) == self.state)
        if self.revision is not None:
            query = query.where(Device.applied_revision == self.revision)
        if self.user:
            query = query.where(
                Device.user_id.in_(select(User.id).where(User.username == self.user))
            )
        if self.seen:
            recent = Device.last_seen >= now - STALE_AFTER
            query = query.where(recent if self.seen == "recent" else ~recent)
        if self.search:
            query = query.where(
                or_(
                    Device.hostname.icontains(self.search, autoescape=True),
                    Device.agent_id.icontains(self.search, autoescape=True),
                )
            )
        return query


@dataclass(frozen=True)
class DeviceStatus:
    device: Device
    current_revision: int
    token: Token | None = None
    """The machine's own device token (from `regward login`), newest first; None without."""

    @property
    def up_to_date(self) -> bool:
        return self.device.applied_revision >= self.current_revision

    @property
    def state(self) -> str:
        return state_of(
            self.device.applied_revision,
            self.current_revision,
            self.device.refusal is not None,
            self.engine,
        )

    @property
    def engine(self) -> Engine | None:
        """The Docker Engine as the agent last reported it; None is unknown."""
        if self.device.engine_authz is None:
            return None
        return Engine(self.device.engine_authz, self.device.engine_proxy)


def _text(value: object, field: str, limit: int, *, required: bool) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value) or len(value) > limit:
        raise InvalidInput(f"{field}: {value!r} must be text of 1 to {limit} characters")
    return value


def check_in(
    session: Session,
    organization: Organization,
    user: User,
    agent_id: str,
    revision: int,
    hostname: str | None = None,
    refusal: str | None = None,
    engine: Engine | dict[str, object] | None = None,
    *,
    by_device_token: bool = False,
) -> Device:
    """Record that `agent_id` enforces `revision` now, the revision it refused last, if any,
    and what it found in the machine's Docker Engine (insert or update, safe under races);
    `refusal` None clears the one on record, `engine` None records "unknown".

    A device belongs to the user who first checked it in: another user's check-in for it is
    refused (Conflict) and changes nothing. Once the machine's own device token has checked it
    in (`by_device_token`: the caller's token is bound to this agent id), it belongs to that
    machine: the same user's personal tokens and sign-ins are refused too, so they cannot
    report for a machine (or for one whose device token an owner revoked). A revision newer
    than the newest applied one is refused (InvalidInput): no agent can enforce a revision that
    was never published."""
    agent_id = _text(agent_id, "agent_id", MAX_ID_LENGTH, required=True)
    hostname = _text(hostname, "hostname", MAX_HOSTNAME_LENGTH, required=False)
    for field, shown in (("agent_id", agent_id), ("hostname", hostname)):
        refuse_invisible(
            shown, field, InvalidInput
        )  # a refusal is the agent's message, kept as sent
    refusal = _text(refusal, "refusal", MAX_REFUSAL_LENGTH, required=False) or None
    found = Engine.parse(engine)
    revision = check_revision(revision, "revision")
    newest = current_revision(session, organization)
    if revision > newest:
        raise InvalidInput(
            f"revision: {revision} is newer than the newest applied revision of "
            f"{organization.name!r} ({newest}); report the revision the agent enforces"
        )
    before = session.execute(
        select(Device.user_id, Device.refusal).where(
            Device.organization_id == organization.id, Device.agent_id == agent_id
        )
    ).first()
    now = utcnow()
    values = {
        "organization_id": organization.id,
        "agent_id": agent_id,
        "hostname": hostname,
        "user_id": user.id,
        "by_device_token": by_device_token,
        "applied_revision": revision,
        "refusal": refusal,
        "engine_authz": found.authz if found else None,
        "engine_proxy": found.proxy if found else None,
        "first_seen": now,
        "last_seen": now,
    }
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(Device).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[Device.organization_id, Device.agent_id],
        # someone else's, or the machine's own while this is not its device token: left alone
        where=and_(
            Device.user_id == statement.excluded.user_id,
            or_(Device.by_device_token.is_(false()), statement.excluded.by_device_token),
        ),
        set_={
            "by_device_token": statement.excluded.by_device_token,
            "hostname": statement.excluded.hostname,
            "user_id": statement.excluded.user_id,
            "applied_revision": statement.excluded.applied_revision,
            "refusal": statement.excluded.refusal,
            "engine_authz": statement.excluded.engine_authz,
            "engine_proxy": statement.excluded.engine_proxy,
            "last_seen": statement.excluded.last_seen,
        },
    )
    session.execute(statement)
    device = session.scalar(
        select(Device)
        .where(Device.organization_id == organization.id, Device.agent_id == agent_id)
        .execution_options(populate_existing=True)
    )
    if device is None:  # pragma: no cover - written just above
        raise RuntimeError("device row vanished after its upsert")
    if device.user_id != user.id:
        raise Conflict(
            f"agent_id: {agent_id!r} is another user's device in {organization.name!r}; "
            "each machine checks in with its own agent id ('regward logout' and 'regward login' "
            "give this one a new id)"
        )
    if device.by_device_token and not by_device_token:
        raise Conflict(
            f"agent_id: {agent_id!r} checks in with its own device token; a personal access "
            "token or a sign-in cannot report for it (run 'regward login' on that machine if "
            "its token was revoked)"
        )
    _tell_webhooks(
        session,
        organization,
        user,
        device,
        None if before is None else before[1],
        new=before is None,
    )
    return device


def _tell_webhooks(
    session: Session,
    organization: Organization,
    user: User,
    device: Device,
    previous_refusal: str | None,
    *,
    new: bool,
) -> None:
    """device.registered on a machine's first check-in; device.refused_revision when it
    reports a refusal other than the one on record (each refusal once, not every check-in)."""
    data = {
        "agent_id": device.agent_id,
        "hostname": device.hostname,
        "user": user.username,
        "applied_revision": device.applied_revision,
    }
    if new:
        webhooks.emit(session, organization, "device.registered", user.username, data)
    if device.refusal is not None and device.refusal != previous_refusal:
        webhooks.emit(
            session,
            organization,
            "device.refused_revision",
            user.username,
            {**data, "refusal": device.refusal},
        )


@dataclass(frozen=True)
class Page:
    items: Sequence[DeviceStatus]
    total: int
    page: int
    page_size: int
    current_revision: int


def _statuses(
    session: Session, organization: Organization, rows: Sequence[Device], current_revision: int
) -> Sequence[DeviceStatus]:
    """The rows with their compliance and the machine's own device token (the newest)."""
    own: dict[str | None, Token] = {}
    if rows:
        for token in session.scalars(
            select(Token)
            .where(
                Token.organization_id == organization.id,
                Token.kind == TokenKind.DEVICE,
                Token.agent_id.in_([row.agent_id for row in rows]),
            )
            .order_by(Token.id)
        ):
            own[token.agent_id] = token  # the newest wins
    return [
        DeviceStatus(device=row, current_revision=current_revision, token=own.get(row.agent_id))
        for row in rows
    ]


def current_revision(session: Session, organization: Organization) -> int:
    """The revision devices should enforce: the newest applied one (0 before the first)."""
    applied = registry_access.current(session, organization)
    return applied.revision if applied else 0


def list(  # shadows the builtin on purpose: callers write devices.list(...)
    session: Session,
    organization: Organization,
    where: DeviceFilter = DeviceFilter(),
    *,
    page: int = 1,
    page_size: int = 100,
    now: datetime | None = None,
) -> Page:
    """The devices that match, most recently seen first, one page at a time."""
    page, page_size = check_page(page, page_size, MAX_PAGE_SIZE)
    revision = current_revision(session, organization)
    query = where.query(organization, revision, now or utcnow())
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.options(selectinload(Device.user))
        .order_by(Device.last_seen.desc(), Device.id)
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    return Page(_statuses(session, organization, rows, revision), total, page, page_size, revision)


EXPORT_BATCH = 1000


def export(
    session: Session,
    organization: Organization,
    where: DeviceFilter = DeviceFilter(),
    *,
    now: datetime | None = None,
) -> Iterator[DeviceStatus]:
    """Every device that matches, in the order they first checked in, read a batch at a time
    (by id: a device that checks in meanwhile moves in the list's order, by last seen, and
    would shift the batches, so a row could repeat or go missing)."""
    revision = current_revision(session, organization)
    query = where.query(organization, revision, now or utcnow()).options(selectinload(Device.user))
    after = 0
    while True:
        rows = session.scalars(
            query.where(Device.id > after).order_by(Device.id).limit(EXPORT_BATCH)
        ).all()
        yield from _statuses(session, organization, rows, revision)
        if len(rows) < EXPORT_BATCH:
            return
        after = rows[-1].id


def revoke_token(
    session: Session, organization: Organization, actor: User, agent_id: str
) -> Sequence[Token]:
    """An owner revokes the device tokens of machine `agent_id` (its sync stops at once; the
    machine keeps enforcing its last verified policy). NotFound when it has none active."""
    active = session.scalars(
        select(Token).where(
            Token.organization_id == organization.id,
            Token.kind == TokenKind.DEVICE,
            Token.agent_id == agent_id,
            Token.revoked_at.is_(None),
        )
    ).all()
    if not active:
        raise NotFound(f"device {agent_id!r} has no active device token in {organization.name!r}")
    now = utcnow()
    for token in active:
        token.revoked_at = now
    activity.record(
        session,
        organization,
        "device.token_revoked",
        actor.username,
        agent_id=agent_id,
        machine=active[-1].name,
    )
    session.flush()
    return active


STALE_CHOICES = (30, 90, 180, 365)
"""Days not seen after which an owner may remove devices; the Devices page offers these."""


def stale(session: Session, organization: Organization, days: int) -> Sequence[Device]:
    """The devices not seen for `days` days (one of STALE_CHOICES)."""
    if days not in STALE_CHOICES:
        raise InvalidInput(
            f"{quote(days)} days: choose one of {', '.join(map(str, STALE_CHOICES))}",
            field="days",
            value=days,
        )
    return session.scalars(
        select(Device)
        .where(
            Device.organization_id == organization.id,
            Device.last_seen < utcnow() - timedelta(days=days),
        )
        .order_by(Device.last_seen, Device.id)
    ).all()


def remove_stale(session: Session, organization: Organization, actor: User, days: int) -> int:
    """An owner removes the devices not seen for `days` days, and revokes their device tokens
    (a machine gone that long keeps no way in); how many. One Activity event names them. A
    machine that comes back signs in again and reappears at its next check-in."""
    gone = stale(session, organization, days)
    if not gone:
        return 0
    agent_ids = [device.agent_id for device in gone]
    for token in session.scalars(
        select(Token).where(
            Token.organization_id == organization.id,
            Token.kind == TokenKind.DEVICE,
            Token.agent_id.in_(agent_ids),
            Token.revoked_at.is_(None),
        )
    ):
        token.revoked_at = utcnow()
    for device in gone:
        session.delete(device)
    activity.record(
        session,
        organization,
        "device.removed_stale",
        actor.username,
        days=days,
        count=len(gone),
        agent_ids=agent_ids[:100],
    )
    session.flush()
    return len(gone)
