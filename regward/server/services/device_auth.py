"""Device sign-in (OAuth 2.0 Device Authorization Grant, RFC 8628) for `regward login`.

    machine                         server                           person (dashboard)
    start(org, machine, agent) ->   device code, user code      ->   sees the user code
    poll(device code)          ->   authorization_pending            find(user code): org, machine
                                    slow_down (faster than interval) approve / deny
    poll(device code)          ->   a device token, once; or access_denied / expired_token

The device code is 256 random bits; the user code is eight letters from RFC 8628's
consonant-only alphabet (shown `BCDF-GHJK`, typed in any case, with or without the dash).
Only their SHA-256 is stored, so neither can be read back: each exists in the answer to the
machine that asked and nowhere else. Every code expires after `ttl` seconds and hands out at
most one token. The token it hands out has read scope and is bound to the organization and
the agent id the machine named; its name is the machine's name.
"""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from regward.policy.text import refuse_invisible
from regward.server.errors import InvalidInput, NotFound, TooManyRequests
from regward.server.models import (
    DeviceAuthorization,
    Organization,
    Role,
    Scope,
    Token,
    TokenKind,
    User,
    utcnow,
)
from regward.server.services import activity, orgs
from regward.server.services.auth import Caller, new_token_value
from regward.server.services.names import check_name

ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 §6.1: no vowels, nothing that reads as a digit
USER_CODE_LENGTH = 8
SLOW_DOWN_STEP = 5  # RFC 8628 §3.5: each slow_down adds 5 seconds to the interval
MAX_MACHINE_LENGTH = 255
MAX_AGENT_ID_LENGTH = 128
MAX_OPEN_PER_CLIENT = 10  # sign-in requests one address may have open within `ttl`
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


