"""Two `regward server run` processes on one PostgreSQL: an apply on either wakes long-polls held
by the other (LISTEN/NOTIFY), both survive a database restart, and the webhook deliveries both
queue are each sent by one of them and delivered once.

The polls wait up to 30 s, so a 200 with the new revision can only come from a wake-up; how
fast it comes is measured by bench/propagation.py, not asserted here."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from regward.policy import SignedPolicy
from tests.harness.postgres import PostgresCluster
from tests.harness.receiver import Receiver
from tests.harness.server import ServerProcess
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD
from tests.server.changes import revision_or_none
from tests.server.conftest import TEMPLATE
from tests.server.test_dashboard import sign_in
from tests.server.test_webhooks import verify

pytestmark = pytest.mark.postgres
ORG = "/api/v1/orgs/acme"


@dataclass
class Pair:
    a: ServerProcess
    b: ServerProcess
    token: str
    cluster: PostgresCluster

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def pair(pg_cluster: PostgresCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("rwsrv-two")
    url = pg_cluster.create_database("rwsrv_two", template=TEMPLATE)
    env = {
        "REGWARD_DATA_DIR": str(base / "data"),
        "REGWARD_DATABASE_URL": url,
        # Webhook retries in a blink, and never given up on while a test's receiver fails.
        "REGWARD_WEBHOOK_ATTEMPTS": "1000",
        "REGWARD_WEBHOOK_BACKOFF": "0.05",
        "REGWARD_WEBHOOK_BACKOFF_MAX": "0.2",
    }
    init = subprocess.run(
        [
            sys.executable,
            "-m",
            "regward.cli",
            "server",
            "init",
            "--org",
            "acme",
            "--owner",
            "alice",
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert init.returncode == 0, init.stderr
    with (
        ServerProcess(env, base / "a.log", probed=True) as a,
        ServerProcess(env, base / "b.log", probed=True) as b,
    ):
        token = httpx.post(
            f"{a.url}/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        ).json()["token"]
        yield Pair(a=a, b=b, token=token, cluster=pg_cluster)
    pg_cluster.drop_database("rwsrv_two")


def listeners(pair: Pair) -> int:
    """The database connections LISTENing for applied revisions (one per server process)."""
    sql = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN %%'"
    return pair.cluster.count(sql, "rwsrv_two")


def _revision(answer: httpx.Response) -> int:
    return SignedPolicy.from_json(answer.content).policy.revision


def _apply(server: ServerProcess, headers: dict[str, str], address: str) -> int:
    added = httpx.post(
        f"{server.url}{ORG}/registry-access/registries", json={"address": address}, headers=headers
    )
    assert added.status_code == 201, added.text
    applied = httpx.post(f"{server.url}{ORG}/registry-access/apply", headers=headers, timeout=30)
    assert applied.status_code == 200, applied.text
    return int(applied.json()["revision"])


def _current(server: ServerProcess, headers: dict[str, str]) -> int:
    return _revision(httpx.get(f"{server.url}{ORG}/policy", headers=headers))


def _poll_then_apply(
    pair: Pair, poller: ServerProcess, applier: ServerProcess, address: str
) -> int:
    after = _current(poller, pair.headers)
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        polls = [
            pool.submit(
                httpx.get,
                f"{poller.url}{ORG}/policy?wait=30&after={after}",
                headers=pair.headers,
                timeout=60,
            )
            for _ in range(5)
        ]
        wait_for(lambda: poller.long_polls("acme") == 5, 30, "the poller to hold the polls")
        assert not any(p.done() for p in polls)
        revision = _apply(applier, pair.headers, address)
        answers = [p.result(timeout=20) for p in polls]
    assert all(a.status_code == 200 for a in answers), [a.status_code for a in answers]
    assert {_revision(a) for a in answers} == {revision}
    return revision


def test_apply_on_one_process_wakes_long_polls_on_the_other(pair: Pair) -> None:
    first = _poll_then_apply(pair, poller=pair.b, applier=pair.a, address="ghcr.io")
    second = _poll_then_apply(pair, poller=pair.a, applier=pair.b, address="quay.io")
    assert second == first + 1


def test_concurrent_applies_on_both_processes_give_increasing_revisions(pair: Pair) -> None:
    start = _current(pair.a, pair.headers)

    def add_and_apply(index: int) -> int | None:
        server = pair.a if index % 2 else pair.b
        entry = {"address": f"r{index}.example.com"}
        path = f"{server.url}{ORG}/registry-access"
        added = httpx.post(f"{path}/registries", json=entry, headers=pair.headers, timeout=30)
        assert added.status_code == 201, added.text
        return revision_or_none(httpx.post(f"{path}/apply", headers=pair.headers, timeout=30))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        revisions = [r for r in pool.map(add_and_apply, range(16)) if r is not None]
    # Strictly increasing without gaps; an apply that found its edit published already by
    # another one publishes nothing.
    assert sorted(revisions) == list(range(start + 1, start + 1 + len(revisions)))
    assert _current(pair.b, pair.headers) == start + len(revisions)
    draft = httpx.get(f"{pair.a.url}{ORG}/registry-access", headers=pair.headers).json()
    addresses = {e["address"] for e in draft["registries"]}
    assert {f"r{i}.example.com" for i in range(16)} <= addresses  # no edit lost
    assert draft["pending_changes"] == []  # the last apply included every edit


def test_database_restart_gives_clean_errors_then_recovers(pair: Pair, tmp_path: Path) -> None:
    after = _current(pair.b, pair.headers)
    pair.cluster.pause()
    try:
        down = httpx.get(f"{pair.a.url}{ORG}/registry-access", headers=pair.headers, timeout=30)
        assert down.status_code == 503
        assert "database" in down.json()["detail"]
        feed = httpx.get(f"{pair.b.url}{ORG}/policy", headers=pair.headers, timeout=30)
        assert feed.status_code == 503
        assert "database" in feed.json()["detail"]
    finally:
        pair.cluster.resume()

    def answers() -> bool:
        url = f"{pair.a.url}{ORG}/registry-access"
        return httpx.get(url, headers=pair.headers, timeout=30).status_code == 200

    wait_for(answers, 30, "the server to answer again")
    # The LISTEN connections come back too: a long-poll on B still hears an apply on A.
    wait_for(lambda: listeners(pair) == 2, 30, "both processes to LISTEN again")
    revision = _poll_then_apply(pair, poller=pair.b, applier=pair.a, address="mcr.microsoft.com")
    assert revision > after


# --- webhooks: both processes send, each delivery once ----------------------------------------


def _add_webhook(pair: Pair, url: str) -> dict[str, Any]:
    answer = httpx.post(f"{pair.a.url}{ORG}/webhooks", json={"url": url}, headers=pair.headers)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _delivery_log(pair: Pair, server: ServerProcess, webhook_id: int) -> list[dict[str, Any]]:
    answer = httpx.get(
        f"{server.url}{ORG}/webhooks/{webhook_id}/deliveries?page_size=100",
        headers=pair.headers,
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["deliveries"]
    return items


def _settled(pair: Pair, webhook_id: int, count: int) -> list[dict[str, Any]] | None:
    log = _delivery_log(pair, pair.a, webhook_id)
    done = len(log) == count and all(d["status"] == "delivered" for d in log)
    return log if done else None


def _report_denial(server: ServerProcess, pair: Pair, index: int) -> None:
    item = {"reference": f"evil.example.com/app{index}", "action": "pull", "agent_id": f"m-{index}"}
    answer = httpx.post(
        f"{server.url}{ORG}/denials", json={"denials": [item]}, headers=pair.headers, timeout=30
    )
    assert answer.status_code == 201, answer.text


def _events_on_both(pair: Pair, count: int, name: str) -> list[int]:
    """Apply `count` revisions (adding `name`0.example.com, ...) and report `count` denial
    batches, alternating between the two processes, the reports concurrently; the revisions."""
    revisions = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        reports = [
            pool.submit(_report_denial, pair.a if i % 2 else pair.b, pair, i) for i in range(count)
        ]
        for i in range(count):
            server = pair.b if i % 2 else pair.a
            revisions.append(_apply(server, pair.headers, f"{name}{i}.example.com"))
        for report in reports:
            report.result(timeout=60)
    return revisions


def _delivered_once(receiver: Receiver, log: list[dict[str, Any]], secret: str) -> None:
    """Every delivery in `log` reached the receiver as often as the log says it was tried,
    the last try the one 2xx, and no two senders ever held one delivery at once."""
    assert receiver.overlapping == []
    for item in log:
        posts = receiver.of(item["id"])
        assert [p.status for p in posts][-1:] == [200], (item, [p.status for p in posts])
        assert sum(1 for p in posts if 200 <= p.status < 300) == 1, item
        assert len(posts) == item["attempts"], (item, [p.status for p in posts])
        assert len({p.body for p in posts}) == 1  # the same signed body on every try
        assert verify(posts[0], secret)["event"] == item["event"]
    known = {str(item["id"]) for item in log}
    assert {r.delivery for r in receiver.received} == known  # nothing sent that is not logged


def _dashboard_rows(pair: Pair, server: ServerProcess) -> dict[str, tuple[str, str]]:
    """The delivery log on `server`'s Webhooks page: id -> (status, attempts)."""
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        sign_in(browser, "alice")  # type: ignore[arg-type]  # the same calls as TestClient's
        page = browser.get("/orgs/acme/webhooks?page=1")
        assert page.status_code == 200, page.text
    rows = re.findall(
        r'<tr data-delivery="(\d+)">.*?data-label="Status"><span class="tag">(\w+)</span>'
        r'.*?data-label="Attempts">(\d+)</td>',
        page.text,
        flags=re.DOTALL,
    )
    return {delivery: (status, attempts) for delivery, status, attempts in rows}


