"""The Overview page, the first after sign-in: the fleet at a glance.

GET /orgs/{org}/overview

Machines by state and by the revision they run, denials per day for 30 days and the most
refused registries: each a chart drawn on the server and a table whose counts link to the
Devices or Blocked pulls list with that filter applied.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request, Response
from markupsafe import Markup

from regward.server.dashboard import charts, views
from regward.server.dashboard.charts import Figure
from regward.server.dashboard.context import org_access
from regward.server.dashboard.rendering import org_path, page_router, render
from regward.server.services import overview, registry_access

router = page_router()


@dataclass(frozen=True)
class Row:
    """One figure of a chart's table: what it counts, how many, the list that shows them."""

    label: str
    count: int
    url: str
    tone: str = "neutral"


def minute(moment: datetime) -> str:
    """A time as the filters' date-time fields take it (UTC, to the minute)."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def list_url(org: str, tab: str, **filters: str | int) -> str:
    """The list `tab` with `filters` applied (the address the list's own form makes)."""
    query = urllib.parse.urlencode({key: value for key, value in filters.items()})
    return org_path(org, tab) + (f"?{query}" if query else "")


def _chart(ident: str, title: str, rows: list[Row], unit: str) -> Markup:
    return charts.bars(ident, title, [Figure(r.label, r.count, r.tone) for r in rows], unit)


@router.get("/orgs/{org}/overview")
def overview_page(request: Request, org: str) -> Response:
    with org_access(request, org) as (session, visitor, organization):
        figures = overview.of(session, organization)
        draft = registry_access.get_draft(session, organization)
    current = figures.current_revision
    states = [
        Row(words, figures.states[state], list_url(org, "devices", state=state), tone)
        for state, (words, tone) in views.STATE_WORDS.items()
    ]
    states.append(
        Row("Not seen for 7 days", figures.stale, list_url(org, "devices", seen="stale"), "warn")
    )
    revisions = [
        Row(
            f"Revision {number}" + (" (current)" if number == current else "")
            if number
            else "No revision verified yet",
            count,
            list_url(org, "devices", revision=number),
            "ok" if number == current else "warn",
        )
        for number, count in figures.revisions
    ]
    window = {"from": minute(figures.since), "to": minute(figures.until)}
    days = [
        Row(
            day.strftime("%d %b"),
            count,
            list_url(
                org,
                "blocked",
                **{"from": day.strftime("%Y-%m-%dT00:00")},
                to=(day + timedelta(days=1)).strftime("%Y-%m-%dT00:00"),
            ),
            "bad",
        )
        for day, count in figures.days
    ]
    registries = [
        Row(host, count, list_url(org, "blocked", registry=host, **window), "bad")
        for host, count in figures.registries
    ]
    first, last = figures.days[0][0], figures.days[-1][0]
    return render(
        request,
        "overview.html",
        visitor,
        org=org,
        tab="overview",
        title=f"Overview · {org}",
        figures=figures,
        enabled=bool(draft.applied and draft.applied.enabled),
        pending=len(draft.pending),
        devices_url=org_path(org, "devices"),
        denials_url=list_url(org, "blocked", **window),
        states=states,
        states_chart=_chart("chart-states", "Machines by state", states, "device"),
        revisions=revisions,
        revisions_chart=_chart(
            "chart-revisions", "Machines by the revision they enforce", revisions, "device"
        ),
        days=days,
        days_chart=charts.columns(
            "chart-days",
            "Blocked pulls per day",
            [Figure(r.label, r.count, r.tone) for r in days],
            "denial",
            f"Denials reported for each day from {first:%d %b %Y} to {last:%d %b %Y} (UTC).",
        ),
        registries=registries,
        registries_chart=_chart(
            "chart-registries", "Most refused registries", registries, "denial"
        ),
        period=f"{first:%d %b} to {last:%d %b %Y}",
    )
