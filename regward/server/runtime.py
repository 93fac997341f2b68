"""The runtime of one server process: what routes and pages need besides the request."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request

from regward.policy import public_key_to_text
from regward.server.db import Database
from regward.server.feed import FeedAccess, FeedCache
from regward.server.long_polls import LongPolls
from regward.server.notify import Notifier
from regward.server.oidc import OidcClient
from regward.server.services.limits import SignInLimiter
from regward.server.services.tokens import UsageClock
from regward.server.settings import Settings
from regward.server.webhooks import DeliveryQueue


@dataclass
class Server:
    """Kept on `app.state.server`; built by `create_app(settings)`."""

    settings: Settings
    database: Database
    signing_key: Ed25519PrivateKey
    notifier: Notifier
    feed: FeedCache
    feed_access: FeedAccess
    """The feed's token checks, batched across concurrent polls."""
    sign_in_limiter: SignInLimiter
    """The one count of failed sign-ins, shared by the dashboard's form, the API's token
    endpoint and the password change (several doors, one limit)."""
    device_code_limiter: SignInLimiter
    """Wrong codes typed on the device approval page (`regward login`)."""
    token_usage: UsageClock
    """When each token was last used by the API or an agent, to the minute."""
    webhooks: DeliveryQueue
    """Sends queued webhook deliveries in the background (regward.server.webhooks)."""
    key_chain: tuple[dict[str, str], ...] = ()
    """Endorsements of each rotated signing key by the one before (keys.load_chain)."""
    oidc: OidcClient | None = None
    """The OpenID provider's client for "Sign in with SSO", when REGWARD_OIDC_ISSUER is set."""
    _sqlite_writer: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    long_polls: LongPolls = field(init=False, repr=False)
    """The feed's answers and its held long-polls (regward.server.long_polls)."""

    def __post_init__(self) -> None:
        self.long_polls = LongPolls(self)

    @contextlib.asynccontextmanager
    async def write_turn(self) -> AsyncIterator[None]:
        """Held around an organization route's write session on SQLite (one writer at a time).

        Such a session spans three worker-thread hops (open, route, commit) while it holds
        SQLite's write lock. Waiting for the lock in a worker thread instead, a herd of
        writers (hundreds of agents checking in after an apply) took every thread while the
        holder waited for one to commit: all stalled until SQLite's 30 s busy timeout. Here
        they wait in the event loop, holding no thread. PostgreSQL locks rows: no turn."""
        if not self.database.is_sqlite:
            yield
            return
        async with self._sqlite_writer:
            yield

    @functools.cached_property
    def public_key(self) -> str:
        """The signing key's public half as agents pin it (base64)."""
        return public_key_to_text(self.signing_key.public_key())


def server_of(request: Request) -> Server:
    server: Server = request.app.state.server
    return server
