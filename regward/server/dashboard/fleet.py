"""The machines' side: Devices, Blocked pulls, and Test an image.

GET /orgs/{org}/devices?state=&revision=&user=&seen=&search=&page=
GET /orgs/{org}/devices.csv?(the same filters)   every matching device, as a CSV file
POST /orgs/{org}/devices/revoke (a machine's own token)
GET /orgs/{org}/blocked?registry=&user=&device=&action=&revision=&from=&to=&page=
GET /orgs/{org}/blocked.csv?(the same filters)   every matching denial, as a CSV file
GET /orgs/{org}/test?image=&action=pull|push   (against the draft and the applied revision)

The lists' filters are a GET form, so a filtered list is an address to share or bookmark, and
every page link keeps them; a filter the services refuse shows the list's page with the reason
(422), never an error page.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from fastapi import Request, Response

from regward.errors import RegwardError
from regward.policy import Action, ImageReference, Policy, evaluate
from regward.policy.text import shown
from regward.server.dashboard import forms, views
from regward.server.dashboard.context import Form, org_access
from regward.server.dashboard.exports import csv_response
from regward.server.dashboard.rendering import (
    confirmation,
    org_path,
    page_router,
    pager,
    redirect,
    render,
    sentence,
)
from regward.server.errors import InvalidInput
from regward.server.runtime import server_of
from regward.server.services import denials, devices, overview, registry_access

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
        label += f" ({shown(entry.nickname)})"
    return {
        "title": title,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "entry": label,
    }


def _query(request: Request, names: tuple[str, ...]) -> dict[str, str]:
    """The list's filters as typed (the last value of each; absent ones empty)."""
    return {name: request.query_params.get(name, "") for name in names}


DEVICE_FILTERS = ("state", "revision", "user", "seen", "search")
DENIAL_FILTERS = ("registry", "user", "device", "action", "revision", "from", "to")


def _denial_filter(filters: dict[str, str]) -> denials.DenialFilter:
    """The page's filter fields read as a filter (their times are UTC, the page says so)."""
    typed = {key: value for key, value in filters.items() if key not in ("from", "to")}
    return denials.DenialFilter.parse(
        **typed, since=filters["from"], until=filters["to"], naive_is_utc=True
    )


def _csv_url(path: str, filters: dict[str, str]) -> str:
    kept = {key: value for key, value in filters.items() if value}
    return path + ("?" + urllib.parse.urlencode(kept) if kept else "")


@router.get("/orgs/{org}/devices")
def devices_page(request: Request, org: str, page: str = "1") -> Response:
    filters = _query(request, DEVICE_FILTERS)
    number = forms.page_number(page)
    with org_access(request, org) as (session, visitor, organization):
        error, rows, total = "", [], 0
        try:
            where = devices.DeviceFilter.parse(**filters)
            result = devices.list(
                session, organization, where, page=number, page_size=forms.PAGE_SIZE
            )
            rows = [views.device_row(status) for status in result.items]
            total = result.total
        except InvalidInput as invalid:
            error = sentence(invalid)
        current = devices.current_revision(session, organization)
        states = overview.device_states(session, organization, current)
        return render(
            request,
            "devices.html",
            visitor,
            org=org,
            tab="devices",
            title=f"Devices · {org}",
            status=422 if error else 200,
            error=error,
            filters=filters,
            filtered=any(value.strip() for value in filters.values()),
            state_choices=tuple((state, words) for state, (words, _) in views.STATE_WORDS.items()),
            devices=rows,
            total=total,
            all_devices=sum(states.values()),
            states=states,
            applied_revision=current,
            can_revoke=visitor.is_owner(org),
            stale_choices=devices.STALE_CHOICES,
            signing_key=server_of(request).public_key,
            csv_url=_csv_url(org_path(org, "devices.csv"), filters),
            **pager(org_path(org, "devices"), filters, number, forms.PAGE_SIZE, total),
            newer_label="Previous",
            older_label="Next",
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


@router.post("/orgs/{org}/devices/remove-stale")
def remove_stale_devices(request: Request, org: str, form: Form) -> Response:
    """An owner removes the devices not seen for the chosen number of days; asks first, naming
    how many."""
    days = forms.whole_number(forms.text(form, "days")) or 0
    back = org_path(org, "devices")
    if not forms.confirmed(form):
        with org_access(request, org, owner=True, write=False) as (session, visitor, organization):
            count = len(devices.stale(session, organization, days))
            if not count:
                return redirect(request, back, f"No device has gone unseen for {days} days.")
            plural = "s" if count != 1 else ""
            return confirmation(
                request,
                visitor,
                org,
                question=f"Remove {count} device{plural} not seen for {days} days?",
                consequence=(
                    "They leave the Devices list and their device tokens are revoked. A machine "
                    "that comes back is signed in again with regward login and reappears at its "
                    "next check-in; the blocked pulls it reported stay."
                ),
                verb="Remove",
                fields=[("days", str(days))],
                back=back,
            )
    with org_access(request, org, owner=True) as (session, visitor, organization):
        count = devices.remove_stale(session, organization, visitor.caller.user, days)
    plural = "s" if count != 1 else ""
    return redirect(request, back, f"Removed {count} device{plural} not seen for {days} days.")


@router.get("/orgs/{org}/devices.csv")
def devices_csv(request: Request, org: str) -> Response:
    with org_access(request, org) as (session, _, organization):
        where = devices.DeviceFilter.parse(**_query(request, DEVICE_FILTERS))
        return csv_response(
            f"{org}-devices",
            views.DEVICE_CSV_HEADER,
            (
                views.device_csv_row(status)
                for status in devices.export(session, organization, where)
            ),
        )


@router.get("/orgs/{org}/blocked.csv")
def blocked_csv(request: Request, org: str) -> Response:
    with org_access(request, org) as (session, _, organization):
        where = _denial_filter(_query(request, DENIAL_FILTERS))
        return csv_response(
            f"{org}-blocked-pulls",
            views.DENIAL_CSV_HEADER,
            (
                views.denial_csv_row(denial)
                for denial in denials.export(session, organization, where)
            ),
        )


@router.get("/orgs/{org}/blocked")
def blocked_page(request: Request, org: str, page: str = "1") -> Response:
    filters = _query(request, DENIAL_FILTERS)
    number = forms.page_number(page)
    with org_access(request, org) as (session, visitor, organization):
        error, rows, total = "", [], 0
        try:
            where = _denial_filter(filters)
            result = denials.list(
                session, organization, where, page=number, page_size=forms.PAGE_SIZE
            )
            rows = [views.denial_row(item) for item in result.items]
            total = result.total
        except InvalidInput as invalid:
            error = sentence(invalid)
        return render(
            request,
            "blocked.html",
            visitor,
            org=org,
            tab="blocked",
            title=f"Blocked pulls · {org}",
            status=422 if error else 200,
            error=error,
            filters=filters,
            filtered=any(value.strip() for value in filters.values()),
            denials=rows,
            total=total,
            can_edit=visitor.is_owner(org),
            csv_url=_csv_url(org_path(org, "blocked.csv"), filters),
            **pager(org_path(org, "blocked"), filters, number, forms.PAGE_SIZE, total),
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
