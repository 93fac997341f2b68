"""Webhooks end to end: a real HTTP receiver on loopback, the real server app and its delivery
queue, on SQLite and PostgreSQL. Retries use a tiny backoff (settings), so no test sleeps."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import hmac
import html
import json
import logging
import shutil
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from regward.server import db
from regward.server import webhooks as queue
from regward.server.app import create_app
from regward.server.db import Database
from regward.server.errors import InvalidInput
from regward.server.keys import load_or_create
from regward.server.models import User, WebhookDelivery
from regward.server.services import orgs, webhooks
from regward.server.settings import Settings
from tests.harness.receiver import Received, Receiver
from tests.harness.server import free_port
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD
from tests.server.conftest import TestClient, World, WorldTemplate
from tests.server.live import ThreadServer
from tests.server.test_dashboard import csrf_of, sign_in


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # Three tries, 0.05 s then 0.1 s apart (capped at 0.1 s): retries happen in a blink.
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        webhook_attempts=3,
        webhook_backoff=0.05,
        webhook_backoff_max=0.1,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver([200]) as running:
        yield running


def add_webhook(client: httpx.Client, headers: dict[str, str], url: str) -> dict[str, Any]:
    answer = client.post("/api/v1/orgs/acme/webhooks", json={"url": url}, headers=headers)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def deliveries(client: httpx.Client, headers: dict[str, str], webhook_id: int) -> list[Any]:
    path = f"/api/v1/orgs/acme/webhooks/{webhook_id}/deliveries?page_size=100"
    answer = client.get(path, headers=headers)
    assert answer.status_code == 200, answer.text
    items: list[Any] = answer.json()["deliveries"]
    return items


def settled(client: httpx.Client, headers: dict[str, str], webhook_id: int) -> list[Any] | None:
    """The deliveries once none is pending any more."""
    items = deliveries(client, headers, webhook_id)
    return items if items and all(d["status"] != "pending" for d in items) else None


def verify(item: Received, secret: str) -> dict[str, Any]:
    expected = "sha256=" + hmac.new(secret.encode(), item.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(item.headers["x-regward-signature"], expected)
    assert item.headers["content-type"] == "application/json"
    body: dict[str, Any] = json.loads(item.body)
    assert item.headers["x-regward-event"] == body["event"]
    return body


def test_an_apply_is_posted_signed_and_logged(world: World, receiver: Receiver) -> None:
    alice = world.headers("alice")
    hook = add_webhook(world.client, alice, receiver.url)
    assert hook["secret"].startswith("rwh_")
    listed = world.client.get("/api/v1/orgs/acme/webhooks", headers=alice).json()
    assert [w["url"] for w in listed["webhooks"]] == [receiver.url]
    assert "secret" not in listed["webhooks"][0]  # shown once, at creation only

    added = world.client.post(
        "/api/v1/orgs/acme/registry-access/registries",
        json={"address": "ghcr.io"},
        headers=alice,
    )
    assert added.status_code in (200, 201), added.text
    applied = world.client.post("/api/v1/orgs/acme/registry-access/apply", headers=alice)
    assert applied.status_code == 200, applied.text

    log = wait_for(lambda: settled(world.client, alice, hook["id"]), 20, "the delivery")
    assert [(d["event"], d["status"], d["attempts"], d["response_code"]) for d in log] == [
        ("revision.applied", "delivered", 1, 200)
    ]
    assert len(receiver.received) == 1
    body = verify(receiver.received[0], hook["secret"])
    assert receiver.received[0].headers["x-regward-delivery"] == str(log[0]["id"])
    assert body["organization"] == "acme"
    assert body["actor"] == "alice"
    assert body["data"]["revision"] == applied.json()["revision"]
    changes = body["data"]["changes"]
    assert [(c["action"], c["address"]) for c in changes] == [
        ("registry_access.registry_added", "ghcr.io")
    ]
    # A signature made with another secret does not verify.
    with pytest.raises(AssertionError):
        verify(receiver.received[0], "rwh_" + "x" * 43)


def test_retries_after_500s_then_delivered(world: World) -> None:
    alice = world.headers("alice")
    with Receiver([500, 503, 200]) as flaky:
        hook = add_webhook(world.client, alice, flaky.url)
        queued = world.client.post(f"/api/v1/orgs/acme/webhooks/{hook['id']}/test", headers=alice)
        assert queued.status_code == 202, queued.text
        log = wait_for(lambda: settled(world.client, alice, hook["id"]), 20, "the retries")
    assert [(d["status"], d["attempts"], d["response_code"], d["last_error"]) for d in log] == [
        ("delivered", 3, 200, None)
    ]
    # The same signed body each time.
    assert len({(r.body, r.headers["x-regward-signature"]) for r in flaky.received}) == 1
    assert verify(flaky.received[0], hook["secret"])["event"] == "ping"


def test_attempts_are_bounded(world: World) -> None:
    alice = world.headers("alice")
    with Receiver([500]) as broken:
        hook = add_webhook(world.client, alice, broken.url)
        world.client.post(f"/api/v1/orgs/acme/webhooks/{hook['id']}/test", headers=alice)
        log = wait_for(lambda: settled(world.client, alice, hook["id"]), 20, "giving up")
        assert [(d["status"], d["attempts"], d["response_code"]) for d in log] == [
            ("failed", 3, 500)
        ]
        assert "500" in log[0]["last_error"]
        assert len(broken.received) == world.settings.webhook_attempts


@given(
    attempts=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0.001, max_value=1e6),
    cap=st.floats(min_value=0.001, max_value=1e7),
)
def test_backoff_doubles_and_is_capped(attempts: int, base: float, cap: float) -> None:
    delay = webhooks.backoff(attempts, base, cap)
    assert 0 < delay <= cap
    assert webhooks.backoff(attempts + 1, base, cap) >= delay
    if 1 <= attempts <= 60 and base * 2.0**attempts <= cap:
        assert webhooks.backoff(attempts + 1, base, cap) == pytest.approx(2 * delay)


def test_a_restart_resumes_pending_deliveries(settings: Settings, database: Database) -> None:
    """Queued while the receiver is down; the server stops; started again, it delivers."""
    from tests.server.accounts import make_users

    make_users(database, settings)
    patient = dataclasses.replace(settings, webhook_attempts=1000)
    port = free_port()  # nothing listens there yet
    with TestClient(create_app(patient, database=database)) as first:
        token = first.post(
            "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        ).json()["token"]
        alice = {"Authorization": f"Bearer {token}"}
        hook = add_webhook(first, alice, f"http://127.0.0.1:{port}/hook")
        first.post(f"/api/v1/orgs/acme/webhooks/{hook['id']}/test", headers=alice)

        def refused() -> list[Any] | None:
            items = deliveries(first, alice, hook["id"])
            return items if items and items[0]["attempts"] >= 1 else None

        log = wait_for(refused, 20, "a refused attempt")
        assert log[0]["status"] == "pending"
        assert log[0]["response_code"] is None and log[0]["last_error"]
    with (
        Receiver([200], port=port) as back,
        TestClient(create_app(patient, database=database)) as second,
    ):
        log = wait_for(lambda: settled(second, alice, hook["id"]), 20, "the resumed delivery")
        assert log[0]["status"] == "delivered"
        assert verify(back.received[-1], hook["secret"])["event"] == "ping"


def test_device_and_denial_events(world: World, receiver: Receiver) -> None:
    alice, bob = world.headers("alice"), world.headers("bob")
    hook = add_webhook(world.client, alice, receiver.url)

    def check_in(refusal: str | None) -> None:
        answer = world.client.post(
            "/api/v1/orgs/acme/devices/check-in",
            json={"agent_id": "m-1", "revision": 1, "hostname": "build-1", "refusal": refusal},
            headers=bob,
        )
        assert answer.status_code == 200, answer.text

    check_in(None)
    check_in(None)  # known already: no event
    check_in("revision 2: bad signature")
    check_in("revision 2: bad signature")  # the same refusal: told once
    reported = world.client.post(
        "/api/v1/orgs/acme/denials",
        json={"denials": [{"reference": "docker.io/library/alpine", "action": "pull"}]},
        headers=bob,
    )
    assert reported.status_code == 201, reported.text
    wait_for(lambda: len(receiver.received) >= 3 or None, 20, "three events")
    bodies = [verify(item, hook["secret"]) for item in receiver.received]
    by_event = {body["event"]: body for body in bodies}
    assert sorted(by_event) == ["denials.reported", "device.refused_revision", "device.registered"]
    assert len(bodies) == 3
    assert by_event["device.registered"]["data"]["agent_id"] == "m-1"
    assert by_event["device.refused_revision"]["data"]["refusal"] == "revision 2: bad signature"
    denial = by_event["denials.reported"]["data"]
    assert denial["count"] == 1
    assert denial["denials"][0]["reference"] == "docker.io/library/alpine"


def test_only_owners_manage_webhooks(world: World, receiver: Receiver) -> None:
    hook = add_webhook(world.client, world.headers("alice"), receiver.url)
    for who, status in (("bob", 403), ("eve", 404), ("alice_read", 403)):
        answer = world.client.post(
            "/api/v1/orgs/acme/webhooks", json={"url": receiver.url}, headers=world.headers(who)
        )
        assert answer.status_code == status, (who, answer.text)
    assert (
        world.client.get("/api/v1/orgs/acme/webhooks", headers=world.headers("bob")).status_code
        == 403
    )
    gone = world.client.delete(
        f"/api/v1/orgs/acme/webhooks/{hook['id']}", headers=world.headers("alice")
    )
    assert gone.status_code == 204
    assert (
        world.client.get("/api/v1/orgs/acme/webhooks", headers=world.headers("alice")).json()[
            "webhooks"
        ]
        == []
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/", "scheme"),
        ("https://user:pw@example.com/", "password"),
        ("http://169.254.169.254/latest/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("https:///nohost", "no host"),
        ("https://example.com/#x", "fragment"),
        ("https://exa mple.com/", "spaces"),
        ("https://example.com:99999/", "not a URL"),
        ("https://example.com/" + "a" * 2000, "at most"),
    ],
)
def test_bad_urls_are_refused_by_name(url: str, problem: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        webhooks.parse_url(url)
    assert refused.value.field == "url"
    assert problem in str(refused.value)


@pytest.mark.parametrize(
    "url", ["https://hooks.example.com/regward", "http://10.0.0.7:8080/in", "http://127.0.0.1:9/x"]
)
def test_good_urls_are_kept(url: str) -> None:
    assert webhooks.parse_url(url) == url


@given(st.text(max_size=300))
def test_parse_url_accepts_only_http_urls_with_a_host(text: str) -> None:
    try:
        url = webhooks.parse_url(text)
    except InvalidInput:
        return
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    assert parts.scheme.lower() in ("http", "https")
    assert parts.hostname
    assert parts.username is None and parts.password is None


def test_dashboard_add_test_and_log(
    tmp_path: Path, sqlite_template: Path, receiver: Receiver
) -> None:
    import shutil

    from tests.server.accounts import make_users

    shutil.copy(sqlite_template, tmp_path / "regward.db")
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'regward.db'}")
    database = Database(settings.database_url)
    make_users(database, settings)
    with TestClient(create_app(settings, database=database), follow_redirects=False) as client:
        sign_in(client, "alice")
        page = client.get("/orgs/acme/webhooks")
        assert page.status_code == 200, page.text
        created = client.post(
            "/orgs/acme/webhooks/create",
            data={"csrf_token": csrf_of(page.text), "url": receiver.url},
        )
        assert created.status_code == 200, created.text
        assert "shown only once" in created.text
        secret = created.text.split('id="created-secret" type="text" readonly value="')[1].split(
            '"'
        )[0]
        assert secret.startswith("rwh_")
        again = client.get("/orgs/acme/webhooks")
        assert secret not in again.text
        hook_id = again.text.split('data-webhook="')[1].split('"')[0]
        tested = client.post(
            "/orgs/acme/webhooks/test",
            data={"csrf_token": csrf_of(again.text), "webhook_id": hook_id},
        )
        assert tested.status_code == 303
        wait_for(lambda: receiver.received or None, 20, "the test event")
        assert verify(receiver.received[0], secret)["event"] == "ping"

        def logged() -> str | None:
            text = client.get("/orgs/acme/webhooks").text
            return text if ">delivered<" in text else None

        text = wait_for(logged, 20, "the delivery log")
        assert "<code>ping</code>" in text
        refused = client.post(
            "/orgs/acme/webhooks/create", data={"csrf_token": csrf_of(text), "url": "ftp://x/"}
        )
        assert refused.status_code == 422
        assert "scheme must be http or https" in refused.text
        database.dispose()
    with TestClient(
        create_app(settings, database=Database(settings.database_url)), follow_redirects=False
    ) as client:
        sign_in(client, "bob")
        assert client.get("/orgs/acme/webhooks").status_code == 403


@pytest.mark.parametrize("webhook_id", [str(2**31), "9" * 30, "²"])
def test_a_webhook_id_that_cannot_be_one_is_refused_not_a_server_error(
    world: World, webhook_id: str
) -> None:
    alice = world.headers("alice")
    base = f"/api/v1/orgs/acme/webhooks/{webhook_id}"
    for method, path in (("DELETE", base), ("POST", f"{base}/test"), ("GET", f"{base}/deliveries")):
        answer = world.client.request(method, path, headers=alice)
        assert answer.status_code == 422, (method, path, answer.text)
        assert answer.json()["detail"].startswith("webhook_id: ")
    with TestClient(world.app, follow_redirects=False) as browser:
        sign_in(browser, "alice")
        page = browser.get("/orgs/acme/webhooks")
        for action in ("test", "delete"):
            answer = browser.post(
                f"/orgs/acme/webhooks/{action}",
                data={
                    "csrf_token": csrf_of(page.text),
                    "webhook_id": webhook_id,
                    "confirmed": "yes",
                },
            )
            assert answer.status_code == 404, (action, answer.text)
            assert f"Webhook {webhook_id!r} not found in 'acme'." in html.unescape(answer.text)


def _one_delivery(database: Database, settings: Settings) -> int:
    """An organization with one webhook and one queued delivery (no server runs: the test is
    the only sender); the delivery's id."""
    with database.session(write=True) as session:
        owner = User(username="alice", password_hash="-")  # noqa: S106 - never signs in
        session.add(owner)
        acme = orgs.create(session, "acme", owner, load_or_create(settings.signing_key_path))
        hook, _secret = webhooks.create(session, acme, owner, "http://127.0.0.1:9/hook")
        return webhooks.send_test(session, acme, owner, hook.id).id


