"""An organization's single sign-on rules: who joins on first sign-in, and "SSO required".

    {"join": [{"email_domain": "example.com", "role": "member"},
              {"groups_claim": "platform-team", "role": "owner"}],
     "required": false}

A rule names an email domain (the whole domain after the `@`, compared without case) or a
value of the provider's groups claim, and the role it gives. With `required`, members sign in
through the provider only: a password sign-in is refused, except for the organization's owners
(their break-glass path, recorded in Activity each time). Signing in through the provider is
`sso_accounts`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from regward.server.errors import InvalidInput, PermissionDenied
from regward.server.inputs import WORDS_PATTERN
from regward.server.models import Membership, Organization, Role, SsoSettings, User, utcnow
from regward.server.services import activity

MAX_RULES = 50
MAX_GROUP_LENGTH = 255
DOMAIN_PATTERN = r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$"
_DOMAIN = re.compile(DOMAIN_PATTERN.removeprefix("^").removesuffix("$"))
_ROLE: dict[str, Any] = {"type": "string", "enum": [role.value for role in Role]}
RULE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "object",
            "required": ["email_domain"],
            "properties": {
                "email_domain": {"type": "string", "pattern": DOMAIN_PATTERN},
                "role": _ROLE,
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["groups_claim"],
            "properties": {
                "groups_claim": {
                    "type": "string",
                    "maxLength": MAX_GROUP_LENGTH,
                    "pattern": WORDS_PATTERN,
                },
                "role": _ROLE,
            },
            "additionalProperties": False,
        },
    ]
}
"""How the API's schema describes one join rule: what `Rule.parse` accepts."""


@dataclass(frozen=True)
class Rule:
    """Join with `role` when the email's domain is `email_domain`, or when the groups claim
    holds `groups_claim` (exactly one of the two is set)."""

    role: Role
    email_domain: str | None = None
    groups_claim: str | None = None

    @classmethod
    def parse(cls, value: object, field: str) -> Rule:
        if not isinstance(value, dict) or not set(value) <= {
            "email_domain",
            "groups_claim",
            "role",
        }:
            raise InvalidInput(
                f'{field}: {value!r} must be {{"email_domain": "example.com", "role": "member"}} '
                'or {"groups_claim": "GROUP", "role": "member"}'
            )
        try:
            role = Role(value.get("role", Role.MEMBER))
        except ValueError:
            raise InvalidInput(
                f"{field}.role: {value.get('role')!r} must be 'owner' or 'member'"
            ) from None
        domain, group = value.get("email_domain"), value.get("groups_claim")
        if (domain is None) == (group is None):
            raise InvalidInput(f"{field}: name either email_domain or groups_claim, not both")
        if domain is not None:
            if not isinstance(domain, str) or not _DOMAIN.fullmatch(domain.strip().lower()):
                raise InvalidInput(
                    f"{field}.email_domain: {domain!r} must be a domain like example.com"
                )
            return cls(role=role, email_domain=domain.strip().lower())
        if not isinstance(group, str) or not group.strip() or len(group) > MAX_GROUP_LENGTH:
            raise InvalidInput(
                f"{field}.groups_claim: {group!r} must be a group name of 1 to "
                f"{MAX_GROUP_LENGTH} characters"
            )
        return cls(role=role, groups_claim=group.strip())

    def matches(self, email_domain: str, email_verified: bool, groups: Sequence[str]) -> bool:
        if self.email_domain is not None:
            return email_verified and email_domain == self.email_domain
        return self.groups_claim in groups

    def to_dict(self) -> dict[str, str]:
        key = "email_domain" if self.email_domain is not None else "groups_claim"
        return {key: str(self.email_domain or self.groups_claim), "role": str(self.role)}


@dataclass(frozen=True)
class Config:
    join: tuple[Rule, ...] = ()
    required: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"join": [rule.to_dict() for rule in self.join], "required": self.required}


def parse_rules(value: object) -> tuple[Rule, ...]:
    if not isinstance(value, list) or len(value) > MAX_RULES:
        raise InvalidInput(f"join: must be a list of at most {MAX_RULES} rules")
    return tuple(Rule.parse(item, f"join[{n}]") for n, item in enumerate(value))


def get(session: Session, organization: Organization) -> Config:
    row = session.get(SsoSettings, organization.id)
    if row is None:
        return Config()
    return Config(join=parse_rules(row.join), required=row.required)


def put(
    session: Session, organization: Organization, actor: User, join: object, required: object
) -> Config:
    """Replace the organization's rules; recorded in Activity with before and after."""
    if not isinstance(required, bool):
        raise InvalidInput(f"required: {required!r} must be true or false")
    new = Config(join=parse_rules(join), required=required)
    old = get(session, organization)
    row = session.get(SsoSettings, organization.id)
    if row is None:
        row = SsoSettings(organization_id=organization.id)
        session.add(row)
    row.join = [rule.to_dict() for rule in new.join]
    row.required = new.required
    row.updated_at = utcnow()
    if new != old:
        activity.record(
            session,
            organization,
            "sso.settings_changed",
            actor.username,
            before=old.to_dict(),
            after=new.to_dict(),
        )
    session.flush()
    return new


def configured(session: Session) -> Sequence[tuple[Organization, Config]]:
    """Every organization with rules or "SSO required", with its settings."""
    rows = session.execute(
        select(Organization, SsoSettings).join(
            SsoSettings, SsoSettings.organization_id == Organization.id
        )
    ).all()
    return [(org, Config(join=parse_rules(row.join), required=row.required)) for org, row in rows]


def check_password_sign_in(session: Session, user: User) -> None:
    """Refuse a password sign-in for a member of an organization that requires SSO; let an
    owner of one through (break-glass), recorded in that organization's Activity."""
    rows = session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .join(SsoSettings, SsoSettings.organization_id == Organization.id)
        .where(Membership.user_id == user.id, SsoSettings.required.is_(True))
        .order_by(Organization.name)
    ).all()
    members_only = [org.name for org, role in rows if role != Role.OWNER]
    if members_only:
        raise PermissionDenied(
            f"organization {members_only[0]!r} requires single sign-on: use Sign in with SSO"
        )
    for organization, _role in rows:
        activity.record(
            session, organization, "sso.break_glass_sign_in", user.username, method="password"
        )
