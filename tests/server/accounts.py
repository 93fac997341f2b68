"""The accounts server tests share: organization `acme` (owner alice, member bob) and an
outsider eve who owns `evilcorp`, all with one password."""

from __future__ import annotations

from regward.server.db import Database
from regward.server.keys import load_or_create
from regward.server.models import Role
from regward.server.services import auth, orgs
from regward.server.settings import Settings

PASSWORD = "correct horse battery"  # noqa: S105 - the test accounts share it


def make_users(database: Database, settings: Settings) -> None:
    key = load_or_create(settings.signing_key_path)
    with database.session(write=True) as session:
        alice = auth.create_user(session, "alice", PASSWORD)
        acme = orgs.create(session, "acme", alice, key)
        orgs.add_member(session, acme, alice, "bob", Role.MEMBER)
        bob = auth.get_user(session, "bob")
        assert bob is not None
        auth.set_password(session, bob, PASSWORD, keep=None)
        eve = auth.create_user(session, "eve", PASSWORD)
        orgs.create(session, "evilcorp", eve, key)
