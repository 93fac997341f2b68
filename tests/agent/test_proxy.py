"""The egress proxy over real loopback sockets: decisions, both request forms, limits, shutdown.

Upstreams are small servers on 127.0.0.1 (or ::1) that the policy names by IP literal, or
`localhost` from the hosts file; nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import json
import os
import re
import resource
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regward.agent.http1 import ProtocolError, head_end
from regward.agent.proxy import ProxyServer, ProxySettings, configure_dockerd, decider_for_policy
from regward.agent.proxy.dockerd import engine_major, proxy_url
from regward.agent.proxy.forward import forward
from regward.agent.proxy.poller import Poller
from regward.agent.proxy.protocol import Request, Target, parse_request
from regward.agent.proxy.relay import Direction, Tunnel, Tunnels
from regward.agent.proxy.server import listen
from regward.agent.proxy.upstream import Dialer
from regward.errors import ConfigError
from regward.policy import Decision, parse_policy_text
from tests.agent.test_proxy_protocol import client_hello
from tests.harness.wait import wait_for
from tests.harness.websocket import frame, handshake


def make_decider(*addresses: str) -> Callable[[str, int], Decision]:
    """The host decision of organization acme, revision 7, allowing exactly `addresses`."""
    document = {
        "organization": "acme",
        "revision": 7,
        "registries": [{"address": address} for address in addresses],
    }
    return decider_for_policy(parse_policy_text(json.dumps(document), "policy.json"))


class Switch:
    """A decision callable whose policy a test can replace between connections."""

    def __init__(self, decide: Callable[[str, int], Decision]) -> None:
        self.decide = decide
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> Decision:
        self.calls.append((host, port))
        return self.decide(host, port)


@dataclass
class Upstream:
    """A loopback server: echoes bytes, or answers one HTTP request and records it."""

    family: int = socket.AF_INET
    http: bool = False
    requests: list[bytes] = field(default_factory=list)
    accepted: int = 0

    def __post_init__(self) -> None:
        self.sock = socket.socket(self.family, socket.SOCK_STREAM)
        self.sock.bind(("::1" if self.family == socket.AF_INET6 else "127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            if not self.http:
                while data := conn.recv(65536):
                    conn.sendall(data)
                return
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            self.requests.append(data)
            body = b'{"ok": true}'
            conn.sendall(
                b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=9\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )

    def close(self) -> None:
        self.sock.close()


class RunningProxy:
    """A ProxyServer on its own event loop thread, for blocking test clients."""

    def __init__(self, settings: ProxySettings, decide: Callable[[str, int], Decision]) -> None:
        self.loop = asyncio.new_event_loop()
        self.server = ProxyServer(settings, decide)
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.server.start())
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.host, self.port = self.server.address

    def connect(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(10)
        try:
            sock.connect((self.host, self.port))
        except OSError:
            sock.close()
            raise
        return sock

    def close(self, timeout: float = 30) -> None:
        future = asyncio.run_coroutine_threadsafe(self.server.close(), self.loop)
        future.result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextmanager
def running(
    decide: Callable[[str, int], Decision], **limits: float | str | int
) -> Iterator[RunningProxy]:
    proxy = RunningProxy(replace(ProxySettings(port=0), **limits), decide)  # type: ignore[arg-type]
    try:
        yield proxy
    finally:
        proxy.close()


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


class Responses:
    """The responses on one kept-alive connection, read one at a time, nothing lost between."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"closed before {what}: {self.buffer!r}"
        self.buffer += chunk

    def head(self) -> bytes:
        """The next response head, 1xx included."""
        while b"\r\n\r\n" not in self.buffer:
            self._fill("a response head")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head + b"\r\n\r\n"

    def next(self) -> tuple[bytes, bytes]:
        """The next final response: its head and its Content-Length body."""
        head = self.head()
        while head.startswith(b"HTTP/1.1 1"):
            head = self.head()
        length = int(re.search(rb"(?im)^content-length: *(\d+)", head)[1])  # type: ignore[index]
        while len(self.buffer) < length:
            self._fill("the end of a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return head, body

    def rest(self) -> bytes:
        """Everything else, until the other side closes."""
        return self.buffer + read_all(self.sock)


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def unread(sock: socket.socket) -> int:
    """Bytes waiting in a socket's receive buffer."""
    return int.from_bytes(fcntl.ioctl(sock, termios.FIONREAD, bytes(4)), sys.byteorder)


def exchange(proxy: RunningProxy, request: bytes) -> bytes:
    with proxy.connect() as sock:
        sock.sendall(request)
        return read_all(sock)


@pytest.fixture(scope="module")
def echo() -> Iterator[Upstream]:
    upstream = Upstream()
    yield upstream
    upstream.close()


def test_defaults_are_loopback_3128() -> None:
    settings = ProxySettings()
    assert (settings.host, settings.port) == ("127.0.0.1", 3128)
    assert ProxySettings.from_listen("[::1]:3129").host == "::1"
    with pytest.raises(ConfigError, match="'nowhere' is not HOST:PORT"):
        ProxySettings.from_listen("nowhere")


def test_connect_tunnel_relays_both_ways_including_early_bytes(echo: Upstream) -> None:
    with running(make_decider(f"127.0.0.1:{echo.port}")) as proxy, proxy.connect() as sock:
        # A client may send its first bytes (a TLS ClientHello) right behind the CONNECT head.
        sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\nearly".encode())
        head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        rest = head.split(b"\r\n\r\n", 1)[1]
        while len(rest) < 5:
            rest += sock.recv(100)
        assert rest == b"early"
        payload = bytes(range(256)) * 40000  # 10 MB each way, through the pipes
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = bytearray()
        while len(received) < len(payload):
            received += sock.recv(1 << 20)
        sender.join()
        assert received == payload
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""  # the upstream's end travels back as EOF


def test_an_ended_tunnel_is_freed_at_once_not_by_the_cycle_collector(echo: Upstream) -> None:
    """No reference cycle outlives a tunnel: with the cyclic collector off, nothing of the
    tunnels is left once they ended (the collector otherwise ran every few dozen connections)."""
    gc.collect()
    gc.disable()
    try:
        with running(make_decider(f"127.0.0.1:{echo.port}")) as proxy:
            for _ in range(5):
                with proxy.connect() as sock:
                    sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\nping".encode())
                    assert read_head(sock).startswith(b"HTTP/1.1 200 ")
                    sock.shutdown(socket.SHUT_WR)
                    read_all(sock)
            wait_for(lambda: proxy.server.connections == 0, 10, "the tunnels to end")
            left = [o for o in gc.get_objects() if isinstance(o, Tunnel | Direction)]
            assert left == []
            pollers = [o for o in gc.get_objects() if isinstance(o, Poller)]
            assert pollers and all(poller.watched == 0 for poller in pollers)  # none kept
    finally:
        gc.enable()


def test_refused_connect_names_the_reason_and_never_contacts_upstream(echo: Upstream) -> None:
    before = echo.accepted
    with running(make_decider("allowed.test")) as proxy:
        response = exchange(proxy, f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
    status, _, rest = response.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 403 Forbidden (Access to 127.0.0.1:")
    assert b"restricted by your organization 'acme' (policy revision 7)" in status
    body = json.loads(rest.split(b"\r\n\r\n", 1)[1])
    assert body["errors"][0]["code"] == "DENIED"
    assert "Ask an owner of 'acme'" in body["errors"][0]["message"]
    assert echo.accepted == before


def test_ip_literal_needs_an_entry_that_names_it(echo: Upstream) -> None:
    # localhost resolves to 127.0.0.1, but an entry for the name does not admit the literal.
    with running(make_decider(f"localhost:{echo.port}")) as proxy:
        literal = exchange(proxy, f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
        named = proxy.connect()
        named.sendall(f"CONNECT localhost:{echo.port} HTTP/1.1\r\n\r\n".encode())
        assert read_head(named).startswith(b"HTTP/1.1 200 ")
        named.sendall(b"ping")
        assert named.recv(10) == b"ping"
        named.close()
        numeric = exchange(proxy, f"CONNECT 127.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
    assert literal.startswith(b"HTTP/1.1 403 ")
    assert numeric.startswith(b"HTTP/1.1 400 ")


def test_refused_names_are_never_resolved() -> None:
    # A name outside every hosts file would go to DNS; a refusal must come before any lookup,
    # so the answer is 403 (not 502 "cannot resolve").
    with running(make_decider("allowed.test")) as proxy:
        response = exchange(proxy, b"CONNECT never-resolved.invalid:443 HTTP/1.1\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 403 Forbidden (Access to never-resolved.invalid:443")


def test_ipv6_bracketed_connect() -> None:
    upstream = Upstream(family=socket.AF_INET6)
    try:
        with running(make_decider(f"[::1]:{upstream.port}"), host="::1") as proxy:
            with proxy.connect() as sock:
                sock.sendall(f"CONNECT [::1]:{upstream.port} HTTP/1.1\r\n\r\n".encode())
                assert read_head(sock).startswith(b"HTTP/1.1 200 ")
                sock.sendall(b"v6")
                assert sock.recv(10) == b"v6"
            refused = exchange(proxy, f"CONNECT [::2]:{upstream.port} HTTP/1.1\r\n\r\n".encode())
        assert refused.startswith(b"HTTP/1.1 403 Forbidden (Access to [::2]:")
    finally:
        upstream.close()


def test_absolute_form_is_rewritten_and_kept_alive() -> None:
    upstream = Upstream(http=True)  # answers one request per connection, then closes it
    try:
        with running(make_decider(f"127.0.0.1:{upstream.port}")) as proxy:
            with proxy.connect() as sock:
                responses = Responses(sock)
                for n in (1, 2):  # the second on the same connection: a new upstream one
                    sock.sendall(
                        f"GET http://127.0.0.1:{upstream.port}/v2/?n={n} HTTP/1.1\r\n"
                        "Host: other.example\r\nProxy-Connection: keep-alive\r\n"
                        "Proxy-Authorization: Basic eDp5\r\nConnection: X-Drop\r\nX-Drop: 1\r\n"
                        "Accept: */*\r\n\r\n".encode()
                    )
                    assert responses.head() == b"HTTP/1.1 100 Continue\r\n\r\n"
                    final_head, body = responses.next()
                    assert final_head.startswith(b"HTTP/1.1 200 OK\r\n")
                    assert b"Connection" not in final_head and b"Keep-Alive" not in final_head
                    assert json.loads(body) == {"ok": True}
                sock.sendall(
                    b"GET http://127.0.0.1:%d/v2/ HTTP/1.1\r\nConnection: close\r\n\r\n"
                    % upstream.port
                )
                final_head, _ = responses.next()
                assert b"\r\nConnection: close\r\n" in final_head
                assert sock.recv(1) == b""  # closed after the response, as the client asked
        assert upstream.accepted == 3
        for n, sent in enumerate(upstream.requests[:2], 1):
            assert sent.decode() == (
                f"GET /v2/?n={n} HTTP/1.1\r\nHost: 127.0.0.1:{upstream.port}\r\nAccept: */*\r\n\r\n"
            )
        assert upstream.requests[2].endswith(b"Connection: close\r\n\r\n")
    finally:
        upstream.close()


def test_absolute_form_refused_with_registry_error() -> None:
    with running(make_decider("allowed.test")) as proxy:
        response = exchange(proxy, b"GET http://blocked.test:5000/v2/ HTTP/1.1\r\n\r\n")
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 403 Forbidden (Access to blocked.test:5000 is restricted")
    assert json.loads(body)["errors"][0]["code"] == "DENIED"


def test_new_policy_applies_to_the_next_connection(echo: Upstream) -> None:
    switch = Switch(make_decider(f"127.0.0.1:{echo.port}"))
    with running(switch) as proxy:
        kept = proxy.connect()
        kept.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
        assert read_head(kept).startswith(b"HTTP/1.1 200 ")
        switch.decide = make_decider()  # an empty list: nothing is allowed
        refused = exchange(proxy, f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
        kept.close()
    assert refused.startswith(b"HTTP/1.1 403 ")
    assert switch.calls == [("127.0.0.1", echo.port)] * 2


def test_a_policy_change_ends_open_tunnels_it_no_longer_allows(echo: Upstream) -> None:
    """An owner removes a registry: tunnels already open to it end; others carry on."""
    other = Upstream()
    switch = Switch(
        make_decider(
            f"127.0.0.1:{echo.port}", f"also-allowed.test:{echo.port}", f"127.0.0.1:{other.port}"
        )
    )

    def tunnel(proxy: RunningProxy, port: int, first: bytes) -> socket.socket:
        sock = proxy.connect()
        sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode() + first)
        echoed = read_head(sock).split(b"\r\n\r\n", 1)[1]
        while len(echoed) < len(first):
            echoed += sock.recv(65536)
        assert echoed == first
        return sock

    try:
        with running(switch) as proxy:
            removed = tunnel(proxy, echo.port, b"hello")
            fronted = tunnel(proxy, echo.port, client_hello("also-allowed.test"))
            kept = tunnel(proxy, other.port, b"hello")
            # The registry echo.port is on stays; the name the TLS asked for is removed.
            switch.decide = make_decider(f"127.0.0.1:{other.port}", f"127.0.0.1:{echo.port}")
            proxy.loop.call_soon_threadsafe(proxy.server.recheck)
            assert read_all(fronted) == b""
            switch.decide = make_decider(f"127.0.0.1:{other.port}")
            proxy.loop.call_soon_threadsafe(proxy.server.recheck)
            assert read_all(removed) == b""
            kept.sendall(b"still here")
            assert kept.recv(100) == b"still here"
            for sock in (removed, fronted, kept):
                sock.close()
    finally:
        other.close()


def test_a_failing_decision_fails_closed(echo: Upstream) -> None:
    def broken(host: str, port: int) -> Decision:
        raise RuntimeError("policy store exploded")

    with running(broken) as proxy:
        response = exchange(proxy, f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 503 Service Unavailable (Regward could not check")


def test_unreachable_registry_is_502() -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with running(make_decider(f"127.0.0.1:{port}")) as proxy:
        response = exchange(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
    assert response.startswith(b"HTTP/1.1 502 Bad Gateway (cannot connect to 127.0.0.1:")


def test_slow_clients_time_out_and_oversized_heads_are_refused(echo: Upstream) -> None:
    with running(make_decider(f"127.0.0.1:{echo.port}"), handshake_timeout=0.3) as proxy:
        with proxy.connect() as slow:
            slow.sendall(b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nX-Slow: ")
            assert read_all(slow).startswith(b"HTTP/1.1 408 Request Timeout")
        big = exchange(proxy, b"CONNECT a.test:1 HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert big.startswith(b"HTTP/1.1 431 ")


def test_the_listener_hands_connections_over_with_their_head_and_no_nagle() -> None:
    """The accept path relies on the listener's options (`server.tune`): accepted sockets
    inherit TCP_NODELAY, and a connection is queued only once its first bytes are there."""
    loop = asyncio.new_event_loop()
    listener = listen(ProxySettings(port=0))
    server = ProxyServer(ProxySettings(port=0), make_decider())
    try:
        loop.run_until_complete(server.start(listener))
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
        assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        loop.remove_reader(listener.fileno())  # this test accepts itself
        listener.setblocking(True)
        listener.settimeout(10)
        with socket.create_connection(listener.getsockname()[:2], timeout=10) as client:
            client.sendall(b"CONNECT a.test:443 HTTP/1.1\r\n\r\n")
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert accepted.recv(100, socket.MSG_DONTWAIT).startswith(b"CONNECT a.test")
    finally:
        loop.run_until_complete(server.close())
        loop.close()


def test_open_connection_limit(echo: Upstream) -> None:
    with running(make_decider(f"127.0.0.1:{echo.port}"), max_connections=2) as proxy:
        held = [proxy.connect(), proxy.connect()]
        for sock in held:
            sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
            assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        assert exchange(proxy, b"").startswith(b"HTTP/1.1 503 ")
        held.pop().close()
        wait_for(lambda: proxy.server.connections == 1, 10, "the proxy to drop the closed tunnel")
        with proxy.connect() as again:
            again.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
            assert read_head(again).startswith(b"HTTP/1.1 200 ")
        held[0].close()


def test_idle_tunnels_are_closed(echo: Upstream) -> None:
    with running(make_decider(f"127.0.0.1:{echo.port}"), idle_timeout=0.4) as proxy:
        with proxy.connect() as sock:
            sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
            assert read_head(sock).startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"ping")  # open, and carrying bytes, until it goes quiet
            assert sock.recv(100) == b"ping"
            assert read_all(sock) == b""


def test_a_tunnel_whose_client_never_speaks_is_closed_when_idle(echo: Upstream) -> None:
    with running(make_decider(f"127.0.0.1:{echo.port}"), idle_timeout=0.4) as proxy:
        with proxy.connect() as sock:
            sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
            assert read_head(sock).startswith(b"HTTP/1.1 200 ")
            assert read_all(sock) == b""  # no first bytes, no relay: the sweep ends it
        wait_for(lambda: proxy.server.connections == 0, 10, "the proxy to forget the tunnel")


def test_graceful_shutdown_lets_tunnels_finish_then_stops(echo: Upstream) -> None:
    proxy = RunningProxy(
        replace(ProxySettings(port=0), shutdown_grace=5.0), make_decider(f"127.0.0.1:{echo.port}")
    )
    sock = proxy.connect()
    sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
    assert read_head(sock).startswith(b"HTTP/1.1 200 ")
    closer = threading.Thread(target=proxy.close)
    closer.start()

    def refused() -> bool:
        try:
            proxy.connect().close()
        except OSError:
            return True
        return False

    wait_for(refused, 10, "the proxy to stop accepting")  # no new connections
    sock.sendall(b"still here")  # the open tunnel keeps working during the grace period
    assert sock.recv(100) == b"still here"
    sock.close()
    closer.join(10)
    assert not closer.is_alive()


# Any bytes a client sends get an answer or a close, and the proxy keeps serving.
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(min_size=1, max_size=2000).map(lambda data: data + b"\r\n\r\n"))
def test_malformed_requests_never_take_the_proxy_down(data: bytes) -> None:
    proxy = _FUZZ_PROXY
    assert proxy is not None
    response = exchange(proxy, data)
    assert response == b"" or response.startswith(b"HTTP/1.1 ")
    # Still deciding: allowed, then nothing listens on port 1.
    ok = exchange(proxy, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n\r\n")
    assert ok.startswith(b"HTTP/1.1 502 ")


_FUZZ_PROXY: RunningProxy | None = None


@pytest.fixture(scope="module", autouse=True)
def _fuzz_proxy() -> Iterator[None]:
    global _FUZZ_PROXY
    with running(make_decider("127.0.0.1:1")) as proxy:
        _FUZZ_PROXY = proxy
        yield
    _FUZZ_PROXY = None


def test_dockerd_dropin_for_engine_20(tmp_path: Path) -> None:
    dropin = tmp_path / "docker.service.d" / "regward-proxy.conf"
    daemon = tmp_path / "daemon.json"
    changes = configure_dockerd("127.0.0.1:3128", engine=20, dropin=dropin, daemon_json=daemon)
    assert changes[0].startswith(str(dropin))
    text = dropin.read_text()
    assert '"HTTPS_PROXY=http://127.0.0.1:3128"' in text and text.count("[Service]") == 1
    assert not daemon.exists()  # 20.10 refuses a daemon.json with "proxies"
    again = configure_dockerd("127.0.0.1:3128", engine=20, dropin=dropin, daemon_json=daemon)
    assert "already" in again[0]


def test_dockerd_daemon_json_for_engine_23_keeps_other_keys(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon.json"
    daemon.write_text('{"authorization-plugins": ["regward"]}')
    configure_dockerd("[::1]:3128", engine=27, dropin=tmp_path / "x.conf", daemon_json=daemon)
    config = json.loads(daemon.read_text())
    assert config["authorization-plugins"] == ["regward"]
    assert config["proxies"]["https-proxy"] == "http://[::1]:3128"
    assert not (tmp_path / "x.conf").exists()
    daemon.write_text("[1]")
    with pytest.raises(ConfigError, match="not a JSON object"):
        configure_dockerd("127.0.0.1:3128", engine=27, daemon_json=daemon)


def test_engine_version_and_url_helpers() -> None:
    assert engine_major("Docker version 20.10.24+dfsg1, build 297e128") == 20
    assert engine_major("Docker version 28.2.2, build e6534b4") == 28
    assert engine_major("garbage") is None
    assert proxy_url("0.0.0.0:3128") == "http://127.0.0.1:3128"


def test_out_of_descriptors_pauses_accepting_and_recovers(tmp_path: Path, echo: Upstream) -> None:
    """`regward agent proxy` under a 48-descriptor limit: a flood of idle clients exhausts it,
    the proxy pauses accepting instead of failing, and serves again once they leave."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"organization: acme\nregistries:\n  - address: 127.0.0.1:{echo.port}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "proxy.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))

    env = {"REGWARD_AGENT_DIR": str(tmp_path / "agent"), "PATH": os.environ["PATH"]}
    env["REGWARD_REGISTRY_JSON"] = str(tmp_path / "none.json")
    argv = [sys.executable, "-m", "regward.cli", "agent", "proxy", "--policy", str(policy)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=limit,
        )
    flood: list[socket.socket] = []
    try:
        wait_for(lambda: b"listening" in log.read_bytes(), 20, "the proxy to listen")
        for _ in range(80):
            flood.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        wait_for(lambda: b"pausing" in log.read_bytes(), 20, "the proxy to run out of files")
        assert b"proxy accept failed, pausing 0.1 s: [Errno 24]" in log.read_bytes()
        for sock in flood:
            sock.close()
        flood.clear()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.settimeout(20)
            sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode())
            assert read_head(sock).startswith(b"HTTP/1.1 200 ")
        assert process.poll() is None
    finally:
        for sock in flood:
            sock.close()
        process.terminate()
        process.wait(30)


def test_tls_naming_another_server_needs_that_name_allowed(echo: Upstream) -> None:
    """Domain fronting: CONNECT to an allowed address, then a ClientHello for another name."""
    decide = make_decider(f"127.0.0.1:{echo.port}", f"also-allowed.test:{echo.port}")
    with running(decide) as proxy:
        for server_name, passes in (("evil.test", False), ("also-allowed.test", True)):
            hello = client_hello(server_name)
            with proxy.connect() as sock:
                sock.sendall(f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode() + hello)
                head = read_head(sock)
                assert head.startswith(b"HTTP/1.1 200 ")
                echoed = head.split(b"\r\n\r\n", 1)[1]
                if passes:
                    while len(echoed) < len(hello):
                        echoed += sock.recv(65536)
                    assert echoed == hello
                else:  # closed, and nothing reached the registry to be echoed
                    assert echoed + read_all(sock) == b""


def test_plain_bytes_cross_a_tunnel_only_to_an_address_named_with_its_port(
    echo: Upstream,
) -> None:
    """A catalog or extra host may be a shared front (a CDN) that routes plain HTTP by its Host
    header to any tenant: a tunnel there must carry TLS. An owner's `host:port` entry may
    carry anything."""
    document = {
        "organization": "acme",
        "registries": [{"address": "reg.example", "extra_hosts": [f"127.0.0.1:{echo.port}"]}],
    }
    decide = decider_for_policy(parse_policy_text(json.dumps(document), "policy.json"))
    connect = f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode()
    fronting = b"GET / HTTP/1.1\r\nHost: another-tenant.example\r\n\r\n"
    hello = client_hello(None)  # TLS to the address itself, as to an IP literal: no name
    with running(decide) as proxy:
        for first, passes in ((fronting, False), (hello, True)):
            with proxy.connect() as sock:
                sock.sendall(connect + first)
                head = read_head(sock)
                assert head.startswith(b"HTTP/1.1 200 ")
                echoed = head.split(b"\r\n\r\n", 1)[1]
                if passes:
                    while len(echoed) < len(first):
                        chunk = sock.recv(65536)
                        assert chunk, "the tunnel was closed"
                        echoed += chunk
                    assert echoed == first
                else:  # closed, and nothing reached the upstream to be echoed
                    assert echoed + read_all(sock) == b""
    with running(make_decider(f"127.0.0.1:{echo.port}")) as proxy, proxy.connect() as sock:
        sock.sendall(connect + fronting)
        echoed = read_head(sock).split(b"\r\n\r\n", 1)[1]
        while len(echoed) < len(fronting):
            chunk = sock.recv(65536)
            assert chunk, "the tunnel was closed"
            echoed += chunk
        assert echoed == fronting


def test_standalone_command_rereads_its_policy_file(tmp_path: Path, echo: Upstream) -> None:
    """`regward agent proxy --policy FILE`: an edited file governs the next connection."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"organization: acme\nregistries:\n  - address: 127.0.0.1:{echo.port}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "REGWARD_AGENT_DIR": str(tmp_path / "agent"),
        "REGWARD_REGISTRY_JSON": str(tmp_path / "none.json"),
        "PATH": os.environ["PATH"],
    }
    argv = [sys.executable, "-m", "regward.cli", "agent", "proxy", "--policy", str(policy)]
    log = tmp_path / "proxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{port}"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    request = f"CONNECT 127.0.0.1:{echo.port} HTTP/1.1\r\n\r\n".encode()

    def status() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            return read_head(sock)[:12]

    try:
        wait_for(lambda: b"listening" in log.read_bytes(), 20, "the proxy to listen")
        assert status() == b"HTTP/1.1 200"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as kept:
            kept.sendall(request)
            assert read_head(kept).startswith(b"HTTP/1.1 200")
            policy.write_text("organization: acme\nrevision: 2\nregistries: []\n")
            wait_for(lambda: status() == b"HTTP/1.1 403", 20, "the edit to apply")
            assert read_all(kept) == b""  # the tunnel opened before the edit ended with it
        policy.write_text("registries: [oops")  # a broken edit keeps the last good policy
        warning = b"policy not reloaded, keeping the previous one"
        wait_for(lambda: warning in log.read_bytes(), 20, "the broken edit to be read")
        assert status() == b"HTTP/1.1 403"
    finally:
        process.terminate()
        assert process.wait(30) == 0


def test_a_slow_reader_gets_every_byte() -> None:
    """The registry sends faster than the client reads: the proxy stops reading (the pipe and
    socket buffers fill), then resumes, and no byte is lost or reordered."""
    payload = os.urandom(1 << 20) * 24
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]

    def push() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(payload)

    pusher = threading.Thread(target=push, daemon=True)
    pusher.start()
    try:
        with running(make_decider(f"127.0.0.1:{port}")) as proxy, proxy.connect() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            received = bytearray(read_head(sock).split(b"\r\n\r\n", 1)[1])
            # Every buffer on the way fills: the client's first, then the proxy stops reading.
            wait_for(lambda: unread(sock) >= 32768, 20, "the client's buffer to fill")
            while len(received) < len(payload):
                chunk = sock.recv(1 << 16)
                assert chunk
                received += chunk
            assert received == payload
    finally:
        pusher.join(10)
        server.close()


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        ("", b""),
        ("Content-Length: 5\r\n", b"hello"),
        ("Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
    ],
)
@pytest.mark.parametrize(
    ("smuggled", "answer"),
    [
        (b"GET /v2/secret HTTP/1.1\r\nHost: other-tenant.example\r\n\r\n", b"400"),
        (b"GET http://other-tenant.example/v2/secret HTTP/1.1\r\n\r\n", b"403"),
    ],
    ids=["origin-form", "refused-host"],
)
def test_a_request_behind_a_forwarded_one_is_decided_by_itself(
    fields: str, body: bytes, smuggled: bytes, answer: bytes
) -> None:
    """A request pipelined behind the body, with a Host of its own, would reach another tenant
    of a front that serves more than one request per connection: it is read as the next
    request, decided by its own target, and refused; nothing of it reaches the registry."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    head = f"PUT http://127.0.0.1:{port}/v2/x HTTP/1.1\r\n{fields}\r\n".encode()
    expected = f"PUT /v2/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{fields}\r\n".encode() + body
    received: list[bytes] = []

    def serve() -> None:  # reads the request, answers, then reads until the proxy closes
        conn, _ = listener.accept()
        with conn:
            data = b""
            while len(data) < len(expected) and (chunk := conn.recv(65536)):
                data += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            received.append(data + read_all(conn))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with running(make_decider(f"127.0.0.1:{port}")) as proxy, proxy.connect() as sock:
            sock.sendall(head + body + smuggled)
            responses = Responses(sock)
            assert responses.next() == (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"ok")
            refused = responses.rest()
        thread.join(10)
    finally:
        listener.close()
    assert refused.startswith(b"HTTP/1.1 " + answer + b" "), refused
    assert received == [expected]


def test_100_continue_reaches_the_client_before_its_body() -> None:
    """A client that sends `Expect: 100-continue` holds its body until the registry's 100."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    bodies: list[bytes] = []

    def serve() -> None:  # answers 100, then 201 once the whole body is in
        conn, _ = listener.accept()
        with conn:
            data = read_head(conn)
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = data.split(b"\r\n\r\n", 1)[1]
            while len(body) < 5 and (chunk := conn.recv(65536)):
                body += chunk
            bodies.append(body)
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with running(make_decider(f"127.0.0.1:{port}")) as proxy, proxy.connect() as sock:
            sock.sendall(
                f"PUT http://127.0.0.1:{port}/v2/x HTTP/1.1\r\n"
                "Expect: 100-continue\r\nContent-Length: 5\r\n\r\n".encode()
            )
            assert read_head(sock) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"hello")
            final, _ = Responses(sock).next()
        thread.join(10)
    finally:
        listener.close()
    assert bodies == [b"hello"]
    assert final.startswith(b"HTTP/1.1 201 Created\r\n")


def test_a_slow_upload_waits_for_its_answer_while_the_body_keeps_moving() -> None:
    """A large push to a slow plain-HTTP registry: the wait for the response counts from the
    last body byte, not from the request, so only a stalled upload times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    pieces, bodies = 12, []

    def serve() -> None:  # answers once the whole body is in
        conn, _ = listener.accept()
        with conn:
            body = read_head(conn).split(b"\r\n\r\n", 1)[1]
            while len(body) < pieces and (chunk := conn.recv(65536)):
                body += chunk
            bodies.append(body)
            conn.sendall(b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\n")
            time.sleep(0.1)  # the scenario: the body comes after its head (spliced, not read)
            conn.sendall(b"created")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        # The upload takes about four idle timeouts, one byte at a time.
        with running(make_decider(f"127.0.0.1:{port}"), idle_timeout=0.5) as proxy:
            with proxy.connect() as sock:
                sock.sendall(
                    f"PUT http://127.0.0.1:{port}/v2/x HTTP/1.1\r\n"
                    f"Content-Length: {pieces}\r\n\r\n".encode()
                )
                for _ in range(pieces):
                    time.sleep(0.15)  # the scenario: a slow client, not a wait for the proxy
                    sock.sendall(b"x")
                final = read_all(sock)
        thread.join(10)
    finally:
        listener.close()
    assert bodies == [b"x" * pieces]
    assert final.startswith(b"HTTP/1.1 201 Created\r\n") and final.endswith(b"created")


def test_bytes_a_registry_sends_after_a_response_never_answer_the_next_request() -> None:
    """A registry that sends a second response nobody asked for, once the first is relayed:
    the next request goes on a new connection, so the unasked one never answers it."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    served: list[bytes] = []
    relayed, unasked_sent = threading.Event(), threading.Event()

    def serve() -> None:
        for index in range(2):
            conn, _ = listener.accept()
            with conn:
                served.append(read_head(conn))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nreal%d" % index)
                if index == 0:
                    assert relayed.wait(10)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfake!")
                    unasked_sent.set()
                with contextlib.suppress(ConnectionResetError):  # closed with "fake!" unread
                    read_all(conn)  # until the proxy closes it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    get = f"GET http://127.0.0.1:{port}/v2/ HTTP/1.1\r\n\r\n".encode()
    try:
        with running(make_decider(f"127.0.0.1:{port}")) as proxy, proxy.connect() as sock:
            responses = Responses(sock)
            sock.sendall(get)
            assert responses.next()[1] == b"real0"
            relayed.set()
            assert unasked_sent.wait(10)
            sock.sendall(get)
            assert responses.next()[1] == b"real1"
        thread.join(10)
    finally:
        listener.close()
    assert len(served) == 2


def test_a_chunked_response_is_relayed_whole_and_what_follows_it_is_dropped() -> None:
    """A chunked response arriving in pieces reaches the client whole; bytes the registry sent
    behind its last chunk are never relayed, and its connection is not asked again."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    first_chunk_relayed = threading.Event()

    def serve() -> None:
        for index in range(2):
            conn, _ = listener.accept()
            with conn:
                read_head(conn)
                if index == 1:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nreal1")
                else:
                    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    conn.sendall(head + b"3\r\nabc\r\n")
                    assert first_chunk_relayed.wait(10)
                    fake = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfake!"
                    conn.sendall(b"2\r\nde\r\n0\r\n\r\n" + fake)
                with contextlib.suppress(ConnectionResetError):
                    read_all(conn)  # until the proxy closes it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    get = f"GET http://127.0.0.1:{port}/v2/ HTTP/1.1\r\n\r\n".encode()
    try:
        with running(make_decider(f"127.0.0.1:{port}")) as proxy, proxy.connect() as sock:
            sock.sendall(get)
            data = read_head(sock)
            while not data.endswith(b"3\r\nabc\r\n"):
                data += sock.recv(65536)
            first_chunk_relayed.set()
            while not data.endswith(b"0\r\n\r\n"):
                chunk = sock.recv(65536)
                assert chunk, data
                data += chunk
            assert data.split(b"\r\n\r\n", 1)[1] == b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            sock.sendall(get)
            assert Responses(sock).next()[1] == b"real1"
        thread.join(10)
    finally:
        listener.close()


# ---- Upgrade: the transparent listener's WebSockets (`forward(..., upgrades=True)`) ----------


def test_the_proxy_drops_upgrade_as_before() -> None:
    """The egress proxy's absolute-form requests lose `Upgrade` (its clients send WebSockets
    through CONNECT); the server answers over HTTP/1.1."""
    upstream = Upstream(http=True)
    try:
        with running(make_decider(f"127.0.0.1:{upstream.port}")) as proxy:
            with proxy.connect() as sock:
                sock.sendall(
                    handshake(f"127.0.0.1:{upstream.port}").replace(
                        b"GET /echo", b"GET http://127.0.0.1:%d/echo" % upstream.port
                    )
                )
                assert Responses(sock).next()[0].startswith(b"HTTP/1.1 200 OK\r\n")
        (sent,) = upstream.requests
        assert b"Upgrade" not in sent and b"upgrade" not in sent.lower()
    finally:
        upstream.close()


class Forwarding:
    """`forward(..., upgrades=True)` (the transparent listener's) on its own loop thread, for
    one client connection (a socket pair: `client` is the test's end) to a loopback server,
    every request routed to it."""

    def __init__(self, port: int, first: bytes) -> None:
        self.client, ours = socket.socketpair()
        self.client.settimeout(10)
        ours.setblocking(False)
        self.error: BaseException | None = None
        settings = ProxySettings(port=0)

        async def route(request: Request) -> Target:
            return Target("127.0.0.1", port)

        async def run() -> None:
            end = head_end(first)
            request = parse_request(first[:end], origin_port=port)
            parse = functools.partial(parse_request, origin_port=port)
            try:
                await forward(
                    Tunnels(), settings, Dialer(settings), ours, request, first[end:], route,
                    parse, None, True,
                )  # fmt: skip
            except BaseException as error:
                self.error = error
            finally:
                ours.close()

        self.thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.client.close()


def read_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def test_after_a_101_both_directions_are_relayed_and_early_bytes_wait_for_it() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    early = frame(b"sent before the 101")
    forwarding = Forwarding(server.getsockname()[1], handshake("ws.test") + early)
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            head = read_head(conn)  # all the forwarder sent before any answer: the head alone
            assert head.endswith(b"\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"), head
            assert head.startswith(b"GET /echo HTTP/1.1\r\nHost: ws.test:")
            conn.sendall(SWITCHED + b"server speaks first")
            answer = read_exactly(forwarding.client, len(SWITCHED) + 19)
            assert answer == SWITCHED + b"server speaks first"  # the 101 as the server sent it
            assert read_exactly(conn, len(early)) == early
            forwarding.client.sendall(b"GET /v2/ HTTP/1.1\r\nHost: blocked.test\r\n\r\n")
            assert read_exactly(conn, 41) == b"GET /v2/ HTTP/1.1\r\nHost: blocked.test\r\n\r\n"
            conn.sendall(b"back")
            assert read_exactly(forwarding.client, 4) == b"back"
        assert forwarding.client.recv(1) == b""  # the server's end is passed on, and so
        forwarding.client.shutdown(socket.SHUT_WR)  # is the client's: then the tunnel ends
        forwarding.join()
        assert forwarding.error is None
    finally:
        server.close()


@pytest.mark.parametrize(
    ("first", "answer", "why"),
    [
        (handshake("ws.test"), b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", "ask"),
        (  # not an upgrade request, as the egress proxy's or with Upgrade dropped
            b"GET /echo HTTP/1.1\r\nHost: ws.test\r\n\r\n",
            SWITCHED,
            "unasked",
        ),
    ],
    ids=["another-protocol", "unasked"],
)
def test_a_101_the_client_did_not_ask_for_is_a_502_and_nothing_is_relayed(
    first: bytes, answer: bytes, why: str
) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    forwarding = Forwarding(server.getsockname()[1], first + frame(b"early"))
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(10)
            read_head(conn)
            conn.sendall(answer + b"after")
            forwarding.join()
            assert isinstance(forwarding.error, ProtocolError), forwarding.error
            assert forwarding.error.status == 502 and why in forwarding.error.message
            assert read_all(conn) == b""  # the early bytes never reached the server
    finally:
        server.close()
