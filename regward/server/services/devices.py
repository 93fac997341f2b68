"""Devices: machines running the agent, the revision each enforces, and when it was last seen."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, false, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from regward.server.errors import Conflict, InvalidInput, NotFound
from regward.server.models import Device, Organization, Token, TokenKind, User, utcnow
from regward.server.services import activity, registry_access, webhooks
from regward.server.services.names import check_revision

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
    refusal = _text(refusal, "refusal", MAX_REFUSAL_LENGTH, required=False) or None
    found = Engine.parse(engine)
    revision = check_revision(revision, "revision")
    applied = registry_access.current(session, organization)
    newest = applied.revision if applied else 0
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


def list(  # shadows the builtin on purpose: callers write devices.list(...)
    session: Session, organization: Organization
) -> Sequence[DeviceStatus]:
    """Every device of the organization, most recently seen first, with its compliance."""
    applied = registry_access.current(session, organization)
    current_revision = applied.revision if applied else 0
    rows = session.scalars(
        select(Device)
        .where(Device.organization_id == organization.id)
        .order_by(Device.last_seen.desc(), Device.id)
    ).all()
    own: dict[str | None, Token] = {}
    for token in session.scalars(
        select(Token)
        .where(Token.organization_id == organization.id, Token.kind == TokenKind.DEVICE)
        .order_by(Token.id)
    ):
        own[token.agent_id] = token  # the newest wins
    return [
        DeviceStatus(device=row, current_revision=current_revision, token=own.get(row.agent_id))
        for row in rows
    ]


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
