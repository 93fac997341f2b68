"""Two `regward server run` processes on one PostgreSQL: an apply on either wakes long-polls held
by the other (LISTEN/NOTIFY), and both survive a database restart.

The polls wait up to 30 s, so a 200 with the new revision can only come from a wake-up; how
fast it comes is measured by bench/propagation.py, not asserted here."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from regward.policy import SignedPolicy
from tests.harness.postgres import PostgresCluster
from tests.harness.server import ServerProcess
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD
from tests.server.changes import revision_or_none
from tests.server.conftest import TEMPLATE

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
    env = {"REGWARD_DATA_DIR": str(base / "data"), "REGWARD_DATABASE_URL": url}
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
