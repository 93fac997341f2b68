"""The owners' dashboard: server-rendered pages on the same services as the REST API.

    rendering.py        templates, security headers, redirects with a notice, and the route
                        class turning early exits and services' errors into pages
    context.py          the visitor, their organization (access checked), the CSRF-checked form
    forms.py            what the user typed, read into typed values (entry forms, pages, times)
    views.py            service results worded and formatted for the templates
    security.py         session cookie, CSRF tokens
    signin.py           /, /signin, /signout, /switch
    overview.py         Overview, the first page: the fleet by state, revision, denials
    charts.py           the Overview's charts, drawn as inline SVG
    registry_access.py  the Registry Access page: toggle, entries, Save & Apply, Edit
    activity.py         Activity
    members.py          Members
    account.py          Tokens and the account (password)
    fleet.py            Devices, Blocked pulls, Test an image
    device.py           /device: approve or deny a machine's `regward login`
    webhooks.py         Webhooks: URLs, "Send test event" and the delivery log (owners)
    sso.py              Sign in with SSO (/auth/sso/login, /auth/sso/callback) and the
                        organization's Single sign-on page
    templates/          Jinja2, autoescaped; static/ one stylesheet, one small optional script

Reads use a read session; each write one write session, so a failed write changes nothing. No
JavaScript build step and no CDN: every asset is served by the server itself under /static.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from regward.server.dashboard import (
    account,
    activity,
    device,
    fleet,
    members,
    overview,
    registry_access,
    signin,
    sso,
    webhooks,
)
from regward.server.dashboard.rendering import STATIC_DIR

PAGE_GROUPS = (
    signin,
    overview,
    registry_access,
    activity,
    members,
    account,
    fleet,
    device,
    sso,
    webhooks,
)


def install(app: FastAPI) -> None:
    """Serve the dashboard's pages at / and its assets at /static; `create_app` calls it."""
    for group in PAGE_GROUPS:
        app.include_router(group.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
