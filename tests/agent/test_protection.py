"""Is the Docker Engine protected? `/info` as dockerd 20.10 answered it (recorded in the e2e bed,
tests/agent/data/docker-info.json), served over a real unix socket by a small HTTP server in a
thread, read by the agent's check; and the agent checking a change in to the real server app.

The real dockerd's answer is checked in test_e2e_server.py.
"""

from __future__ import annotations

import asyncio
import copy
import http.server
import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.agent import protection
from regward.agent.runner import Agent, AgentOptions
from tests.harness.wait import until
from tests.server.live import live_server

SHAPES = json.loads((Path(__file__).parent / "data" / "docker-info.json").read_text())
PROTECTED = SHAPES["dockerd-20.10-protected"]
PLAIN = SHAPES["dockerd-20.10-plain"]
PROXY = ("127.0.0.1", 3128)
WILDCARD = "0.0.0.0"  # noqa: S104 - a listener's address to compare with, nothing binds
NAMES = ("regward",)


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A unix-socket HTTP server answering GET /info with `answer` (status, body)."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        self.answer: tuple[int, bytes] = (200, json.dumps(PROTECTED).encode())
        self.requests: list[str] = []
        super().__init__(str(path), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: FakeEngine

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        status, body = self.server.answer if self.path == "/info" else (404, b"{}")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def address_string(self) -> str:  # a unix socket has no client address to print
        return "unix"

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def dockerd(tmp_path: Path) -> Iterator[tuple[FakeEngine, Path]]:
    path = tmp_path / "docker.sock"
    server = FakeEngine(path)
    thread = threading.Thread(target=server.serve_forever, name="fake-dockerd", daemon=True)
    thread.start()
    try:
        yield server, path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def info(**changes: Any) -> bytes:
    shape = copy.deepcopy(PROTECTED)
    for key, value in changes.items():
        if key == "Authorization":
            shape["Plugins"]["Authorization"] = value
        else:
            shape[key] = value
    return json.dumps(shape).encode()


def check(path: Path, proxy: tuple[str, int] | None = PROXY) -> protection.EngineCheck:
    return asyncio.run(protection.check(path, NAMES, proxy))


def test_a_dockerd_with_the_plugin_and_the_proxy_is_protected(
    dockerd: tuple[FakeEngine, Path],
) -> None:
    server, path = dockerd
    checked = check(path)
    assert server.requests == ["/info"]
    assert checked.report() == {"authz": True, "proxy": True}
    assert checked.words() == "protected (AuthZ plugin regward, proxy 127.0.0.1:3128)"
    assert check(path, proxy=None).report() == {"authz": True, "proxy": None}
    assert check(path, proxy=None).words() == (
        "protected (AuthZ plugin regward, the agent's proxy is off)"
    )


def test_a_plain_dockerd_is_not_protected_and_says_why(dockerd: tuple[FakeEngine, Path]) -> None:
    server, path = dockerd
    server.answer = (200, json.dumps(PLAIN).encode())
    checked = check(path)
    assert checked.report() == {"authz": False, "proxy": False}
    assert checked.words() == (
        "NOT protected: dockerd does not use the AuthZ plugin 'regward' (its AuthZ plugins: "
        "none); dockerd does not send registry traffic through the agent's proxy "
        "127.0.0.1:3128 (HTTPS proxy not set, HTTP proxy not set), so pulls inside builds are "
        "not checked; run `regward agent install` and restart dockerd"
    )
    assert check(path, proxy=None).report() == {"authz": False, "proxy": None}


@pytest.mark.parametrize(
    ("changes", "authz", "proxy"),
    [
        ({"Authorization": ["other"]}, False, True),
        ({"Authorization": ["other", "regward"]}, True, True),
        ({"Authorization": "regward"}, False, True),  # not a list: unreadable, not protected
        ({"Authorization": ["regward:latest"]}, False, True),
        ({"Plugins": None}, False, True),
        ({"HttpsProxy": ""}, True, False),  # TLS registries (all real ones) go direct
        ({"HttpProxy": "http://127.0.0.1:3129"}, True, False),
        ({"HttpsProxy": "https://127.0.0.1:3128"}, True, False),
        ({"HttpsProxy": "socks5://127.0.0.1:3128"}, True, False),
        ({"HttpsProxy": "http://10.0.0.1:3128"}, True, False),
        ({"HttpsProxy": "http://127.0.0.1"}, True, False),  # port 80
        ({"HttpsProxy": "127.0.0.1:3128", "HttpProxy": "localhost:3128"}, True, True),
        ({"HttpsProxy": "http://xxxxx:xxxxx@127.0.0.1:3128/"}, True, True),  # masked user
        ({"NoProxy": "*"}, True, False),
        ({"NoProxy": "internal.example, *"}, True, False),
        ({"HttpsProxy": None}, True, False),
    ],
)
def test_each_setting_that_lets_pulls_past_the_agent_is_found(
    dockerd: tuple[FakeEngine, Path], changes: dict[str, Any], authz: bool, proxy: bool
) -> None:
    server, path = dockerd
    server.answer = (200, info(**changes))
    checked = check(path)
    assert checked.report() == {"authz": authz, "proxy": proxy}
    assert checked.words().startswith("protected" if authz and proxy else "NOT protected")


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ((500, b'{"message":"plugin regward failed with error: connection refused"}'), "500"),
        ((200, b"not json"), "did not answer JSON"),
        ((200, b"[1, 2]"), "did not answer a JSON object"),
    ],
)
def test_an_engine_that_answers_something_else_is_unknown(
    dockerd: tuple[FakeEngine, Path], answer: tuple[int, bytes], error: str
) -> None:
    server, path = dockerd
    server.answer = answer
    checked = check(path)
    assert checked.report() is None
    assert checked.words().startswith(f"unknown: no answer from a Docker Engine at {path}")
    assert error in checked.words()


