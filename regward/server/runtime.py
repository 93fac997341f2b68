"""The runtime of one server process: what routes and pages need besides the request."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.requests import Request

from regward.server.db import Database
from regward.server.feed import FeedCache
from regward.server.notify import Notifier
from regward.server.settings import Settings


@dataclass
class Server:
    """Kept on `app.state.server`; built by `create_app(settings)`."""

    settings: Settings
    database: Database
    signing_key: Ed25519PrivateKey
    notifier: Notifier
    feed: FeedCache


def server_of(request: Request) -> Server:
    server: Server = request.app.state.server
    return server
