"""How long the Overview's figures and a filtered page of Devices and Blocked pulls take on a
big fleet: 50,000 devices and 200,000 denials in one organization, on SQLite (a file in a
temporary directory, migrated as `regward server init` does) and, where the tests' PostgreSQL
can run (as root, tests/harness/postgres.py), on a PostgreSQL cluster started for the run.

Beside them, in the same run, the baseline they replace: every device and denial of the
organization read into Python and counted there (what the Devices page did before, which
listed every device on one page). Each figure is the best of ROUNDS rounds. Target: the
Overview in under 1 s, and a filtered page in under 0.2 s, at this size.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, select

from regward.server.db import Database
from regward.server.models import Denial, Device
from regward.server.services import denials, devices, orgs, overview
from regward.server.services.devices import Engine, state_of
from regward.server.settings import Settings
from tests.harness.postgres import PostgresCluster, unavailable_reason
from tests.server.accounts import make_users

DEVICES = 50_000
DENIALS = 200_000
ROUNDS = 3
REGISTRIES = [f"registry{n}.example" for n in range(40)] + ["ghcr.io", "quay.io"]


def seed(database: Database, now: datetime, rng: random.Random) -> None:
    with database.session(write=True) as session:
        acme = orgs.get(session, "acme")
        assert acme is not None
        session.execute(
            insert(Device),
            [
                {
                    "organization_id": acme.id,
                    "agent_id": f"agent-{n}",
                    "hostname": f"host-{n}",
                    "applied_revision": rng.choice((0, 1, 1)),
                    "refusal": "refused revision 1" if n % 500 == 0 else None,
                    "engine_authz": rng.choice((None, True, True, False)),
                    "engine_proxy": rng.choice((None, True, True, False)),
                    "first_seen": now - timedelta(days=60),
                    "last_seen": now - timedelta(minutes=rng.randrange(60 * 24 * 14)),
                }
                for n in range(DEVICES)
            ],
        )
        session.execute(
            insert(Denial),
            [
                {
                    "organization_id": acme.id,
                    "agent_id": f"agent-{rng.randrange(DEVICES)}",
                    "reference": "ghcr.io/acme/app:1",
                    "registry_host": rng.choice(REGISTRIES),
                    "action": "pull",
                    "revision": 1,
                    "reason": "restricted",
                    "occurred_at": now - timedelta(minutes=rng.randrange(60 * 24 * 90)),
                    "received_at": now,
                }
                for _ in range(DENIALS)
            ],
        )


def best(work: Callable[[], object]) -> float:
    times = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(directory: str, url: str) -> dict[str, float]:
    """The timings on a migrated, empty database at `url`."""
    rng = random.Random(14)
    now = datetime.now(UTC)
    settings = Settings(data_dir=Path(directory), database_url=url)
    database = Database(settings.database_url)
    database.upgrade()
    make_users(database, settings)
    seed(database, now, rng)
    with database.session() as session:
        acme = orgs.get(session, "acme")
        assert acme is not None

        def grouped() -> object:
            return overview.of(session, acme, now)

        def in_python() -> object:
            # The baseline: every row into Python, counted there.
            states: Counter[str] = Counter()
            for device in session.scalars(select(Device).where(Device.organization_id == acme.id)):
                engine = (
                    None
                    if device.engine_authz is None
                    else Engine(device.engine_authz, device.engine_proxy)
                )
                states[state_of(device.applied_revision, 1, bool(device.refusal), engine)] += 1
            since = now - timedelta(days=30)
            days: Counter[str] = Counter()
            for denial in session.scalars(select(Denial).where(Denial.organization_id == acme.id)):
                if denial.occurred_at >= since:
                    days[denial.occurred_at.date().isoformat()] += 1
            return states, days

        def device_page() -> object:
            where = devices.DeviceFilter.parse(state="outdated", seen="recent")
            return devices.list(session, acme, where, page=3, page_size=25, now=now)

        def denial_page() -> object:
            where = denials.DenialFilter.parse(registry="ghcr.io")
            return denials.list(session, acme, where, page=3, page_size=25)

        figures = overview.of(session, acme, now)
        assert figures.devices == DEVICES, figures.devices
        session.expunge_all()
        timings = {
            "overview_s": best(grouped),
            "device_page_s": best(device_page),
            "denial_page_s": best(denial_page),
            "python_count_baseline_s": best(in_python),
        }
        session.expunge_all()
    database.dispose()
    return timings


def report(kind: str, timings: dict[str, float]) -> None:
    print(f"{DEVICES:,} devices and {DENIALS:,} denials in one organization ({kind})")
    print(f"  {'Overview (grouped queries)':<44} {timings['overview_s']:>8.3f} s")
    baseline = timings["python_count_baseline_s"]
    print(f"  {'baseline: every row counted in Python':<44} {baseline:>8.3f} s")
    print(
        f"  {'Devices, outdated and seen recently, page 3':<44} {timings['device_page_s']:>8.3f} s"
    )
    print(f"  {'Blocked pulls of ghcr.io, page 3':<44} {timings['denial_page_s']:>8.3f} s")
    ratio = baseline / timings["overview_s"]
    print(f"  speed-up over the baseline: {ratio:.1f}x (targets: Overview < 1 s, a page < 0.2 s)")


def main() -> None:
    figures: dict[str, object] = {"devices": DEVICES, "denials": DENIALS}
    with tempfile.TemporaryDirectory(prefix="rw-bench-overview-") as directory:
        timings = measure(directory, f"sqlite:///{directory}/regward.db")
    report("SQLite", timings)
    figures |= {f"sqlite_{key}": round(value, 4) for key, value in timings.items()}
    reason = unavailable_reason()
    if reason:
        print(f"PostgreSQL skipped: {reason}")
    else:
        cluster = PostgresCluster.start(prefix="rw-bench-overview-pg-")
        try:
            with tempfile.TemporaryDirectory(prefix="rw-bench-overview-") as directory:
                timings = measure(directory, cluster.create_database("rw_bench_overview"))
        finally:
            cluster.stop()
        report("PostgreSQL", timings)
        figures |= {f"postgresql_{key}": round(value, 4) for key, value in timings.items()}
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