def test_a_sender_whose_lease_ran_out_records_nothing(
    database: Database, settings: Settings
) -> None:
    """Two senders (server processes) and one delivery: the one that outlived its lease
    neither records its attempt nor gives the delivery back; the one that took it over does."""
    delivery_id = _one_delivery(database, settings)

    def finish(session: Session, item: webhooks.Claimed) -> WebhookDelivery | None:
        delivered = webhooks.Outcome(200, None)
        return webhooks.finish(session, item, delivered, max_attempts=3, base=0.05, cap=0.1)

    with database.session(write=True) as session:
        late = webhooks.claim(session, timedelta(0), 10)  # a lease over at once
    with database.session(write=True) as session:
        taken = webhooks.claim(session, timedelta(seconds=60), 10)
    assert [c.id for c in late] == [c.id for c in taken] == [delivery_id]
    with database.session(write=True) as session:
        assert webhooks.claim(session, timedelta(seconds=60), 10) == []  # leased
        webhooks.release(session, late)  # not the late sender's to give back
        assert finish(session, late[0]) is None
    with database.session() as session:
        row = session.get(WebhookDelivery, delivery_id)
        assert row is not None
        assert (row.status, row.attempts, row.next_attempt_at) == ("pending", 0, taken[0].lease)
    with database.session(write=True) as session:
        assert webhooks.claim(session, timedelta(seconds=60), 10) == []  # still leased
        done = finish(session, taken[0])
        assert done is not None
        assert (done.status, done.attempts) == ("delivered", 1)


