"""The runtime of one server process: what routes and pages need besides the request."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends
from starlette.requests import Request

from regward.policy import public_key_to_text
from regward.server.db import Database, WriteTurn
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
    write_turn: WriteTurn
    """Held around every write session on SQLite (one writer at a time, waiting in the event
    loop): routes and dashboard forms take it through `WriteTurnDep`."""
    key_chain: tuple[dict[str, str], ...] = ()
    """Endorsements of each rotated signing key by the one before (keys.load_chain)."""
    oidc: OidcClient | None = None
    """The OpenID provider's client for "Sign in with SSO", when REGWARD_OIDC_ISSUER is set."""
    long_polls: LongPolls = field(init=False, repr=False)
    """The feed's answers and its held long-polls (regward.server.long_polls)."""

    def __post_init__(self) -> None:
        self.long_polls = LongPolls(self)

    @functools.cached_property
    def public_key(self) -> str:
        """The signing key's public half as agents pin it (base64)."""
        return public_key_to_text(self.signing_key.public_key())


def server_of(request: Request) -> Server:
    server: Server = request.app.state.server
    return server


async def _write_turn(request: Request) -> AsyncIterator[None]:
    async with server_of(request).write_turn():
        yield


WriteTurnDep = Annotated[None, Depends(_write_turn, scope="function")]
"""A writing route's turn (`Server.write_turn`): taken once the dependencies before it in
the route's signature are resolved, left after the route returns and its session committed
(dependencies unwind in reverse). Put it after any dependency that reads the request body or
does slow work that needs no lock."""
