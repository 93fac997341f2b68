"""Webhooks: owners' URLs that receive an organization's events, and the queue of deliveries.

Events (the `event` of each body, and its `X-Regward-Event` header):

    revision.applied           a Save & Apply: the revision, who applied it, its changes
    denials.reported           a batch of pulls or pushes an agent refused
    device.registered          a machine checked in for the first time
    device.refused_revision    a machine refused a revision (bad signature, rollback, ...)
    ping                       "Send test event"

`emit` queues one delivery per webhook of the organization in the transaction of the change
it tells about (so a rolled-back change sends nothing and a committed one is never lost);
the delivery queue (regward.server.webhooks) sends them in the background. Its database side
is here: `claim` leases due deliveries, `finish` records an attempt and schedules the retry.

A URL (`parse_url`): `http://` or `https://`, a host, no user or password (they would show in
lists and logs), no fragment, at most 2,000 characters. Literal addresses that no receiver
has any business at are refused: link-local (169.254.0.0/16 with cloud metadata services,
fe80::/10), multicast and unspecified (0.0.0.0, ::). Loopback and private addresses are
allowed: this server is self-hosted and its receivers are usually on the same network
(docs/security.md says why and what owners can reach).

    https://hooks.example.com/regward     accepted
    http://10.0.0.7:8080/in               accepted (private network)
    ftp://example.com/                    refused: scheme
    https://user:pw@example.com/          refused: credentials in the URL
    http://169.254.169.254/latest/        refused: link-local
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from regward.server.errors import Conflict, InvalidInput, NotFound
from regward.server.models import Organization, User, Webhook, WebhookDelivery, utcnow
from regward.server.services import activity
from regward.server.services.names import check_page

EVENTS = (
    "revision.applied",
    "denials.reported",
    "device.registered",
    "device.refused_revision",
    "ping",
)
MAX_WEBHOOKS = 10
MAX_URL_LENGTH = 2000
MAX_PAGE_SIZE = 100
MAX_ERROR_LENGTH = 500
SECRET_PREFIX = "rwh_"  # noqa: S105 - a prefix that marks secrets, not a secret
QUEUED = "regward.webhooks.queued"
"""`session.info` key: the session queued deliveries (the delivery queue wakes on commit)."""


class Status:
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


def parse_url(text: object) -> str:
    """The webhook URL `text` as stored; InvalidInput naming what is wrong otherwise."""

    def refuse(why: str) -> InvalidInput:
        return InvalidInput(why, field="url", value=text)

    if not isinstance(text, str) or not text.strip():
        raise refuse(f"{text!r} must be an http:// or https:// URL")
    url = text.strip()
    if len(url) > MAX_URL_LENGTH:
        raise refuse(f"{len(url)} characters; a URL has at most {MAX_URL_LENGTH}")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise refuse(f"{url[:80]!r} contains spaces or control characters; percent-encode them")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise refuse(f"{url[:80]!r} is not a URL ({error})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise refuse(f"{url[:80]!r}: the scheme must be http or https")
    if not parts.hostname:
        raise refuse(f"{url[:80]!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise refuse("a user or password in the URL would show in lists; use the secret instead")
    if parts.fragment or url.endswith("#"):
        raise refuse(f"{url[:80]!r}: a fragment (#...) is never sent; leave it out")
    if port == 0:
        raise refuse(f"{url[:80]!r}: port 0 cannot be connected to")
    refused = refused_address(parts.hostname)
    if refused:
        raise refuse(f"{parts.hostname!r} is {refused}; no webhook receiver can be there")
    return url


def refused_address(host: str) -> str | None:
    """Why the literal address `host` may not receive webhooks, or None (names pass: the
    delivery queue checks what they resolve to)."""
    try:
        address = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    return None


def signature(secret: str, body: bytes) -> str:
    """The `X-Regward-Signature` header's value: `sha256=` and the hex HMAC-SHA256 of `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try after `attempts` failed ones: base, 2*base, 4*base, ...
    never more than `cap`."""
    return float(min(cap, base * 2 ** min(max(attempts - 1, 0), 60)))


# --- owners' settings ----------------------------------------------------------------------


def list(  # shadows the builtin on purpose: callers write webhooks.list(...)
    session: Session, organization: Organization
) -> Sequence[Webhook]:
    return session.scalars(
        select(Webhook).where(Webhook.organization_id == organization.id).order_by(Webhook.id)
    ).all()


def get(session: Session, organization: Organization, webhook_id: int) -> Webhook:
    webhook = session.get(Webhook, webhook_id)
    if webhook is None or webhook.organization_id != organization.id:
        raise NotFound(f"webhook {webhook_id} not found in {organization.name!r}")
    return webhook


def create(
    session: Session, organization: Organization, actor: User, url: object
) -> tuple[Webhook, str]:
    """A new webhook for `url`, and its secret (the only time it is returned)."""
    parsed = parse_url(url)
    count = session.scalar(select(func.count()).where(Webhook.organization_id == organization.id))
    if (count or 0) >= MAX_WEBHOOKS:
        raise Conflict(
            f"{organization.name!r} has {MAX_WEBHOOKS} webhooks already; delete one first"
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    webhook = Webhook(
        organization_id=organization.id, url=parsed, secret=secret, created_by=actor.username
    )
    session.add(webhook)
    session.flush()
    activity.record(
        session, organization, "webhook.created", actor.username, webhook_id=webhook.id, url=parsed
    )
    return webhook, secret


def delete(session: Session, organization: Organization, actor: User, webhook_id: int) -> None:
    """Delete a webhook and its deliveries (pending ones are never sent)."""
    webhook = get(session, organization, webhook_id)
    session.delete(webhook)
    activity.record(
        session,
        organization,
        "webhook.deleted",
        actor.username,
        webhook_id=webhook_id,
        url=webhook.url,
    )
    session.flush()


def send_test(
    session: Session, organization: Organization, actor: User, webhook_id: int
) -> WebhookDelivery:
    """Queue a `ping` event for one webhook."""
    webhook = get(session, organization, webhook_id)
    return _queue(
        session, webhook, _body(organization, "ping", {"webhook_id": webhook.id}, actor.username)
    )


# --- events --------------------------------------------------------------------------------


def _body(organization: Organization, event: str, data: Mapping[str, Any], actor: str) -> str:
    return json.dumps(
        {
            "event": event,
            "organization": organization.name,
            "actor": actor,
            "occurred_at": utcnow().isoformat(),
            "data": data,
        },
        separators=(",", ":"),
        sort_keys=True,
    )


def _queue(session: Session, webhook: Webhook, body: str) -> WebhookDelivery:
    event = json.loads(body)["event"]
    delivery = WebhookDelivery(webhook_id=webhook.id, event=event, body=body)
    session.add(delivery)
    session.flush()
    session.info[QUEUED] = True
    return delivery


def emit(
    session: Session,
    organization: Organization,
    event: str,
    actor: str,
    data: Mapping[str, Any],
) -> int:
    """Queue `event` for every webhook of `organization` in this transaction; returns how many
    deliveries were queued (none without webhooks: one indexed query)."""
    if event not in EVENTS:
        raise ValueError(f"unknown webhook event {event!r}")
    hooks = session.scalars(select(Webhook).where(Webhook.organization_id == organization.id))
    queued = 0
    body: str | None = None
    for webhook in hooks:
        body = body or _body(organization, event, data, actor)
        _queue(session, webhook, body)
        queued += 1
    return queued


# --- the delivery log ----------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    items: Sequence[WebhookDelivery]
    total: int
    page: int
    page_size: int


def deliveries(
    session: Session,
    organization: Organization,
    webhook_id: int | None = None,
    *,
    page: int = 1,
    page_size: int = 25,
) -> Page:
    """The organization's deliveries (or one webhook's), newest first, one page at a time."""
    page, page_size = check_page(page, page_size, MAX_PAGE_SIZE)
    query = (
        select(WebhookDelivery)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(Webhook.organization_id == organization.id)
    )
    if webhook_id is not None:
        get(session, organization, webhook_id)
        query = query.where(WebhookDelivery.webhook_id == webhook_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(
        query.order_by(WebhookDelivery.id.desc()).limit(page_size).offset((page - 1) * page_size)
    ).all()
    return Page(items=items, total=total, page=page, page_size=page_size)


def delivery_dict(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "webhook_id": delivery.webhook_id,
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "response_code": delivery.response_code,
        "last_error": delivery.last_error,
        "created_at": delivery.created_at.isoformat(),
        "last_attempt_at": delivery.last_attempt_at.isoformat()
        if delivery.last_attempt_at
        else None,
        "next_attempt_at": delivery.next_attempt_at.isoformat()
        if delivery.status == Status.PENDING
        else None,
    }


# --- the queue's database side -------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one sender: what it needs to send it."""

    id: int
    url: str
    secret: str
    event: str
    body: bytes
    lease: datetime
    """When the lease ends: the row's `next_attempt_at` while this sender holds it. A sender
    whose lease ran out (another one may have taken the delivery over) records nothing."""


