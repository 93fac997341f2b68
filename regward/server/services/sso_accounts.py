"""Signing in through the OpenID provider: the account, the joins, the session.

The account is found by the provider's (issuer, subject), never by email: an email can change
hands, a subject does not. A first sign-in creates an account named after the person's
preferred username or email (made unique: `alice`, `alice-2`, ...); it has no password.
Then every organization's join rules are applied: a matching rule adds the person with its
role, or changes their role to it (never taking the last owner's away). Joins, role changes
and the sign-in itself are recorded in each organization's Activity, actor `sso`.
"""

from __future__ import annotations

import re
import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regward.server.models import Membership, Organization, Role, SsoIdentity, User, utcnow
from regward.server.oidc import Identity
from regward.server.services import activity, auth, orgs, sso
from regward.server.services.names import check_name

ACTOR = "sso"


def sign_in(session: Session, identity: Identity, lifetime: int) -> tuple[User, str]:
    """The person's account (created on first sign-in), joined by the rules; a new session
    token (read-write, `lifetime` seconds)."""
    user = _account(session, identity)
    _join(session, user, identity)
    for organization, _role in orgs.list_for_user(session, user):
        activity.record(
            session, organization, "sso.signed_in", user.username, subject=identity.subject
        )
    return user, auth.new_session(session, user, lifetime)


def _account(session: Session, identity: Identity) -> User:
    link = session.scalar(
        select(SsoIdentity).where(
            SsoIdentity.issuer == identity.issuer, SsoIdentity.subject == identity.subject
        )
    )
    if link is not None:
        link.email = identity.email[:320]
        link.last_sign_in = utcnow()
        return link.user
    user = User(username=_free_name(session, identity), password_hash=_NO_PASSWORD)
    session.add(user)
    session.flush()
    session.add(
        SsoIdentity(
            user_id=user.id,
            issuer=identity.issuer,
            subject=identity.subject,
            email=identity.email[:320],
        )
    )
    session.flush()
    return user


# Not an argon2 hash, so no password ever matches it (auth.authenticate reads it as wrong).
_NO_PASSWORD = "!sso"  # noqa: S105 - a marker that matches no password


def _free_name(session: Session, identity: Identity) -> str:
    wanted = identity.preferred_username or identity.email.partition("@")[0] or "user"
    base = re.sub(r"[^a-z0-9_-]+", "-", wanted.lower()).strip("-_")[:56] or "user"
    if len(base) < 2:
        base = f"{base}-user"
    for n in range(1, 1000):
        name = base if n == 1 else f"{base}-{n}"
        check_name(name, "username")
        taken = session.scalar(select(func.count()).where(User.username == name))
        if not taken:
            return name
    return f"{base[:40]}-{secrets.token_hex(4)}"


def _join(session: Session, user: User, identity: Identity) -> None:
    for organization, config in sso.configured(session):
        matching = [
            rule.role
            for rule in config.join
            if rule.matches(identity.email_domain, identity.email_verified, identity.groups)
        ]
        if not matching:
            continue
        role = Role.OWNER if Role.OWNER in matching else Role.MEMBER
        membership = session.get(Membership, (user.id, organization.id))
        if membership is None:
            session.add(Membership(user_id=user.id, organization_id=organization.id, role=role))
            _record(session, organization, "organization.member_added", user, after=role)
        elif membership.role != role and not _last_owner(session, organization, membership):
            old = membership.role
            membership.role = role
            _record(session, organization, "organization.member_role_changed", user, old, role)
    session.flush()


def _last_owner(session: Session, organization: Organization, membership: Membership) -> bool:
    if membership.role != Role.OWNER:
        return False
    owners = session.scalar(
        select(func.count()).where(
            Membership.organization_id == organization.id, Membership.role == Role.OWNER
        )
    )
    return (owners or 0) <= 1


def _record(
    session: Session,
    organization: Organization,
    action: str,
    user: User,
    before: str | None = None,
    after: str | None = None,
) -> None:
    data: dict[str, object] = {"member": user.username, "via": "sso"}
    if before is not None:
        data["before"] = {"role": str(before)}
    if after is not None:
        data["after"] = {"role": str(after)}
    activity.record(session, organization, action, ACTOR, **data)
