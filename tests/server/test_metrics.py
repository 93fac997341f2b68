"""GET /metrics: Prometheus text for the bearer of REGWARD_METRICS_TOKEN, 404 for anyone else;
parsed here with prometheus_client's own parser."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from regward.server.api.feed import ROUTE
from regward.server.observe import Caller, held, record
from regward.server.settings import Settings
from tests.harness.wait import wait_for
from tests.server.conftest import World

TOKEN = "scrape-me-0123456789"  # noqa: S105 - the test's own metrics token


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url, metrics_token=TOKEN)


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(world: World) -> Samples:
    answer = world.client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_only_for_the_bearer_of_the_token(world: World) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = world.client.get("/metrics", headers=headers)
        assert answer.status_code == 404
        assert answer.json() == {"detail": "Not Found"}
    assert scrape(world)  # the right token


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_without_the_setting_metrics_do_not_exist(world: World) -> None:
    world.app.state.server.settings = Settings(
        data_dir=world.settings.data_dir, database_url=world.settings.database_url
    )
    answer = world.client.get("/metrics", headers={"Authorization": "Bearer "})
    assert answer.status_code == 404


def test_the_series_operators_watch(world: World) -> None:
    c, alice, bob = world.client, world.headers("alice"), world.headers("bob")
    before = scrape(world)
    assert value(before, "regward_policy_revision", organization="acme") == 1
    c.post(
        "/api/v1/orgs/acme/registry-access/registries", json={"address": "ghcr.io"}, headers=alice
    )
    assert c.post("/api/v1/orgs/acme/registry-access/apply", headers=alice).status_code == 200
    for agent, revision, refusal, engine in (
        ("a1", 2, None, {"authz": True, "proxy": True}),
        ("a2", 1, None, None),
        ("a3", 2, "revision 3 does not verify", {"authz": True, "proxy": True}),
        ("a4", 2, None, {"authz": False, "proxy": None}),
        ("a5", 2, None, {"authz": True, "proxy": False}),
    ):
        answer = c.post(
            "/api/v1/orgs/acme/devices/check-in",
            json={"agent_id": agent, "revision": revision, "refusal": refusal, "engine": engine},
            headers=bob,
        )
        assert answer.status_code < 300, answer.text
    denial = {"agent_id": "a1", "reference": "quay.io/x/y:1", "action": "pull", "revision": 2}
    answer = c.post("/api/v1/orgs/acme/denials", json={"denials": [denial, denial]}, headers=bob)
    assert answer.status_code < 300, answer.text
    wrong = c.post("/api/v1/auth/token", json={"username": "alice", "password": "not it at all"})
    assert wrong.status_code == 401
    c.get("/api/v1/orgs/acme", headers=alice)

    after = scrape(world)
    assert value(after, "regward_policy_revision", organization="acme") == 2
    assert value(after, "regward_policy_applies_total", organization="acme") == 1
    assert value(after, "regward_policy_applies_total", organization="evilcorp") == 0
    devices = {
        state: value(after, "regward_devices", organization="acme", state=state)
        for state in ("current", "outdated", "refused", "unprotected")
    }
    assert devices == {"current": 1, "outdated": 1, "refused": 1, "unprotected": 2}
    assert value(after, "regward_denial_reports_total", organization="acme") == 2
    assert value(after, "regward_sign_in_failures_total") == 1
    org_route = {"method": "GET", "route": "/api/v1/orgs/{org}"}
    assert value(after, "regward_http_requests_total", status="200", **org_route) == 1
    assert value(after, "regward_http_request_duration_seconds_count", **org_route) == 1
    assert (
        value(after, "regward_http_requests_total", method="POST", route="/api/v1/auth/token") == 0
    )  # every series has its status
    assert (
        value(
            after,
            "regward_http_requests_total",
            method="POST",
            route="/api/v1/auth/token",
            status="401",
        )
        == 1
    )


def test_held_long_polls_are_counted(world: World) -> None:
    url = "/api/v1/orgs/acme/policy?after=1&wait=60"
    answers: list[httpx.Response] = []
    poll = threading.Thread(
        target=lambda: answers.append(world.client.get(url, headers=world.headers("bob")))
    )
    poll.start()
    try:
        wait_for(
            lambda: value(scrape(world), "regward_feed_long_polls_held", organization="acme") == 1,
            30,
            "the poll to be held",
        )
        alice = world.headers("alice")
        world.client.put(
            "/api/v1/orgs/acme/registry-access/enabled", json={"enabled": True}, headers=alice
        )
        world.client.post("/api/v1/orgs/acme/registry-access/apply", headers=alice)
    finally:
        poll.join(60)
    assert answers[0].status_code == 200
    samples = scrape(world)
    assert value(samples, "regward_feed_long_polls_held", organization="acme") == 0
    feed = {"method": "GET", "route": "/api/v1/orgs/{org}/policy", "status": "200"}
    assert value(samples, "regward_http_requests_total", **feed) == 1


def test_requests_recorded_while_held_count_and_log_when_the_hold_ends(
    world: World, json_lines: io.StringIO
) -> None:
    metrics = world.app.state.metrics
    timed = {"method": "GET", "route": ROUTE}
    before = scrape(world)
    with held():  # as the feed answers the polls an apply wakes
        for status, seconds in ((200, 0.2), (200, 3.0), (401, 0.01)):
            record(metrics, "GET", ROUTE, status, seconds, Caller(None, 7), f"held-{status}")
        inside = scrape(world)  # served by another thread: not held
        logged_inside = json_lines.getvalue()
    after = scrape(world)
    for samples in (before, inside):
        assert value(samples, "regward_http_requests_total", **timed, status="200") == 0
        assert value(samples, "regward_http_request_duration_seconds_count", **timed) == 0
    assert value(after, "regward_http_requests_total", **timed, status="200") == 2
    assert value(after, "regward_http_requests_total", **timed, status="401") == 1
    bucket = "regward_http_request_duration_seconds_bucket"
    assert value(after, bucket, **timed, le="0.25") == 2
    assert value(after, bucket, **timed, le="2.5") == 2
    assert value(after, bucket, **timed, le="5.0") == 3
    assert "held-" not in logged_inside
    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    held_lines = [e for e in lines if str(e.get("request_id", "")).startswith("held-")]
    assert [(e["status"], e["duration_ms"], e["token_id"]) for e in held_lines] == [
        (200, 200.0, 7),
        (200, 3000.0, 7),
        (401, 10.0, 7),
    ]
    assert all(e["logger"] == "regward.access" and e["route"] == ROUTE for e in held_lines)