def claim(session: Session, lease: timedelta, limit: int) -> Sequence[Claimed]:
    """Lease up to `limit` due deliveries to this sender for `lease` (another process takes
    them over only after it runs out: a sender that died mid-send is covered).

    Atomic across server processes: on PostgreSQL the due rows are locked and other senders
    skip them (`FOR UPDATE SKIP LOCKED`) until this transaction has moved them past `lease`;
    on SQLite the write transaction (`BEGIN IMMEDIATE`) is the only one."""
    now = utcnow()
    until = now + lease
    query = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == Status.PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)  # other processes skip these rows
    ids = session.scalars(query).all()
    if not ids:
        return []
    session.execute(
        update(WebhookDelivery).where(WebhookDelivery.id.in_(ids)).values(next_attempt_at=until)
    )
    rows = session.execute(
        select(
            WebhookDelivery.id,
            Webhook.url,
            Webhook.secret,
            WebhookDelivery.event,
            WebhookDelivery.body,
        )
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(WebhookDelivery.id.in_(ids))
        .order_by(WebhookDelivery.id)
    ).all()
    return [Claimed(row[0], row[1], row[2], row[3], row[4].encode(), until) for row in rows]


def release(session: Session, leased: Sequence[Claimed]) -> None:
    """Give leased deliveries back at once (the sender is stopping before it sent them);
    those whose lease ran out are another sender's by now and stay as they are."""
    now = utcnow()
    for item in leased:
        session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == item.id,
                WebhookDelivery.status == Status.PENDING,
                WebhookDelivery.next_attempt_at == item.lease,
            )
            .values(next_attempt_at=now)
        )


