"""The owners' dashboard: server-rendered pages on the same services as the REST API.

    routes.py     the pages and form posts (sign-in, Registry Access, Activity, Members,
                  Tokens, Devices, Blocked pulls, Test an image)
    views.py      service results worded and formatted for the templates
    device.py     approving a machine's `regward login` (/device)
    sso.py        Sign in with SSO (/auth/sso/login, /auth/sso/callback)
    security.py   session cookie, CSRF tokens, sign-in rate limit
    templates/    Jinja2, autoescaped; static/ one stylesheet, one small optional script

No JavaScript build step and no CDN: every asset is served by the server itself under /static.
`install(app)`, called by `create_app`, adds the pages to the FastAPI app built by `create_app`.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from regward.server.dashboard import device, sso
from regward.server.dashboard.routes import STATIC_DIR, router


def install(app: FastAPI) -> None:
    """Serve the dashboard's pages at / and its assets at /static."""
    app.include_router(router)
    app.include_router(device.router)
    app.include_router(sso.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