def test_no_engine_is_unknown_never_protected(tmp_path: Path) -> None:
    checked = check(tmp_path / "absent.sock")
    assert checked.report() is None
    assert checked.to_dict()["protected"] is None
    assert checked.words() == (
        f"unknown: no answer from a Docker Engine at {tmp_path / 'absent.sock'} "
        "(no such file or directory)"
    )


def test_the_plugin_is_expected_under_the_name_dockerd_finds_it_by() -> None:
    names = protection.plugin_names
    assert names(Path("/run/docker/plugins/regward.sock")) == ("regward",)
    assert names(Path("/run/docker/plugins/ci-authz.sock")) == ("ci-authz", "regward")
    assert names(Path("/var/run/docker/plugins/ci/ci.sock")) == ("ci", "regward")
    assert names(Path("/run/regward/authz.sock")) == ("regward",)  # found through the spec file
    assert names(Path("/run/docker/plugins/sub/other.sock")) == ("regward",)
    assert names(None) == ("regward",)


def test_the_engine_socket_comes_from_docker_host() -> None:
    assert protection.docker_socket({}) == Path("/var/run/docker.sock")
    assert protection.docker_socket({"DOCKER_HOST": "unix:///tmp/d.sock"}) == Path("/tmp/d.sock")
    assert protection.docker_socket({"DOCKER_HOST": "tcp://10.0.0.1:2375"}) == Path(
        "/var/run/docker.sock"
    )


@pytest.mark.parametrize(
    ("value", "listen", "expected"),
    [
        ("http://[::1]:3128", ("::1", 3128), True),
        ("http://[0:0:0:0:0:0:0:1]:3128", ("::1", 3128), True),
        ("http://localhost:3128", ("::1", 3128), True),
        ("http://localhost:3128", (WILDCARD, 3128), True),
        ("http://127.0.0.1:3128", (WILDCARD, 3128), True),
        ("http://10.1.2.3:3128", (WILDCARD, 3128), False),
        ("http://Proxy.Internal.:3128", ("proxy.internal", 3128), True),
        ("http://proxy.internal.evil:3128", ("proxy.internal", 3128), False),
        ("http://127.0.0.1:3128", ("localhost", 3128), False),  # a name is compared as a name
        ("http://127.0.0.1:99999", ("127.0.0.1", 3128), False),
        ("http://:3128", ("127.0.0.1", 3128), False),
        ("", ("127.0.0.1", 3128), False),
    ],
)
def test_proxy_settings_compare_by_host_and_port(
    value: str, listen: tuple[str, int], expected: bool
) -> None:
    assert protection.points_at(value, listen) is expected


@given(
    address=st.ip_addresses(),
    port=st.integers(min_value=1, max_value=65535),
    other=st.integers(min_value=1, max_value=65535),
    scheme=st.sampled_from(["http://", "HTTP://", ""]),
    junk=st.text(max_size=30),
)
def test_a_proxy_url_reaches_its_own_listener_only(
    address: Any, port: int, other: int, scheme: str, junk: str
) -> None:
    host = f"[{address}]" if address.version == 6 else str(address)
    listen = (str(address), port)
    assert protection.points_at(f"{scheme}{host}:{port}", listen)
    assert protection.points_at(f"{scheme}{host}:{other}", listen) is (other == port)
    protection.points_at(junk, listen)  # any text is read without an exception


def test_the_agent_checks_in_what_the_engine_says_and_each_change(
    tmp_path: Path, dockerd: tuple[FakeEngine, Path]
) -> None:
    fake, path = dockerd
    with live_server(tmp_path) as (_, owner, state, _credentials):
        agent = Agent(
            AgentOptions(
                authz_socket=tmp_path / "authz.sock",
                proxy_listen=PROXY,
                state_dir=tmp_path / "state",
                registry_json=tmp_path / "registry.json",
                long_poll=1,
                docker_socket=path,
            )
        )

        def engine_on_record() -> object:
            devices = owner.get("/orgs/acme/devices").json()["devices"]
            return devices[0]["engine"] if devices else "no check-in yet"

        async def eventually(expected: object) -> None:
            # A blocking call on the agent's loop: the server runs in a thread of its own.
            await until(lambda: engine_on_record() == expected, 20, f"the record {expected!r}")

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(agent.run(stop))
            try:
                await eventually({"authz": True, "proxy": True})
                status = json.loads(state.status_path.read_text())
                assert status["docker_engine"]["words"] == (
                    "protected (AuthZ plugin regward, proxy 127.0.0.1:3128)"
                )
                fake.answer = (200, json.dumps(PLAIN).encode())  # dockerd restarted bare
                await agent.check_engine()  # what the minute's timer does
                await eventually({"authz": False, "proxy": False})
                fake.shutdown()  # and then stopped
                fake.server_close()
                await agent.check_engine()
                await eventually(None)
            finally:
                stop.set()
                await task

        asyncio.run(scenario())
