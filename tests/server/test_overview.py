"""The Overview's figures: counted in the database (SQLite and PostgreSQL), each equal to the
length of the filtered list its link opens."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import select, text

from regward.server.dashboard.views import STATE_WORDS
from regward.server.db import Database
from regward.server.models import Device
from regward.server.services import devices, orgs, overview
from regward.server.services.devices import Engine, state_column, state_of
from regward.server.settings import Settings
from tests.server.accounts import make_users
from tests.server.conftest import World
from tests.server.fleet import DEVICES, STATES, seed_fleet, window_start

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def fleet(database: Database, settings: Settings) -> Database:
    make_users(database, settings)
    seed_fleet(database, settings, NOW)
    return database


def test_overview_counts_devices_by_state_revision_and_denials_by_day(fleet: Database) -> None:
    with fleet.session() as session:
        if session.get_bind().dialect.name == "postgresql":
            # Days are UTC days whatever the database session's zone (here UTC+14).
            session.execute(text("SET TIME ZONE 'Pacific/Kiritimati'"))
        acme = orgs.get(session, "acme")
        assert acme is not None
        figures = overview.of(session, acme, NOW)
    assert figures.current_revision == 2
    assert figures.devices == len(DEVICES) == sum(figures.states.values())
    assert figures.states == STATES
    assert figures.stale == 2
    assert figures.revisions == [(2, 4), (1, 4), (0, 1)]
    assert len(figures.days) == 30
    assert figures.days[0] == (date(2026, 11, 3), 1)  # the window's first instant counts
    assert figures.days[-2] == (date(2026, 12, 1), 2)
    assert figures.days[-1] == (date(2026, 12, 2), 5)  # 3 + 1 ahead of time + 1 unparseable
    assert sum(count for _, count in figures.days[1:-2]) == 0
    assert figures.denials == 8
    assert figures.registries == [("ghcr.io", 5), ("quay.io", 2)]
    assert figures.since == window_start(NOW)
    assert figures.until == datetime(2026, 12, 3, tzinfo=UTC)


def test_state_in_sql_is_state_of_in_python(database: Database, settings: Settings) -> None:
    """Every combination of refusal, engine report and revision gets the same state from the
    database's CASE (counts, filters) as from `state_of` (one device's page)."""
    make_users(database, settings)
    combos = list(
        itertools.product((None, "refused"), (None, True, False), (None, True, False), (0, 1, 2))
    )
    with database.session(write=True) as session:
        acme = orgs.get(session, "acme")
        assert acme is not None
        for n, (refusal, authz, proxy, revision) in enumerate(combos):
            session.add(
                Device(
                    organization_id=acme.id,
                    agent_id=f"d{n}",
                    applied_revision=revision,
                    refusal=refusal,
                    engine_authz=authz,
                    engine_proxy=None if authz is None else proxy,
                )
            )
    with database.session() as session:
        rows = session.execute(select(Device.agent_id, state_column(1))).all()
    by_sql = dict(rows)
    for n, (refusal, authz, proxy, revision) in enumerate(combos):
        engine = None if authz is None else Engine(authz, proxy)
        assert by_sql[f"d{n}"] == state_of(revision, 1, refusal is not None, engine), (
            refusal,
            authz,
            proxy,
            revision,
        )


def test_device_filters_select_in_the_database(fleet: Database) -> None:
    with fleet.session() as session:
        acme = orgs.get(session, "acme")
        assert acme is not None

        def ids(**typed: str) -> set[str]:
            where = devices.DeviceFilter.parse(**typed)
            page = devices.list(session, acme, where, page_size=500, now=NOW)
            assert page.total == len(page.items)
            return {status.device.agent_id for status in page.items}

        assert ids(state="refused") == {"ref"}
        assert ids(state="unprotected") == {"unp-authz", "unp-proxy"}
        assert ids(state="outdated") == {"out-stale", "out-alice", "never"}
        assert ids(state="current", revision="2") == {"cur-full", "cur-none", "cur-noproxy"}
        assert ids(revision=" 0 ") == {"never"}
        assert ids(user="alice") == {"out-alice"}
        assert ids(user="nobody") == set()
        assert ids(seen="stale") == {"out-stale", "unp-proxy"}
        assert len(ids(seen="recent")) == len(DEVICES) - 2
        assert ids(search="UNP-") == {"unp-authz", "unp-proxy"}
        assert ids(search="%") == set()  # a wildcard is a character here
        assert ids(state="outdated", seen="stale", user="bob") == {"out-stale"}


COUNT_LINK = re.compile(r'<a href="(/orgs/acme/(?:devices|blocked)[^"]*)" aria-label="(\d+): ')
LISTED = re.compile(r'id="(?:devices|denials)-count">(\d+) ')


def test_every_count_on_the_overview_opens_a_list_of_that_length(world: World) -> None:
    seed_fleet(world.database, world.settings, datetime.now(UTC))
    c = world.client
    c.cookies.set("regward_session", world.tokens["bob"])  # members see the Overview too
    page = c.get("/orgs/acme/overview")
    assert page.status_code == 200
    links = [(url.replace("&amp;", "&"), int(n)) for url, n in COUNT_LINK.findall(page.text)]
    # 5 states, 3 revisions, 30 days, 2 registries
    assert len(links) == 40
    assert ("/orgs/acme/devices?state=refused", 1) in links
    assert ("/orgs/acme/devices?seen=stale", 2) in links
    assert ("/orgs/acme/devices?revision=0", 1) in links
    for url, count in links:
        listed = c.get(url)
        assert listed.status_code == 200, url
        found = LISTED.search(listed.text)
        assert (int(found.group(1)) if found else 0) == count, url
    # The Devices page's banners count as the Overview does, and link the same lists.
    devices_page = c.get("/orgs/acme/devices").text
    assert "3 of 9 devices are outdated: they enforce an older revision (a device" in devices_page
    assert '<a href="/orgs/acme/devices?state=outdated">Show them</a>' in devices_page
    assert 'role="img"' in page.text and '<title id="chart-states-title">' in page.text
    assert "Refused a revision: 1 device." in page.text  # the chart's <desc>


def test_sign_in_opens_the_overview(world: World) -> None:
    c = world.client
    c.cookies.set("regward_session", world.tokens["alice"])
    answer = c.get("/", follow_redirects=False)
    assert answer.headers["location"] == "/orgs/acme/overview"
    assert c.get("/orgs/acme", follow_redirects=False).headers["location"] == (
        "/orgs/acme/overview"
    )
    page = c.get("/orgs/acme/overview").text
    assert "No device has checked in yet" in page
    assert "No pull was refused in the last 30 days" in page
    assert c.get("/orgs/evilcorp/overview").status_code == 404


STATUS = re.compile(
    r'<td data-label="Status" data-state="(\w+)"><span class="tag tag-(\w+)">([^<]+)</span>'
)


def test_each_device_s_status_is_the_state_the_overview_counts_it_in(world: World) -> None:
    """One function decides both: a device on the current revision whose Docker Engine is not
    protected (or that refused a revision) is not shown "current" on Devices while the
    Overview counts it among the unprotected (or refused) ones."""
    seed_fleet(world.database, world.settings, datetime.now(UTC))
    c = world.client
    c.cookies.set("regward_session", world.tokens["alice"])
    overview_page = c.get("/orgs/acme/overview").text
    for state, (words, tone) in STATE_WORDS.items():
        counted = re.search(
            rf'<a href="/orgs/acme/devices\?state={state}" aria-label="(\d+): ', overview_page
        )
        assert counted, state
        statuses = STATUS.findall(c.get(f"/orgs/acme/devices?state={state}").text)
        assert len(statuses) == int(counted.group(1)) == STATES[state], state
        assert set(statuses) == {(state, tone, words)}, state
    everything = STATUS.findall(c.get("/orgs/acme/devices").text)
    assert len(everything) == len(DEVICES)
