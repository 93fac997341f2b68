"""The sign-in limit: at most `per_user` failed password checks per username and `per_client`
per client address within `window` seconds, counted in the database.

In the database, so several server processes behind a load balancer count the same failures
(a guesser gains nothing by spreading attempts over replicas) and a restart forgets none. The
API's token endpoint, the dashboard's sign-in form and the password change share one count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from regward.server.db import Database
from regward.server.models import SignInFailure, utcnow

MAX_KEY = 300
PER_USER, PER_CLIENT, WINDOW = 5, 20, 300.0


class SignInLimiter:
    """Failed sign-ins by username and by client address; a success clears the username's."""

    def __init__(
        self,
        database: Database,
        per_user: int = PER_USER,
        per_client: int = PER_CLIENT,
        window: float = WINDOW,
        clock: Callable[[], datetime] = utcnow,
        prefix: str = "",
    ) -> None:
        self.per_user = per_user
        self.per_client = per_client
        self.window = timedelta(seconds=window)
        self._database = database
        self._clock = clock
        self.failures = 0  # counted by this process since it started, for its metrics
        self._prefix = prefix  # keeps another count (wrong device codes) apart from sign-ins

    def retry_after(self, username: str, client: str) -> int:
        """Seconds to wait before another attempt is accepted; 0 when one is allowed now."""
        now = self._clock()
        limits = {self._user(username): self.per_user, self._client(client): self.per_client}
        with self._database.session() as session:
            rows = session.execute(
                select(SignInFailure.key, func.count(), func.min(SignInFailure.at))
                .where(SignInFailure.key.in_(limits), SignInFailure.at > now - self.window)
                .group_by(SignInFailure.key)
            ).all()
        waits = [
            max(1, math.ceil((first + self.window - now).total_seconds()))
            for key, count, first in rows
            if count >= limits[key]
        ]
        return max(waits, default=0)

    def failed(self, username: str, client: str) -> None:
        """Count a failure (in its own transaction: call it outside any write session)."""
        self.failures += 1
        now = self._clock()
        with self._database.session(write=True) as session:
            session.execute(delete(SignInFailure).where(SignInFailure.at <= now - self.window))
            session.add_all(
                [
                    SignInFailure(key=self._user(username), at=now),
                    SignInFailure(key=self._client(client), at=now),
                ]
            )

    def succeeded(self, username: str) -> None:
        with self._database.session(write=True) as session:
            session.execute(delete(SignInFailure).where(SignInFailure.key == self._user(username)))

    def _user(self, username: str) -> str:
        return f"{self._prefix}user:{username.lower()}"[:MAX_KEY]

    def _client(self, client: str) -> str:
        return f"{self._prefix}client:{client}"[:MAX_KEY]
