"""Sessions, CSRF tokens and the sign-in rate limit of the dashboard.

The browser holds the same session token the REST API hands out (`auth.sign_in`), in a cookie
that scripts cannot read (HttpOnly) and that other sites' forms do not send (SameSite=Lax).

CSRF tokens need no storage: a signed-in form carries HMAC-SHA256(session token, "csrf"),
which only a holder of the HttpOnly cookie can compute; the sign-in form, before any session
exists, uses a random double-submit cookie. Either way a forged cross-site post fails.

Sign-in attempts are limited per username and per client address with a sliding window, so
guessing passwords costs minutes, not milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable

from starlette.requests import Request

SESSION_COOKIE = "regward_session"
SIGNIN_CSRF_COOKIE = "regward_signin_csrf"
CSRF_FIELD = "csrf_token"


def csrf_for_session(session_token: str) -> str:
    """The CSRF token every form of this session carries."""
    digest = hmac.new(session_token.encode(), b"regward-dashboard-csrf", hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def new_signin_csrf() -> str:
    return secrets.token_urlsafe(32)


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison that treats a missing token as a mismatch."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


def sign_in_limiter(request: Request) -> SignInLimiter:
    """The server's one count of failed sign-ins, shared by the dashboard's form and the API's
    token endpoint (two doors, one limit); `create_app` makes it."""
    limiter: SignInLimiter = request.app.state.sign_in_limiter
    return limiter


class SignInLimiter:
    """At most `per_user` failed attempts per username and `per_client` per client address
    within `window` seconds; a success clears the username's count."""

    max_keys = 10_000

    def __init__(
        self,
        per_user: int = 5,
        per_client: int = 20,
        window: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_user = per_user
        self.per_client = per_client
        self.window = window
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, username: str, client: str) -> int:
        """Seconds to wait before another attempt is accepted; 0 when one is allowed now."""
        now = self._clock()
        with self._lock:
            waits = [
                self._wait(f"user:{username.lower()}", self.per_user, now),
                self._wait(f"client:{client}", self.per_client, now),
            ]
        return max(waits)

    def failed(self, username: str, client: str) -> None:
        now = self._clock()
        with self._lock:
            if len(self._failures) > self.max_keys:
                self._forget_expired(now)
            for key in (f"user:{username.lower()}", f"client:{client}"):
                self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._failures.pop(f"user:{username.lower()}", None)

    def _forget_expired(self, now: float) -> None:
        # Keeps memory bounded when someone tries many different usernames.
        for key in [k for k, times in self._failures.items() if times[-1] <= now - self.window]:
            del self._failures[key]

    def _wait(self, key: str, limit: int, now: float) -> int:
        times = self._failures.get(key)
        if not times:
            return 0
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return 0
        if len(times) < limit:
            return 0
        return max(1, int(times[0] + self.window - now + 0.999))
