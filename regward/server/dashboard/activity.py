"""The Activity page: who changed what and when, filtered and paged.

GET /orgs/{org}/activity?action=&actor=&since=&until=&page=
"""

from __future__ import annotations

from fastapi import Request, Response

from regward.server.dashboard import forms, views
from regward.server.dashboard.context import org_access
from regward.server.dashboard.rendering import org_path, page_router, pager, render, sentence
from regward.server.errors import InvalidInput
from regward.server.services import activity

router = page_router()


@router.get("/orgs/{org}/activity")
def activity_page(
    request: Request,
    org: str,
    action: str = "",
    actor: str = "",
    since: str = "",
    until: str = "",
    page: str = "1",
) -> Response:
    filters = {"action": action, "actor": actor.strip(), "since": since, "until": until}
    number = forms.page_number(page)
    with org_access(request, org) as (session, visitor, organization):
        error = ""
        try:
            result = activity.list(
                session,
                organization,
                action=action or None,
                actor=filters["actor"] or None,
                since=forms.parse_time(since, "From"),
                until=forms.parse_time(until, "Until"),
                page=number,
                page_size=forms.PAGE_SIZE,
            )
            events = [views.event_row(event) for event in result.items]
            total = result.total
        except InvalidInput as invalid:
            error, events, total = sentence(invalid), [], 0

        return render(
            request,
            "activity.html",
            visitor,
            org=org,
            tab="activity",
            title=f"Activity · {org}",
            error=error,
            status=422 if error else 200,
            filters=filters,
            filtered=any(filters.values()),
            action_choices=["registry_access.*", *activity.DESCRIPTIONS],
            events=events,
            **pager(org_path(org, "activity"), filters, number, forms.PAGE_SIZE, total),
        )
