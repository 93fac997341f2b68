"""Access tokens: personal ones for scripts, CI and agents, created on purpose (the value is
shown once, then only a hash), and machines' device tokens from `regward login` (device_auth)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from regward.errors import quote
from regward.server.errors import InvalidInput, NotFound
from regward.server.models import Scope, Token, TokenKind, User, utcnow
from regward.server.services.auth import new_token_value

MAX_NAME_LENGTH = 100
LISTED = (TokenKind.PERSONAL, TokenKind.DEVICE)  # sign-in sessions are not listed


def create(session: Session, user: User, name: str, scope: Scope | str) -> tuple[Token, str]:
    """A new token for `user`: (the row, the value to show once)."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(
            f"token name {quote(name)} must be 1 to {MAX_NAME_LENGTH} characters",
            field="name",
            value=name,
        )
    try:
        scope = Scope(scope)
    except ValueError:
        raise InvalidInput(
            f"scope {quote(scope)} must be 'read' or 'read-write'", field="scope", value=scope
        ) from None
    value, digest = new_token_value(TokenKind.PERSONAL)
    token = Token(
        user_id=user.id, kind=TokenKind.PERSONAL, name=name.strip(), scope=scope, token_hash=digest
    )
    session.add(token)
    session.flush()
    return token, value


def list_for(session: Session, user: User) -> Sequence[Token]:
    """The user's personal access and device tokens, newest first, revoked ones included."""
    return session.scalars(
        select(Token)
        .where(Token.user_id == user.id, Token.kind.in_(LISTED))
        .order_by(Token.id.desc())
    ).all()


def get(session: Session, user: User, token_id: int) -> Token:
    """One of the user's personal access or device tokens; NotFound for anyone else's."""
    token = session.get(Token, token_id)
    if token is None or token.user_id != user.id or token.kind not in LISTED:
        raise NotFound(f"token {token_id} not found")
    return token


def revoke(session: Session, user: User, token_id: int) -> Token:
    """Revoke one of the user's tokens (idempotent); NotFound for anyone else's."""
    token = get(session, user, token_id)
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
    return token