def test_webhooks_from_both_processes_are_delivered_once_with_retries(pair: Pair) -> None:
    # Each delivery fails once (500) and is delivered on its second try.
    with Receiver([500, 200], per_delivery=True) as receiver:
        hook = _add_webhook(pair, receiver.url)
        revisions = _events_on_both(pair, 4, "retried")
        log = wait_for(lambda: _settled(pair, hook["id"], 8), 60, "eight deliveries")
        _delivered_once(receiver, log, hook["secret"])
    assert {item["attempts"] for item in log} == {2}
    bodies = [json.loads(receiver.of(item["id"])[0].body) for item in log]
    applied = [b["data"]["revision"] for b in bodies if b["event"] == "revision.applied"]
    assert sorted(applied) == revisions
    reported = [
        b["data"]["denials"][0]["reference"] for b in bodies if b["event"] == "denials.reported"
    ]
    assert sorted(reported) == [f"evil.example.com/app{i}" for i in range(4)]
    # The delivery log says the same on both processes, in the API and on the dashboard.
    assert _delivery_log(pair, pair.b, hook["id"]) == log
    expected = {str(item["id"]): ("delivered", "2") for item in log}
    assert _dashboard_rows(pair, pair.a) == expected
    assert _dashboard_rows(pair, pair.b) == expected
    _delete_webhook(pair, hook["id"])