class Status(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    USED = "used"


@dataclass(frozen=True)
class Refused:
    """An RFC 8628 token-endpoint error: `code` is the answer's `error` field. Returned, not
    raised, so what a poll changed (its time, a longer interval) is committed."""

    code: str
    description: str


@dataclass(frozen=True)
class Started:
    device_code: str
    user_code: str
    expires_in: int
    interval: int


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normalize_user_code(text: str) -> str:
    """`bcdf-ghjk`, `BCDF GHJK` and `BCDFGHJK` are one code; anything else is InvalidInput."""
    letters = "".join(ch for ch in text.upper() if ch not in "- ")
    if len(letters) != USER_CODE_LENGTH or any(ch not in ALPHABET for ch in letters):
        raise InvalidInput(
            f"code: {text[:40]!r} is not a sign-in code; it has eight letters, like BCDF-GHJK"
        )
    return letters


def display_user_code(letters: str) -> str:
    half = USER_CODE_LENGTH // 2
    return f"{letters[:half]}-{letters[half:]}"


def _text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidInput(f"{field}: {value!r} must be text of 1 to {limit} characters")
    refuse_invisible(value, field, InvalidInput)
    return value.strip()


def start(
    session: Session,
    organization: str,
    machine: str,
    agent_id: str,
    client: str,
    *,
    ttl: int,
    interval: int,
    now: datetime | None = None,
) -> Started:
    """Open a sign-in request for `machine` to `organization` (not checked here: whether it
    exists is told only to its members, on approval). TooManyRequests past
    MAX_OPEN_PER_CLIENT requests from one address within `ttl`."""
    check_name(organization, "organization")
    machine = _text(machine, "machine", MAX_MACHINE_LENGTH)
    agent_id = _text(agent_id, "agent_id", MAX_AGENT_ID_LENGTH)
    now = now or utcnow()
    client = client[:100]
    recent = session.scalar(
        select(func.count()).where(
            DeviceAuthorization.client == client,
            DeviceAuthorization.created_at > now - timedelta(seconds=ttl),
        )
    )
    if (recent or 0) >= MAX_OPEN_PER_CLIENT:
        raise TooManyRequests(
            f"too many sign-in requests from {client}; finish or let expire the ones open "
            f"(codes last {ttl} seconds)"
        )
    device_code = secrets.token_urlsafe(32)
    user_code = "".join(secrets.choice(ALPHABET) for _ in range(USER_CODE_LENGTH))
    session.add(
        DeviceAuthorization(
            device_code_hash=_digest(device_code),
            user_code_hash=_digest(user_code),
            organization=organization,
            machine=machine,
            agent_id=agent_id,
            client=client,
            status=Status.PENDING,
            interval=interval,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    session.flush()  # a (vanishingly rare) user-code collision is an IntegrityError: retry
    return Started(device_code, display_user_code(user_code), ttl, interval)


def find(session: Session, caller: Caller, user_code: str) -> DeviceAuthorization:
    """The pending request with this user code, for a member of its organization to decide.

    NotFound (same words) for an unknown, expired or decided code and for an organization the
    caller does not belong to, so a guesser learns nothing."""
    letters = normalize_user_code(user_code)
    row = session.scalar(
        select(DeviceAuthorization).where(DeviceAuthorization.user_code_hash == _digest(letters))
    )
    missing = NotFound(
        "no machine is waiting for that code; it may have expired (codes last minutes), been "
        "used already, or been mistyped. Run `regward login` again for a new one"
    )
    if row is None or row.status != Status.PENDING or row.expires_at <= utcnow():
        raise missing
    try:
        orgs.access(session, caller, row.organization)
    except NotFound:
        raise missing from None
    return row


def decide(session: Session, caller: Caller, user_code: str, *, approve: bool) -> Organization:
    """Approve or deny the request with this user code (NotFound as `find`); recorded in the
    organization's Activity. The token itself is made when the machine next polls."""
    row = find(session, caller, user_code)
    organization = orgs.access(session, caller, row.organization)
    row.status = Status.APPROVED if approve else Status.DENIED
    row.user_id = caller.user.id
    activity.record(
        session,
        organization,
        "device.sign_in_approved" if approve else "device.sign_in_denied",
        caller.user.username,
        machine=row.machine,
        agent_id=row.agent_id,
    )
    session.flush()
    return organization


@dataclass(frozen=True)
class Issued:
    token: str
    organization: str
    username: str


def poll(session: Session, device_code: str, *, now: datetime | None = None) -> Issued | Refused:
    """The machine's poll: the device token once approved, else Refused with RFC 8628's code
    (authorization_pending, slow_down, access_denied, expired_token, invalid_grant)."""
    now = now or utcnow()
    if not isinstance(device_code, str) or not 0 < len(device_code) <= 200:
        return Refused("invalid_request", "device_code: give the device code you were sent")
    row = session.scalar(
        select(DeviceAuthorization)
        .where(DeviceAuthorization.device_code_hash == _digest(device_code))
        .with_for_update()
    )
    if row is None or row.status == Status.USED:
        return Refused(
            "invalid_grant", "unknown or already used device code; run `regward login` again"
        )
    if row.expires_at <= now:
        return Refused("expired_token", "the code expired; run `regward login` again")
    if row.status == Status.DENIED:
        row.status = Status.USED
        return Refused("access_denied", "the sign-in was denied in the dashboard")
    if row.status == Status.PENDING:
        last, row.last_polled_at = row.last_polled_at, now
        if last is not None and (now - last).total_seconds() < row.interval:
            row.interval += SLOW_DOWN_STEP
            return Refused(
                "slow_down", f"polling too fast; wait {row.interval} seconds between polls"
            )
        return Refused("authorization_pending", "waiting for a person to approve the code")
    return _issue(session, row)


def _issue(session: Session, row: DeviceAuthorization) -> Issued | Refused:
    # One token per approval even when two polls race: only the poll that moves the row from
    # approved to used goes on.
    claimed = session.execute(
        update(DeviceAuthorization)
        .where(DeviceAuthorization.id == row.id, DeviceAuthorization.status == Status.APPROVED)
        .values(status=Status.USED)
    )
    user = session.get(User, row.user_id) if row.user_id is not None else None
    organization = orgs.get(session, row.organization)
    if claimed.rowcount != 1 or user is None or organization is None:  # type: ignore[attr-defined]
        return Refused("invalid_grant", "the code was used already; run `regward login` again")
    if orgs.role_of(session, user, organization) not in (Role.OWNER, Role.MEMBER):
        return Refused("access_denied", "whoever approved the code left the organization")
    value, digest = new_token_value(TokenKind.DEVICE)
    session.add(
        Token(
            user_id=user.id,
            kind=TokenKind.DEVICE,
            name=row.machine[:100],
            scope=Scope.READ,
            token_hash=digest,
            organization_id=organization.id,
            agent_id=row.agent_id,
        )
    )
    session.flush()
    return Issued(value, organization.name, user.username)
