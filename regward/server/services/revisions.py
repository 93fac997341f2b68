"""Revisions across organizations: what a signing-key rotation changes in the database."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from regward.policy import SignedPolicy, sign
from regward.server.models import Revision


def resign_newest(session: Session, key: Ed25519PrivateKey) -> int:
    """Sign each organization's newest revision again with `key` (the policy itself unchanged),
    so the document the feed serves verifies against the rotated key; returns how many."""
    newest = (
        select(Revision.organization_id, func.max(Revision.revision).label("revision"))
        .group_by(Revision.organization_id)
        .subquery()
    )
    rows = session.scalars(
        select(Revision).join(
            newest,
            (Revision.organization_id == newest.c.organization_id)
            & (Revision.revision == newest.c.revision),
        )
    ).all()
    for row in rows:
        policy = SignedPolicy.from_json(row.signed_json).policy
        row.signed_json = sign(policy, key).to_json().decode()
    session.flush()
    return len(rows)