def test_a_receiver_that_fails_then_recovers_gets_each_event_once(pair: Pair) -> None:
    with Receiver([503], per_delivery=True) as receiver:
        hook = _add_webhook(pair, receiver.url)
        _events_on_both(pair, 3, "recovered")

        def tried_thrice() -> bool:
            log = _delivery_log(pair, pair.b, hook["id"])
            return len(log) == 6 and all(d["attempts"] >= 3 for d in log)

        # Both processes retry every pending delivery while the receiver fails ...
        wait_for(tried_thrice, 60, "three failed tries of each delivery")
        assert all(d["status"] == "pending" for d in _delivery_log(pair, pair.a, hook["id"]))
        receiver.codes = [200]  # ... and once it is back, each is delivered exactly once.
        log = wait_for(lambda: _settled(pair, hook["id"], 6), 60, "six deliveries")
        _delivered_once(receiver, log, hook["secret"])
    assert all(item["response_code"] == 200 and item["last_error"] is None for item in log)
    assert _delivery_log(pair, pair.b, hook["id"]) == log
    _delete_webhook(pair, hook["id"])


def _delete_webhook(pair: Pair, webhook_id: int) -> None:
    gone = httpx.delete(f"{pair.b.url}{ORG}/webhooks/{webhook_id}", headers=pair.headers)
    assert gone.status_code == 204, gone.text
