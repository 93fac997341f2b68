"""Organizations, their members, and the access check every organization route starts with.

An outsider cannot tell an organization they do not belong to from one that does not exist:
both are NotFound. Members read; owners write; a read-only token never writes.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from regward.errors import quote
from regward.server.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from regward.server.models import Membership, Organization, Role, User
from regward.server.services import activity, auth, registry_access
from regward.server.services.auth import Caller
from regward.server.services.names import check_name


def create(
    session: Session, name: str, owner: User, signing_key: Ed25519PrivateKey
) -> Organization:
    """A new organization owned by `owner`: Registry Access off, Docker Hub listed, and that
    state applied as revision 1, so agents always find a signed policy."""
    check_name(name, "name")
    if get(session, name) is not None:
        raise Conflict(f"organization {name!r} already exists")
    organization = Organization(name=name)
    session.add(organization)
    session.flush()
    session.add(Membership(user_id=owner.id, organization_id=organization.id, role=Role.OWNER))
    activity.record(session, organization, "organization.created", owner.username, name=name)
    registry_access.initialize(session, organization, owner, signing_key)
    return organization


def get(session: Session, name: str) -> Organization | None:
    return session.scalar(select(Organization).where(Organization.name == name))


def list_for_user(session: Session, user: User) -> Sequence[tuple[Organization, Role]]:
    """The user's organizations with their role in each, by name."""
    rows = session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user.id)
        .order_by(Organization.name)
    ).all()
    return [(org, Role(role)) for org, role in rows]


def list_for_caller(session: Session, caller: Caller) -> Sequence[tuple[Organization, Role]]:
    """The caller's organizations: the user's, or the one organization a device token reads."""
    rows = list_for_user(session, caller.user)
    if caller.organization_id is None:
        return rows
    return [(org, role) for org, role in rows if org.id == caller.organization_id]


def access(
    session: Session, caller: Caller, name: str, *, role: Role = Role.MEMBER, write: bool = False
) -> Organization:
    """The organization `name` if the caller may use it as asked.

    NotFound for outsiders (and unknown names); PermissionDenied when a member asks for an
    owner's right, or a read-only token asks to write."""
    organization = get(session, name) if isinstance(name, str) else None
    membership = (
        session.get(Membership, (caller.user.id, organization.id)) if organization else None
    )
    bound_elsewhere = caller.organization_id not in (None, organization and organization.id)
    if organization is None or membership is None or bound_elsewhere:
        raise NotFound(f"organization {name!r} not found")
    if role is Role.OWNER and membership.role != Role.OWNER:
        raise PermissionDenied(f"only owners of {name!r} can do this")
    if write and not caller.can_write:
        raise PermissionDenied("this token is read-only; use a read-write token")
    return organization


def remember_last(session: Session, user: User, organization: Organization) -> None:
    """Note `organization` as the one `user` used last (where the dashboard opens next)."""
    if user.last_organization_id != organization.id:
        session.execute(
            update(User).where(User.id == user.id).values(last_organization_id=organization.id)
        )


def role_of(session: Session, user: User, organization: Organization) -> Role | None:
    membership = session.get(Membership, (user.id, organization.id))
    return Role(membership.role) if membership else None


def list_members(session: Session, organization: Organization) -> Sequence[Membership]:
    return session.scalars(
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization.id)
        .order_by(User.username)
    ).all()


def _role(value: object) -> Role:
    try:
        return Role(value)  # type: ignore[arg-type]  # checked just here
    except ValueError:
        raise InvalidInput(
            f"role {quote(value)} must be 'owner' or 'member'", field="role", value=value
        ) from None


def add_member(
    session: Session, organization: Organization, actor: User, username: str, role: Role | str
) -> tuple[Membership, str | None]:
    """Add `username` with `role`; a new account is created when the name is unknown, and its
    one-time password returned (else None). Conflict if already a member."""
    check_name(username, "username")
    new_role = _role(role)
    password: str | None = None
    user = auth.get_user(session, username)
    if user is None:
        password = auth.generate_password()
        user = auth.create_user(session, username, password, one_time=True)
    elif session.get(Membership, (user.id, organization.id)) is not None:
        raise Conflict(f"{username!r} is already a member of {organization.name!r}")
    membership = Membership(user_id=user.id, organization_id=organization.id, role=new_role)
    session.add(membership)
    activity.record(
        session,
        organization,
        "organization.member_added",
        actor.username,
        member=username,
        after={"role": str(new_role)},
    )
    session.flush()
    return membership, password


def reset_password(session: Session, organization: Organization, actor: User, username: str) -> str:
    """An owner gives a member a new one-time password (returned, shown once): every sign-in
    of theirs ends, and the dashboard asks them for their own at the next one. PermissionDenied
    when the member also belongs to an organization the owner does not own: an account shared
    with others is the server administrator's to reset (`regward server reset-password`)."""
    membership = _membership(session, organization, username)
    user = membership.user
    if user.id == actor.id:
        raise Conflict("that is you: change your own password on the Account page")
    elsewhere = [
        org.name
        for org, _ in list_for_user(session, user)
        if role_of(session, actor, org) is not Role.OWNER
    ]
    if elsewhere:
        raise PermissionDenied(
            f"{username!r} is also a member of {', '.join(map(repr, elsewhere))}, which you do "
            f"not own; the server's administrator can reset it with `regward server "
            f"reset-password {username}`"
        )
    password = auth.generate_password()
    auth.set_password(session, user, password, keep=None, one_time=True)
    activity.record(
        session, organization, "organization.member_password_reset", actor.username, member=username
    )
    session.flush()
    return password


def _membership(session: Session, organization: Organization, username: str) -> Membership:
    user = auth.get_user(session, username) if isinstance(username, str) else None
    membership = session.get(Membership, (user.id, organization.id)) if user else None
    if membership is None:
        raise NotFound(f"{username!r} is not a member of {organization.name!r}")
    return membership


def _lock_owners(session: Session, organization: Organization) -> int:
    """Count owners, locking the organization's membership rows against a concurrent change."""
    session.scalars(
        select(Membership.user_id)
        .where(Membership.organization_id == organization.id)
        .with_for_update()
    ).all()
    count = session.scalar(
        select(func.count()).where(
            Membership.organization_id == organization.id, Membership.role == Role.OWNER
        )
    )
    return count or 0


def set_role(
    session: Session, organization: Organization, actor: User, username: str, role: Role | str
) -> Membership:
    """Change a member's role; Conflict when it would leave the organization without owners."""
    new_role = _role(role)
    membership = _membership(session, organization, username)
    old = Role(membership.role)
    if old is new_role:
        return membership
    if old is Role.OWNER and _lock_owners(session, organization) <= 1:
        raise Conflict(
            f"{username!r} is the last owner of {organization.name!r}; add another first"
        )
    membership.role = new_role
    activity.record(
        session,
        organization,
        "organization.member_role_changed",
        actor.username,
        member=username,
        before={"role": str(old)},
        after={"role": str(new_role)},
    )
    session.flush()
    return membership


def remove_member(session: Session, organization: Organization, actor: User, username: str) -> None:
    """Remove a member; Conflict for the last owner."""
    membership = _membership(session, organization, username)
    if membership.role == Role.OWNER and _lock_owners(session, organization) <= 1:
        raise Conflict(
            f"{username!r} is the last owner of {organization.name!r}; add another first"
        )
    role = membership.role
    session.delete(membership)
    activity.record(
        session,
        organization,
        "organization.member_removed",
        actor.username,
        member=username,
        before={"role": role},
    )
    session.flush()
