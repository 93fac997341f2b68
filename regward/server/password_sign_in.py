"""Signing in with a password, for the API's token endpoint and the dashboard's form alike.

The password's argon2 check is slow and needs no lock: it runs first, in a read session; then,
in the write turn (`Server.write_turn`), one short write session makes the sign-in token and the
limiter counts the attempt. The limit itself (`SignInLimiter.retry_after`) is the caller's to
check first: each door answers a refusal in its own way.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from regward.server.errors import Unauthenticated
from regward.server.models import User
from regward.server.runtime import Server
from regward.server.services import auth


@dataclass(frozen=True)
class SignedIn:
    token: str
    password_one_time: bool
    """The password is one-time (someone else chose it): the dashboard asks for a new one."""


async def sign_in(server: Server, username: str, password: str, client: str) -> SignedIn:
    """A new sign-in token for `username`; Unauthenticated (counted by the limiter) for a wrong
    username or password, PermissionDenied when an organization of theirs requires SSO."""

    def check() -> auth.CheckedPassword | None:
        with server.database.session() as session:
            try:
                return auth.verify_password(session, username, password)
            except Unauthenticated:
                return None

    checked = await run_in_threadpool(check)

    def write() -> SignedIn:
        limiter = server.sign_in_limiter
        try:
            if checked is None:
                raise Unauthenticated("wrong username or password")
            with server.database.session(write=True) as session:
                token = auth.sign_in_checked(session, checked, server.settings.session_ttl)
                user = session.get(User, checked.user_id)
                one_time = user is not None and user.password_one_time
        except Unauthenticated:
            limiter.failed(username, client)
            raise
        limiter.succeeded(username)
        return SignedIn(token, one_time)

    return await server.write_turn.run(write)
