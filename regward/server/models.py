"""The database model (SQLAlchemy 2, typed mappings); changes to it need an Alembic migration.

Every timestamp is UTC and comes back timezone-aware from both SQLite and PostgreSQL.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Integer columns are 32-bit in PostgreSQL; inputs are checked against this before they get there.
MAX_REVISION = 2**31 - 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
    }


class Role(enum.StrEnum):
    OWNER = "owner"
    MEMBER = "member"


class TokenKind(enum.StrEnum):
    SESSION = "session"  # from signing in with a password
    PERSONAL = "personal"  # a personal access token, created on purpose
    DEVICE = "device"  # a machine's own, from the device sign-in (`regward login`)


class Scope(enum.StrEnum):
    READ = "read"
    READ_WRITE = "read-write"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The organization whose pages the user opened last: where the dashboard opens next time.
    last_organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="SET NULL"), default=None
    )


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    draft: Mapped[Draft] = relationship(back_populates="organization", uselist=False)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()
    organization: Mapped[Organization] = relationship()


class Token(Base):
    """A bearer credential; only the SHA-256 of its random value is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    scope: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    # A device token is bound to one organization and to the agent id of one machine.
    organization_id: Mapped[int | None] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), default=None
    )
    agent_id: Mapped[str | None] = mapped_column(String(128), default=None)
    # A personal token's first characters (`rwp_Xy3k`), to tell tokens apart in lists.
    hint: Mapped[str | None] = mapped_column(String(16), default=None)
    # When it was last used, to the minute (tokens.UsageClock).
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)

    user: Mapped[User] = relationship()
    organization: Mapped[Organization | None] = relationship()


class Draft(Base):
    """An organization's Registry Access settings as edited, before Save & Apply."""

    __tablename__ = "drafts"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    enabled: Mapped[bool] = mapped_column(default=False)
    # The entries exactly as in the policy file's `registries` list (RegistryEntry.to_dict()).
    registries: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    # Bumped by every write; a write naming an older version is refused (409).
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # Who last changed each part of the draft since the last Save & Apply ("enabled", or an
    # entry's key as `registry_access.editor_key` writes it) -> username: the Activity events
    # of an apply name who made each change, not whoever pressed Save & Apply.
    editors: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    organization: Mapped[Organization] = relationship(back_populates="draft")


