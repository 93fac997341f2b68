"""The machines' side: Devices, Blocked pulls, and Test an image.

GET /orgs/{org}/devices          POST /orgs/{org}/devices/revoke (a machine's own token)
GET /orgs/{org}/blocked?page=
GET /orgs/{org}/test?image=&action=pull|push   (against the draft and the applied revision)
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from regward.errors import RegwardError
from regward.policy import Action, ImageReference, Policy, evaluate
from regward.server.dashboard import forms, views
from regward.server.dashboard.context import Form, org_access
from regward.server.dashboard.rendering import (
    confirmation,
    org_path,
    page_router,
    redirect,
    render,
    sentence,
)
from regward.server.runtime import server_of
from regward.server.services import denials, devices, registry_access

router = page_router()


def _versions(state: registry_access.DraftState) -> list[tuple[str, Policy]]:
    """What to test against: the applied revision, and the draft when it differs (as the
    revision Save & Apply would make it); a draft with nothing pending is the applied one."""
    applied = state.applied
    if applied is None:
        return [("Draft, not applied yet", state.policy)]
    current = f"Applied revision {applied.revision}"
    if not state.pending:
        return [(f"{current} (the draft is the same)", applied)]
    return [
        (
            f"Draft, with pending changes (revision {state.policy.revision} once applied)",
            state.policy,
        ),
        (current, applied),
    ]


def _result(
    title: str, policy: Policy, action: Action, reference: ImageReference
) -> dict[str, Any]:
    decision = evaluate(policy, action, reference)
    entry = decision.entry
    label = (
        views.entry_label(str(entry.address), (str(p) for p in entry.repositories)) if entry else ""
    )
    if entry and entry.nickname:
        label += f" ({entry.nickname})"
    return {
        "title": title,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "entry": label,
    }


@router.get("/orgs/{org}/devices")
def devices_page(request: Request, org: str) -> Response:
    with org_access(request, org) as (session, visitor, organization):
        rows = [views.device_row(status) for status in devices.list(session, organization)]
        applied = registry_access.current(session, organization)
        return render(
            request,
            "devices.html",
            visitor,
            org=org,
            tab="devices",
            title=f"Devices · {org}",
            devices=rows,
            outdated_count=sum(row.outdated for row in rows),
            refused_count=sum(bool(row.refusal) for row in rows),
            unprotected_count=sum(bool(row.engine_problem) for row in rows),
            applied_revision=applied.revision if applied else 0,
            can_revoke=visitor.is_owner(org),
            signing_key=server_of(request).public_key,
        )


@router.post("/orgs/{org}/devices/revoke")
def revoke_device(request: Request, org: str, form: Form) -> Response:
    """An owner revokes a machine's device token: its sync stops, its last policy stays."""
    agent_id = forms.text(form, "agent_id")
    if not forms.confirmed(form):
        with org_access(request, org, owner=True, write=False) as (_, visitor, _organization):
            return confirmation(
                request,
                visitor,
                org,
                question=f"Revoke the token of {agent_id}?",
                consequence="The machine stops syncing at once and keeps enforcing the last "
                "policy it verified; someone signs it in again with regward login.",
                verb="Revoke",
                fields=[("agent_id", agent_id)],
                back=org_path(org, "devices"),
            )
    with org_access(request, org, owner=True) as (session, visitor, organization):
        revoked = devices.revoke_token(session, organization, visitor.caller.user, agent_id)
        name = revoked[-1].name
    return redirect(
        request, org_path(org, "devices"), f"Revoked the token of {name}: its sync has stopped."
    )


@router.get("/orgs/{org}/blocked")
def blocked_page(request: Request, org: str, page: str = "1") -> Response:
    number = forms.page_number(page)
    with org_access(request, org) as (session, visitor, organization):
        result = denials.list(session, organization, page=number, page_size=forms.PAGE_SIZE)
        base = org_path(org, "blocked") + "?page="
        return render(
            request,
            "blocked.html",
            visitor,
            org=org,
            tab="blocked",
            title=f"Blocked pulls · {org}",
            denials=[views.denial_row(item) for item in result.items],
            can_edit=visitor.is_owner(org),
            newer_url=f"{base}{number - 1}" if number > 1 else None,
            older_url=f"{base}{number + 1}" if number * forms.PAGE_SIZE < result.total else None,
        )


@router.get("/orgs/{org}/test")
def test_image(request: Request, org: str, image: str = "", action: str = "pull") -> Response:
    with org_access(request, org) as (session, visitor, organization):
        chosen = Action.PUSH if action == "push" else Action.PULL
        results: list[dict[str, Any]] = []
        error = normalized = ""
        if image.strip():
            try:
                reference = ImageReference.parse(image.strip())
            except RegwardError as invalid:
                error = sentence(invalid)
            else:
                normalized = str(reference)
                # One read of the draft and one of the applied revision.
                state = registry_access.get_draft(session, organization)
                results = [
                    _result(title, policy, chosen, reference) for title, policy in _versions(state)
                ]
        return render(
            request,
            "test_image.html",
            visitor,
            org=org,
            tab="test",
            title=f"Test an image · {org}",
            status=422 if error else 200,
            image=image,
            action=str(chosen),
            image_error=error,
            normalized=normalized,
            results=results,
        )
