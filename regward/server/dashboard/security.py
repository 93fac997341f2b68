"""Sessions, CSRF tokens and the sign-in rate limit of the dashboard.

The browser holds the same session token the REST API hands out (`auth.sign_in`), in a cookie
that scripts cannot read (HttpOnly) and that other sites' forms do not send (SameSite=Lax).

CSRF tokens need no storage: a signed-in form carries HMAC-SHA256(session token, "csrf"),
which only a holder of the HttpOnly cookie can compute; the sign-in form, before any session
exists, uses a random double-submit cookie. Either way a forged cross-site post fails.

Sign-in attempts are limited per username and per client address with a sliding window
(regward.server.services.limits, one per server: `Server.sign_in_limiter`), so guessing
passwords costs minutes, not milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starlette.requests import Request
from starlette.responses import Response

SESSION_COOKIE = "regward_session"
SIGNIN_CSRF_COOKIE = "regward_signin_csrf"
CSRF_FIELD = "csrf_token"


def csrf_for_session(session_token: str) -> str:
    """The CSRF token every form of this session carries."""
    digest = hmac.new(session_token.encode(), b"regward-dashboard-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def start_session(request: Request, response: Response, token: str, ttl: int) -> None:
    """Give the browser its session: `token` in the HttpOnly, SameSite=Lax session cookie
    (Secure over HTTPS), for `ttl` seconds. Password and SSO sign-ins both end here."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ttl,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )


def new_signin_csrf() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison that treats a missing token as a mismatch."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
