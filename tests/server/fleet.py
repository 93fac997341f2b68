"""A small fleet for the Overview and list tests: devices of `acme` in every state, and
denials on chosen days, written straight to the database so their times are exact.

`acme` has revision 2 applied (Registry Access on). Relative to `now`:

    device      revision  engine              refusal  last seen   state
    cur-full    2         authz + proxy       -        now         current
    cur-none    2         unknown             -        now         current
    cur-noproxy 2         authz, proxy off    -        now         current
    out-stale   1         unknown             -        10 days     outdated (stale)
    out-alice   1         authz + proxy       -        now         outdated (alice's)
    never       0         unknown             -        now         outdated
    ref         1         authz off           yes      now         refused
    unp-authz   2         authz off, proxy    -        now         unprotected
    unp-proxy   1         authz, proxy off(!) -        8 days      unprotected (stale)

Denials (registry, when): ghcr.io x3 today, ghcr.io up to 2 hours after now (an agent's
clock ahead, still today), quay.io x2 yesterday, ghcr.io at the first instant of the 30-day
window, one just before it (outside), one unparseable reference today (no registry); evilcorp
has one today and a device, neither counted for acme.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from regward.server.db import Database
from regward.server.keys import load_or_create
from regward.server.models import Denial, Device
from regward.server.services import auth, orgs, registry_access
from regward.server.settings import Settings

DEVICES = {
    "cur-full": (2, True, True, None, 0),
    "cur-none": (2, None, None, None, 0),
    "cur-noproxy": (2, True, None, None, 0),
    "out-stale": (1, None, None, None, 10),
    "out-alice": (1, True, True, None, 0),
    "never": (0, None, None, None, 0),
    "ref": (1, False, None, "refused revision 2, which does not verify", 0),
    "unp-authz": (2, False, True, None, 0),
    "unp-proxy": (1, True, False, None, 8),
}
STATES = {"current": 3, "outdated": 3, "refused": 1, "unprotected": 2}


def window_start(now: datetime) -> datetime:
    return datetime.combine(now.date() - timedelta(days=29), time(), UTC)


def ahead_of(now: datetime) -> datetime:
    """Two hours after `now`, kept within today (UTC) so the day's count never depends on
    the hour the test runs."""
    return min(now + timedelta(hours=2), datetime.combine(now.date(), time.max, UTC))


def seed_fleet(database: Database, settings: Settings, now: datetime) -> None:
    key = load_or_create(settings.signing_key_path)
    with database.session(write=True) as session:
        acme, evilcorp = orgs.get(session, "acme"), orgs.get(session, "evilcorp")
        alice, bob = auth.get_user(session, "alice"), auth.get_user(session, "bob")
        assert acme and evilcorp and alice and bob
        registry_access.set_enabled(session, acme, alice, True)
        assert registry_access.apply(session, acme, alice, key).revision == 2
        for agent_id, (revision, authz, proxy, refusal, days) in DEVICES.items():
            session.add(
                Device(
                    organization_id=acme.id,
                    agent_id=agent_id,
                    hostname=f"host-{agent_id}",
                    user_id=(alice if agent_id == "out-alice" else bob).id,
                    applied_revision=revision,
                    refusal=refusal,
                    engine_authz=authz,
                    engine_proxy=proxy,
                    first_seen=now - timedelta(days=30),
                    last_seen=now - timedelta(days=days),
                )
            )
        session.add(Device(organization_id=evilcorp.id, agent_id="evil-1", applied_revision=0))
        start = window_start(now)
        denials = [
            *[("ghcr.io/acme/app:1", "ghcr.io", now, acme)] * 3,
            ("ghcr.io/acme/app:1", "ghcr.io", ahead_of(now), acme),
            *[("quay.io/x/y", "quay.io", now - timedelta(days=1), acme)] * 2,
            ("ghcr.io/old/first", "ghcr.io", start, acme),
            ("ghcr.io/old/outside", "ghcr.io", start - timedelta(seconds=1), acme),
            ("NOT A REFERENCE", "", now, acme),
            ("ghcr.io/evil/app", "ghcr.io", now, evilcorp),
        ]
        for reference, host, when, org in denials:
            session.add(
                Denial(
                    organization_id=org.id,
                    user_id=bob.id,
                    agent_id="cur-full",
                    reference=reference,
                    registry_host=host,
                    action="pull",
                    revision=2,
                    reason="Access to registry is restricted",
                    occurred_at=when,
                )
            )