class Revision(Base):
    """An applied, signed, immutable policy."""

    __tablename__ = "revisions"
    __table_args__ = (UniqueConstraint("organization_id", "revision"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    # SignedPolicy.to_json(), stored as the exact bytes served (decoded as UTF-8).
    signed_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )


class ActivityEvent(Base):
    """One audit event, written in the transaction of the change it records."""

    __tablename__ = "activity_events"
    __table_args__ = (Index("ix_activity_org_id", "organization_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(64))  # username at the time; users may go away
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Device(Base):
    """A machine running the agent, by the id the agent chose."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("organization_id", "agent_id"),
        # The Devices list's order, and "not seen for 7 days" on the Overview.
        Index("ix_devices_org_last_seen", "organization_id", "last_seen"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(128))
    hostname: Mapped[str] = mapped_column(String(255), default="")
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # Checked in by the machine's own device token (`regward login`): from then on only a device
    # token bound to this agent id may check it in, not its user's personal tokens or sessions.
    by_device_token: Mapped[bool] = mapped_column(default=False, server_default=false())
    applied_revision: Mapped[int] = mapped_column(Integer, default=0)
    # The agent's newest refusal of a revision (bad signature, another organization, a
    # rollback) as it worded it; None once a fetched revision verified.
    refusal: Mapped[str | None] = mapped_column(String(500), default=None)
    # Whether the machine's Docker Engine uses the agent's AuthZ plugin and egress proxy, as
    # the agent last checked: engine_authz None is unknown (no engine answered, or an agent too
    # old to tell); engine_proxy None with engine_authz set is an agent whose proxy is off.
    engine_authz: Mapped[bool | None] = mapped_column(default=None)
    engine_proxy: Mapped[bool | None] = mapped_column(default=None)
    first_seen: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User | None] = relationship()


class Denial(Base):
    """A pull or push an agent refused, as it reported it."""

    __tablename__ = "denials"
    __table_args__ = (
        Index("ix_denials_org_id", "organization_id", "id"),
        # The Overview's last 30 days, and the Blocked pulls filters by time and registry.
        Index("ix_denials_org_occurred_at", "organization_id", "occurred_at"),
        Index("ix_denials_org_registry_host", "organization_id", "registry_host"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    agent_id: Mapped[str] = mapped_column(String(128), default="")
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    reference: Mapped[str] = mapped_column(String(512))
    registry_host: Mapped[str] = mapped_column(String(300), default="")
    action: Mapped[str] = mapped_column(String(16))
    revision: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str] = mapped_column(String(1000), default="")
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User | None] = relationship()


class SignInFailure(Base):
    """A failed password check, kept for the sign-in limit's window. In the database, so every
    server process behind a load balancer counts the same failures, and a restart forgets none."""

    __tablename__ = "sign_in_failures"
    __table_args__ = (
        Index("ix_sign_in_failures_key_at", "key", "at"),
        Index("ix_sign_in_failures_at", "at"),  # forgetting expired ones is a range, not a scan
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    """`user:NAME` (lowercased) or `client:ADDRESS`; other counts prefix theirs
    (`device-code:user:NAME` for wrong codes on the device approval page)."""
    at: Mapped[datetime] = mapped_column(default=utcnow)


class DeviceAuthorization(Base):
    """A machine's request to sign in (RFC 8628), until a person approves or denies it.

    Only hashes of the two codes are stored: the device code and the user code exist in the
    answer to the machine that asked, and nowhere else."""

    __tablename__ = "device_authorizations"
    __table_args__ = (Index("ix_device_authorizations_client_at", "client", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    organization: Mapped[str] = mapped_column(String(64))  # as asked; checked on approval
    machine: Mapped[str] = mapped_column(String(255))
    agent_id: Mapped[str] = mapped_column(String(128))
    client: Mapped[str] = mapped_column(String(100))  # the asking address, for the rate limit
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending, approved, denied, or used (a token was handed out or the denial answered)."""
    interval: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    last_polled_at: Mapped[datetime | None] = mapped_column(default=None)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), default=None
    )
    """Who approved or denied it."""

    user: Mapped[User | None] = relationship()


class SsoIdentity(Base):
    """A user's account at the OpenID provider: matched by (issuer, subject), never by email."""

    __tablename__ = "sso_identities"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    issuer: Mapped[str] = mapped_column(String(300))
    subject: Mapped[str] = mapped_column(String(255))
    email: Mapped[str] = mapped_column(String(320), default="")  # as of the last sign-in
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_sign_in: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship()


class SsoSettings(Base):
    """An organization's single sign-on rules: who joins on first sign-in, and whether members
    must sign in through the provider."""

    __tablename__ = "sso_settings"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    # [{"email_domain": "example.com", "role": "member"}, {"groups_claim": "eng", ...}]
    join: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    required: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class SsoLogin(Base):
    """One sign-in under way at the provider: its state (hashed), nonce and PKCE verifier.
    Deleted when the provider sends the browser back, so a state works once."""

    __tablename__ = "sso_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(100))
    code_verifier: Mapped[str] = mapped_column(String(128))
    next_path: Mapped[str] = mapped_column(String(500), default="/")
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Webhook(Base):
    """An owner's URL that receives the organization's events, signed with its own secret.

    The secret is stored as given (the server signs with it on every delivery) and shown to
    the owner once, when the webhook is created."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[str] = mapped_column(String(64))  # username at the time


class WebhookDelivery(Base):
    """One event for one webhook: queued in the transaction of the change it tells about, then
    sent by the server's delivery queue (regward.server.webhooks) until it is answered 2xx or
    runs out of attempts. The body is stored exactly as signed and sent."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_id", "webhook_id", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    """pending (queued or waiting for a retry), delivered, or failed (attempts used up)."""
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    """When a pending delivery is due; while one process sends it, a lease in the future."""
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    response_code: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(String(500), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