@dataclass(frozen=True)
class Outcome:
    """One attempt: the receiver's status code, or why there was none."""

    response_code: int | None
    error: str | None

    @property
    def delivered(self) -> bool:
        return self.response_code is not None and 200 <= self.response_code < 300


def finish(
    session: Session,
    item: Claimed,
    outcome: Outcome,
    *,
    max_attempts: int,
    base: float,
    cap: float,
) -> WebhookDelivery | None:
    """Record one attempt of a leased delivery: delivered; or failed for good after
    `max_attempts`; or due again after the backoff. None, recording nothing, when the webhook
    was deleted meanwhile or the lease ran out (the delivery is another sender's now)."""
    # Locked on PostgreSQL: no other sender can take the delivery over between check and write.
    delivery = session.get(WebhookDelivery, item.id, with_for_update=True)
    if (
        delivery is None
        or delivery.status != Status.PENDING
        or delivery.next_attempt_at != item.lease
    ):
        return None
    now = utcnow()
    delivery.attempts += 1
    delivery.last_attempt_at = now
    delivery.response_code = outcome.response_code
    delivery.last_error = outcome.error[:MAX_ERROR_LENGTH] if outcome.error else None
    if outcome.delivered:
        delivery.status = Status.DELIVERED
    elif delivery.attempts >= max_attempts:
        delivery.status = Status.FAILED
    else:
        delivery.next_attempt_at = now + timedelta(seconds=backoff(delivery.attempts, base, cap))
    session.flush()
    return delivery


def next_due(session: Session) -> datetime | None:
    """When the earliest pending delivery is due (leases included)."""
    return session.scalar(
        select(func.min(WebhookDelivery.next_attempt_at)).where(
            WebhookDelivery.status == Status.PENDING
        )
    )
