"""The access log and request ids: one line per request, the route's template, the caller by
name and token id (never the token), and the request id on the error lines it caused."""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from regward.server.observe import access_log, new_request_id, request_id_of
from tests.harness.server import ServerProcess
from tests.harness.wait import wait_for
from tests.server.accounts import PASSWORD
from tests.server.conftest import World

sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def _entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _access(stream: io.StringIO) -> list[dict[str, Any]]:
    return [e for e in _entries(stream) if e["logger"] == access_log.name]


@sqlite_only
def test_one_line_per_request_with_route_template_and_caller(
    world: World, json_lines: io.StringIO
) -> None:
    token = world.tokens["alice"]
    answer = world.client.get("/api/v1/orgs/acme/members", headers=world.headers("alice"))
    assert answer.status_code == 200
    world.client.get("/api/v1/orgs/acme/policy", headers=world.headers("bob_read"))
    world.client.get("/api/v1/orgs/nope", headers=world.headers("eve"))
    world.client.get("/no/such/page")
    world.client.get("/static/regward.css")
    lines = _access(json_lines)
    assert [(e["method"], e["route"], e["status"], e["user"]) for e in lines] == [
        ("GET", "/api/v1/orgs/{org}/members", 200, "alice"),
        ("GET", "/api/v1/orgs/{org}/policy", 200, None),  # the feed's fast path: token only
        ("GET", "/api/v1/orgs/{org}", 404, "eve"),
        ("GET", "(unmatched)", 404, None),
        ("GET", "/static", lines[4]["status"], None),
    ]
    assert all(isinstance(e["token_id"], int) for e in lines[:3])
    assert lines[0]["token_id"] != lines[1]["token_id"]
    assert all(e["duration_ms"] >= 0 and len(e["request_id"]) == 32 for e in lines)
    assert token not in json_lines.getvalue()


@sqlite_only
def test_passwords_and_tokens_stay_out_of_the_log(world: World, json_lines: io.StringIO) -> None:
    answer = world.client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    issued = answer.json()["token"]
    world.client.get(f"/api/v1/orgs/acme?token={issued}", headers={"Authorization": "Bearer x"})
    logged = json_lines.getvalue()
    assert PASSWORD not in logged and issued not in logged
    routes = [(e["route"], e["status"]) for e in _access(json_lines)]
    assert routes == [("/api/v1/auth/token", 200), ("/api/v1/orgs/{org}", 401)]


@sqlite_only
def test_the_request_id_is_answered_and_carried_into_error_lines(
    world: World, json_lines: io.StringIO
) -> None:
    with world.database.engine.begin() as connection:  # the database loses a table
        connection.execute(text("DROP TABLE activity_events"))
    answer = world.client.get(
        "/api/v1/orgs/acme/activity",
        headers={**world.headers("alice"), "X-Request-ID": "ticket-4711"},
    )
    assert answer.status_code == 503
    assert answer.headers["x-request-id"] == "ticket-4711"
    caused = [e for e in _entries(json_lines) if e.get("request_id") == "ticket-4711"]
    assert [e["level"] for e in caused] == ["WARNING", "INFO"]
    assert "database unavailable" in caused[0]["message"]
    assert caused[1]["status"] == 503
    hostile = world.client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 70})
    assert hostile.headers["x-request-id"] != "a b\tc" + "x" * 70  # made up, not echoed
    assert len(hostile.headers["x-request-id"]) == 32


def test_a_running_server_writes_json_lines(tmp_path: Path) -> None:
    env = {"REGWARD_DATA_DIR": str(tmp_path / "data"), "REGWARD_LOG_FORMAT": "json"}
    init = [sys.executable, "-m", "regward.cli", "server", "init", "--org", "acme"]
    subprocess.run(
        [*init, "--owner", "alice", "--password-stdin"],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", **env},
    )
    log = tmp_path / "server.log"
    with ServerProcess(env, log=log) as server:
        token = httpx.post(
            f"{server.url}/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        ).json()["token"]
        httpx.get(
            f"{server.url}/api/v1/orgs/acme",
            headers={"Authorization": f"Bearer {token}", "X-Request-ID": "probe-1"},
        )

        def probe_line() -> dict[str, Any] | None:
            for line in log.read_text().splitlines():
                if line.startswith("{") and json.loads(line).get("request_id") == "probe-1":
                    return dict(json.loads(line))
            return None

        entry = wait_for(probe_line, 20, "the access-log line of the probe")
        # What the HTTP parser refuses before the app sees it is in the API's error shape too.
        for unreadable in (
            b"GET /api/v1/health?x=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        ):
            status, _, body = _raw(server.port, unreadable).partition(b" ")[2].partition(b"\r\n")
            head, _, payload = body.partition(b"\r\n\r\n")
            assert status == b"400 Bad Request" and b"content-type: application/json" in head
            assert "cannot read this request as HTTP/1.1" in json.loads(payload)["detail"]
    assert entry["logger"] == "regward.access"
    assert (entry["route"], entry["status"], entry["user"]) == ("/api/v1/orgs/{org}", 200, "alice")
    written = log.read_text()
    assert token not in written and PASSWORD not in written
    entries = [json.loads(line) for line in written.splitlines()]  # every line, the banner too
    assert entries[0]["message"] == f"policy server on {server.url}/"
    assert entries[0]["url"] == f"{server.url}/"


def _raw(port: int, request: bytes) -> bytes:
    """Send `request` as is and read the answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_request_ids_made_here_are_32_hex_digits_and_never_repeat() -> None:
    made = [new_request_id() for _ in range(1000)]
    assert len(set(made)) == len(made)
    assert all(re.fullmatch(r"[0-9a-f]{32}", made_id) for made_id in made)
    assert request_id_of(b"") != request_id_of(b"")
    assert request_id_of(b"given-7") == "given-7"
