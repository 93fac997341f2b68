"""The Members page: who belongs to the organization and with which role.

    GET  /orgs/{org}/members
    POST /orgs/{org}/members/add|role|remove|reset-password   (owners; remove and reset ask
                                                               first)

Adding an unknown username creates the account; its one-time password is shown on that answer
only, never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from regward.server import first_password
from regward.server.dashboard import forms
from regward.server.dashboard.context import Form, Visitor, org_access, owner_write
from regward.server.dashboard.rendering import (
    confirmation,
    org_path,
    page_router,
    redirect,
    render,
    sentence,
)
from regward.server.errors import ServiceError
from regward.server.models import Organization, Role
from regward.server.runtime import server_of
from regward.server.services import orgs

router = page_router()
T = TypeVar("T")


def _members_page(
    request: Request,
    session: Session,
    visitor: Visitor,
    organization: Organization,
    *,
    status: int = 200,
    error: str = "",
    add_form: dict[str, str] | None = None,
    new_password: dict[str, str] | None = None,
    reset: dict[str, str] | None = None,
) -> HTMLResponse:
    members = [
        {"username": m.user.username, "role": m.role}
        for m in orgs.list_members(session, organization)
    ]
    return render(
        request,
        "members.html",
        visitor,
        org=organization.name,
        tab="members",
        status=status,
        title=f"Members · {organization.name}",
        error=error,
        can_edit=visitor.is_owner(organization.name),
        members=members,
        roles=[str(role) for role in (Role.MEMBER, Role.OWNER)],
        add_form=add_form or {"username": "", "role": "member"},
        new_password=new_password,
        reset=reset,
    )


@router.get("/orgs/{org}/members")
def members_page(request: Request, org: str) -> Response:
    with org_access(request, org) as (session, visitor, organization):
        return _members_page(request, session, visitor, organization)


def _member_write(
    request: Request,
    org: str,
    write: Callable[[Session, Visitor, Organization], T],
    then: Callable[[T], Response],
    add_form: dict[str, str] | None = None,
) -> Response:
    """One change of the members by an owner; when refused, the page with the reason."""

    def refused(
        error: ServiceError, session: Session, visitor: Visitor, organization: Organization
    ) -> Response:
        return _members_page(
            request,
            session,
            visitor,
            organization,
            status=error.status,
            error=sentence(error),
            add_form=add_form,
        )

    return owner_write(request, org, write, then, refused)


@router.post("/orgs/{org}/members/add")
def add_member(request: Request, org: str, form: Form) -> Response:
    username = forms.text(form, "username").strip()
    role = forms.text(form, "role") or "member"

    def write(session: Session, visitor: Visitor, organization: Organization) -> str | None:
        _, password = orgs.add_member(session, organization, visitor.caller.user, username, role)
        return password

    def then(password: str | None) -> Response:
        if password is None:
            return redirect(request, org_path(org, "members"), f"Added {username} as {role}.")
        # A new account: its one-time password is shown on this answer only, never stored.
        with org_access(request, org) as (session, visitor, organization):
            return _members_page(
                request,
                session,
                visitor,
                organization,
                new_password={"username": username, "password": password},
            )

    return _member_write(request, org, write, then, {"username": username, "role": role})


@router.post("/orgs/{org}/members/role")
def change_role(request: Request, org: str, form: Form) -> Response:
    username = forms.text(form, "username")
    role = forms.text(form, "role")
    return _member_write(
        request,
        org,
        lambda s, v, o: orgs.set_role(s, o, v.caller.user, username, role),
        lambda _: redirect(request, org_path(org, "members"), f"{username} is now {role}."),
    )


@router.post("/orgs/{org}/members/remove")
def remove_member(request: Request, org: str, form: Form) -> Response:
    username = forms.text(form, "username")
    if not forms.confirmed(form):
        with org_access(request, org) as (_, visitor, _organization):  # removal checks the role
            return confirmation(
                request,
                visitor,
                org,
                question=f"Remove {username} from {org}?",
                consequence=f"{username} loses access to {org} at once.",
                verb="Remove",
                fields=[("username", username)],
                back=org_path(org, "members"),
            )

    def write(session: Session, visitor: Visitor, organization: Organization) -> bool:
        """Whether the visitor removed themselves."""
        orgs.remove_member(session, organization, visitor.caller.user, username)
        return username == visitor.username

    def then(left: bool) -> Response:
        if left:  # the organization's pages are closed to you now
            return redirect(request, "/", f"You left {org}.")
        return redirect(request, org_path(org, "members"), f"Removed {username} from {org}.")

    return _member_write(request, org, write, then)


@router.post("/orgs/{org}/members/reset-password")
def reset_password(request: Request, org: str, form: Form) -> Response:
    """A new one-time password for a member, shown on this answer only; asks first."""
    username = forms.text(form, "username")
    if not forms.confirmed(form):
        with org_access(request, org, owner=True, write=False) as (_, visitor, _organization):
            return confirmation(
                request,
                visitor,
                org,
                question=f"Reset the password of {username}?",
                consequence=(
                    f"Every sign-in of {username} ends at once; you get a one-time password to "
                    "give them, and they choose their own at their next sign-in. Their access "
                    "tokens and machines keep working."
                ),
                verb="Reset password",
                fields=[("username", username)],
                back=org_path(org, "members"),
            )

    def then(password: str) -> Response:
        first_password.forget(server_of(request).settings.data_dir, username)
        with org_access(request, org) as (session, visitor, organization):
            return _members_page(
                request,
                session,
                visitor,
                organization,
                reset={"username": username, "password": password},
            )

    return _member_write(
        request,
        org,
        lambda s, v, o: orgs.reset_password(s, o, v.caller.user, username),
        then,
    )