class Trickler:
    """A receiver on 127.0.0.1 that starts a 200 answer and never finishes it: a header line
    every 0.1 s, each well inside any per-read timeout, until the test ends."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        self.connections = 0
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def _accept(self) -> None:
        while not self._done.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return  # closed: the test is over
            self.connections += 1
            worker = threading.Thread(target=self._trickle, args=(connection,), daemon=True)
            self._threads.append(worker)
            worker.start()

    def _trickle(self, connection: socket.socket) -> None:
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                request += chunk
            try:
                connection.sendall(b"HTTP/1.1 200 OK\r\n")
                while not self._done.wait(0.1):  # the hostile pace, not a synchronization
                    connection.sendall(b"X-Slow: 1\r\n")
            except OSError:
                return  # the sender gave up and closed

    def __enter__(self) -> Trickler:
        self._threads[0].start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._done.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=10)


def test_an_answer_that_never_ends_is_cut_at_the_deadline(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """httpx's timeouts are per read: the whole attempt has one deadline, so no attempt
    outlives its lease (and another process never sends the same delivery meanwhile)."""
    monkeypatch.setattr(queue, "TIMEOUT_SECONDS", 0.5)
    alice = world.headers("alice")
    with Trickler() as slow:
        hook = add_webhook(world.client, alice, slow.url)
        world.client.post(f"/api/v1/orgs/acme/webhooks/{hook['id']}/test", headers=alice)
        log = wait_for(lambda: settled(world.client, alice, hook["id"]), 30, "giving up")
    assert [(d["status"], d["attempts"], d["last_error"]) for d in log] == [
        ("failed", world.settings.webhook_attempts, "no answer within 0.5 s")
    ]
    assert slow.connections == world.settings.webhook_attempts


def test_the_queue_takes_its_turn_among_concurrent_writers(
    tmp_path: Path,
    sqlite_world: WorldTemplate,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SQLite, one process: 60 machines check in at once (each a write in the routes' turn and
    a `device.registered` delivery, so the queue writes while they do). The queue's writes
    take the same turn: none of them meets another writer in SQLite's busy handler. A busy
    timeout of 0 makes any such meeting fail at once, where the soak's 30 s let the queue lose
    the lock to the turn's writers until it timed out (`database is locked`)."""
    shutil.copy(sqlite_world.source, tmp_path / "regward.db")
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path}/regward.db")
    sqlite_world.install_key(settings)
    database = Database(settings.database_url)
    count = 60
    with (
        ThreadServer(create_app(settings, database=database)) as live,
        httpx.Client(base_url=live.url, trust_env=False, timeout=60) as client,
    ):

        def sign_in_as(name: str) -> dict[str, str]:
            body = {"username": name, "password": PASSWORD}
            answer = client.post("/api/v1/auth/token", json=body)
            assert answer.status_code == 200, answer.text
            return {"Authorization": f"Bearer {answer.json()['token']}"}

        alice, bob = sign_in_as("alice"), sign_in_as("bob")
        hook = add_webhook(client, alice, receiver.url)
        # Each token's last use is written now, outside any turn (it never waits: a minute
        # later it is written again), so that only turn-takers write during the herd.
        assert client.get("/api/v1/orgs/acme/policy", headers=bob).status_code == 200
        monkeypatch.setattr(db, "BUSY_TIMEOUT_MS", 0)

        def check_in(number: int) -> int:
            body = {"agent_id": f"herd-{number}", "revision": 1, "hostname": f"ci-{number}"}
            answer = client.post("/api/v1/orgs/acme/devices/check-in", json=body, headers=bob)
            return answer.status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(check_in, range(count)))
        assert statuses == [200] * count

        def all_settled() -> list[Any] | None:
            items = settled(client, alice, hook["id"])
            return items if items and len(items) == count else None

        log = wait_for(all_settled, 60, f"{count} deliveries")
    database.dispose()
    locked = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert locked == []
    assert {(d["event"], d["status"], d["attempts"]) for d in log} == {
        ("device.registered", "delivered", 1)
    }
    agents = sorted(json.loads(r.body)["data"]["agent_id"] for r in receiver.received)
    assert agents == sorted(f"herd-{n}" for n in range(count))  # each machine told once
