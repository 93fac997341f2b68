"""Transparent enforcement's pure parts: the flags, the nft script, the probe's reading, the
registry rule, origin-form requests, and the denial reports it files. The listener itself runs
against real nftables, dockerd and containers in test_transparent_e2e.py."""

from __future__ import annotations

import asyncio
import socket
import string
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.agent.guard import DenialReport, Enforcement, Guard
from regward.agent.http1 import ProtocolError
from regward.agent.proxy.protocol import parse_request
from regward.agent.state import AgentState, Credentials
from regward.agent.sync import Syncer
from regward.agent.transparent import (
    ALL_PORTS,
    DEFAULT_PORTS,
    TransparentSettings,
    describe_taken,
    parse_interfaces,
    parse_ports,
)
from regward.agent.transparent.listener import bind
from regward.agent.transparent.probe import RegistryProbe, looks_like_registry
from regward.agent.transparent.rules import policy_ports, ruleset, taken_ports
from regward.errors import ConfigError
from regward.policy import Policy, generate_key, public_key_to_text
from regward.policy.engine import registry_host

POLICY = Policy.from_dict(
    {
        "organization": "acme",
        "revision": 4,
        "enabled": True,
        "registries": [
            {"address": "reg.internal:5000"},
            {"address": "docker.io"},
            {"address": "old.example", "allowed": False},
            {"address": "mirror.example", "extra_hosts": ["blobs.example:8443"]},
        ],
    }
)
PORTS = st.lists(st.integers(min_value=1, max_value=65535), min_size=1, max_size=8)
NAME = st.text(string.ascii_letters + string.digits + "_.-@:", min_size=1, max_size=14)


# ---- flags ----------------------------------------------------------------------------------


def test_the_default_interfaces_and_ports() -> None:
    assert parse_interfaces("docker0,br-*") == ("docker0", "br-*")
    assert parse_interfaces(" docker0 , cni-podman0,docker0") == ("docker0", "cni-podman0")
    assert parse_ports("80,443,5000") == DEFAULT_PORTS
    assert parse_ports("ALL") == ALL_PORTS


@pytest.mark.parametrize("text", ["", ",", "eth0;rm -rf", 'eth"0', "a*b", "x" * 16, "*x"])
def test_bad_interfaces_name_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="--transparent-interfaces"):
        parse_interfaces(text)


@pytest.mark.parametrize("text", ["", "0", "65536", "80,,443", "http", "80 443", "٣"])
def test_bad_ports_name_the_value(text: str) -> None:
    with pytest.raises(ConfigError, match="--transparent-ports"):
        parse_ports(text)


@given(PORTS)
def test_any_port_list_reads_back(ports: list[int]) -> None:
    assert parse_ports(",".join(map(str, ports))) == frozenset(ports)


@given(st.lists(NAME, min_size=1, max_size=5), st.booleans())
def test_any_interface_names_read_back(names: list[str], wildcard: bool) -> None:
    names = [name + "*" if wildcard and len(name) < 15 else name for name in names]
    assert parse_interfaces(",".join(names)) == tuple(dict.fromkeys(names))


@given(st.text(max_size=40))
def test_any_text_is_a_list_or_a_config_error(text: str) -> None:
    for parse in (parse_ports, parse_interfaces):
        try:
            parse(text)
        except ConfigError:
            pass


# ---- the nft script -------------------------------------------------------------------------


def test_the_taken_ports_add_every_port_an_entry_names() -> None:
    assert policy_ports(POLICY) == {5000, 8443}
    assert policy_ports(None) == frozenset()
    settings = TransparentSettings(listen_port=3129)
    assert taken_ports(settings, frozenset({8443})) == {80, 443, 5000, 8443}
    assert taken_ports(TransparentSettings(ports=ALL_PORTS), frozenset({8443})) == ALL_PORTS


def test_the_script_replaces_the_table_in_one_go() -> None:
    script = ruleset(TransparentSettings(skip_ports=frozenset({3128})), frozenset({8443}))
    lines = script.splitlines()
    assert lines[:3] == ["table inet regward", "delete table inet regward", "table inet regward {"]
    redirect = "tcp dport { 80, 443, 5000, 8443 } redirect to :3129"
    assert f'    iifname "docker0" {redirect}' in lines
    assert f'    iifname "br-*" {redirect}' in lines
    assert "    meta mark 0x5257 return" in lines
    assert lines.index("    meta mark 0x5257 return") < lines.index(
        f"    ip daddr 127.0.0.0/8 {redirect}"
    )
    assert f"    ip6 daddr ::1 {redirect}" in lines


def test_with_all_ports_only_the_agents_own_ports_are_left_alone() -> None:
    settings = TransparentSettings(ports=ALL_PORTS, listen_port=4000, skip_ports=frozenset({3128}))
    assert 'iifname "docker0" tcp dport != { 3128, 4000 } redirect to :4000' in ruleset(settings)


def test_transparent_host_takes_this_machines_connections_to_every_address() -> None:
    """--transparent-host: the output chain redirects every destination on the taken ports
    (loopback included), still after the agent's own mark; the unit and the CLI carry it."""
    import argparse

    from regward.agent.cli import _options, add_commands
    from regward.agent.install import unit_text

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["agent", "run", "--transparent-host", "--proxy-listen", "off"])
    settings = _options(args).transparent
    assert settings.host and settings.loopback and settings.interfaces == ()
    lines = ruleset(settings).splitlines()
    mark = "    meta mark 0x5257 return"
    anywhere = "    tcp dport { 80, 443, 5000 } redirect to :3129"
    assert lines.index(mark) < lines.index(anywhere)
    assert not any("daddr" in line for line in lines)  # no destination narrows it
    assert "--transparent-host" in unit_text(_options(args))
    from regward.agent.runner import AgentOptions

    assert "--transparent-host" not in unit_text(AgentOptions(transparent=TransparentSettings()))
    loopback_only = ruleset(TransparentSettings(interfaces=()))
    assert "ip daddr 127.0.0.0/8" in loopback_only and anywhere not in loopback_only
    assert describe_taken((), True, {443}, host=True) == "this machine; ports 443"
    with pytest.raises(ConfigError, match="--transparent-host takes this machine's"):
        _options(parser.parse_args(["agent", "run", "--transparent-host", "--loopback", "off"]))


# ---- the registry rule and the probe --------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "port", "registry"),
    [
        ("reg.internal", 5000, True),  # an entry
        ("old.example", 443, True),  # an entry switched off is still a registry
        ("blobs.example", 8443, True),  # an extra host of an allowed entry
        ("registry-1.docker.io", 443, True),  # Docker Hub's bundle
        ("ghcr.io", 443, True),  # well known, though no entry names it
        ("x.data.azurecr.io", 443, True),
        ("deb.debian.org", 443, False),
        ("pypi.org", 443, False),
        ("reg.internal.evil.com", 5000, False),  # whole labels only
        ("not a host", 443, False),
    ],
)
def test_what_counts_as_a_registry(host: str, port: int, registry: bool) -> None:
    assert registry_host(POLICY, host, port) is registry


@pytest.mark.parametrize(
    ("head", "registry"),
    [
        (b"HTTP/1.1 200 OK\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n", True),
        (
            b"HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Bearer "
            b'realm="https://auth.example/token",service="r"\r\n\r\n',
            True,
        ),
        (b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=x\r\n\r\n", False),
        (b"HTTP/1.1 404 Not Found\r\nDocker-Distribution-API-Version: registry/2.0\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", False),
        (b"SSH-2.0-OpenSSH\r\n\r\n", False),
    ],
)
def test_a_registry_answers_the_probe_like_one(head: bytes, registry: bool) -> None:
    assert looks_like_registry(head) is registry


@given(st.binary(max_size=400))
def test_any_answer_to_the_probe_is_read_without_error(head: bytes) -> None:
    assert looks_like_registry(head) in (True, False)


# ---- origin-form requests (what a container sends to the server itself) ---------------------


def test_an_origin_form_request_takes_its_host_from_the_host_field() -> None:
    request = parse_request(
        b"GET /v2/demo/hello/manifests/v1 HTTP/1.1\r\nHost: Reg.Internal:5000\r\n\r\n",
        origin_port=80,
    )
    assert (request.target.host, request.target.port) == ("reg.internal", 5000)
    assert request.path == "/v2/demo/hello/manifests/v1"
    assert (
        parse_request(b"GET / HTTP/1.1\r\nHost: web.test\r\n\r\n", origin_port=8080).target.port
        == 8080
    )


@pytest.mark.parametrize(
    "head",
    [
        b"GET /v2/ HTTP/1.1\r\n\r\n",  # no Host
        b"GET /v2/ HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n",  # two
        b"GET http://a.test/v2/ HTTP/1.1\r\nHost: a.test\r\n\r\n",  # not origin form
        b"GET /v2/#x HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: a.test:99999\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: 127.1\r\n\r\n",
    ],
)
def test_an_origin_form_request_that_cannot_be_read_one_way_is_400(head: bytes) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_request(head, origin_port=80)
    assert raised.value.status == 400


@given(st.binary(max_size=300))
def test_any_bytes_as_an_origin_request_give_a_request_or_a_protocol_error(data: bytes) -> None:
    try:
        parse_request(data + b"\r\n\r\n", origin_port=80)
    except ProtocolError:
        pass


# ---- the denials it files -------------------------------------------------------------------


def test_a_decision_without_record_files_nothing_and_report_files_the_origin(
    tmp_path: Path,
) -> None:
    guard = Guard(Enforcement("local", POLICY, "acme"))
    decision = guard.decide_host("evil.example", 443, source="transparent", record=False)
    assert not decision.allowed
    assert len(guard.denials) == 0
    guard.report(
        decision,
        "pull",
        "evil.example/demo/x:1",
        "evil.example",
        source="transparent",
        origin="from 172.17.0.2 on docker0",
    )
    (report,) = guard.denials.drain()
    assert report.origin == "from 172.17.0.2 on docker0"
    state = AgentState(tmp_path / "state", tmp_path / "registry.json")
    key = public_key_to_text(generate_key().public_key())
    credentials = Credentials("http://127.0.0.1:9", "acme", "t", key)
    sent = Syncer(state, guard, credentials, "agent-1")._denial(report)
    assert sent["reference"] == "evil.example/demo/x:1"
    assert sent["reason"] == f"{decision.reason} (transparent, from 172.17.0.2 on docker0)"
    proxy = DenialReport(0.0, "connect", "x:443", "x", "acme", 4, "R.", "proxy")
    assert Syncer(state, guard, credentials, "a")._denial(proxy)["reason"] == "R. (proxy)"


def test_install_writes_the_transparent_flags_into_the_unit() -> None:
    from regward.agent.install import unit_text
    from regward.agent.runner import AgentOptions

    settings = TransparentSettings(interfaces=("docker0", "cni-podman0"), ports=ALL_PORTS)
    unit = unit_text(AgentOptions(transparent=settings))
    assert (
        "--transparent --transparent-interfaces docker0,cni-podman0 --transparent-ports all "
        "--transparent-listen 3129"
    ) in unit
    assert "--transparent " not in unit_text(AgentOptions())


def test_the_cli_reads_the_transparent_flags() -> None:
    import argparse

    from regward.agent.cli import _options, add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(
        ["agent", "run", "--transparent", "--transparent-ports", "80,8443", "--proxy-listen", "off"]
    )
    options = _options(args)
    assert options.transparent.ports == {80, 8443}
    assert options.transparent.interfaces == ("docker0", "br-*")
    args = parser.parse_args(["agent", "run", "--transparent", "--transparent-listen", "3128"])
    with pytest.raises(ConfigError, match="is the egress proxy's port"):
        _options(args)


def test_by_default_the_cli_takes_loopback_only_and_off_takes_nothing() -> None:
    import argparse

    from regward.agent.cli import _options, add_commands
    from regward.agent.install import unit_text

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    default = _options(parser.parse_args(["agent", "run", "--proxy-listen", "off"])).transparent
    assert default.loopback and default.interfaces == ()
    assert default.bind_hosts == ("127.0.0.1", "::1")
    script = ruleset(default)
    assert "chain output" in script and "prerouting" not in script and "iifname" not in script
    assert "--loopback" not in unit_text(_options(parser.parse_args(["agent", "install"])))

    off = parser.parse_args(["agent", "run", "--loopback", "off"])
    assert _options(off).transparent is None
    assert "--loopback off" in unit_text(_options(off))

    both_off = parser.parse_args(["agent", "run", "--loopback", "off", "--transparent"])
    containers_only = _options(both_off).transparent
    assert not containers_only.loopback and containers_only.bind_hosts == ("0.0.0.0", "::")  # noqa: S104
    script = ruleset(containers_only)
    assert 'iifname "docker0"' in script and "chain output" not in script
    unit = unit_text(_options(both_off))
    assert "--loopback off --transparent --transparent-interfaces 'docker0,br-*'" in unit


def test_the_log_and_regward_status_say_what_is_taken_in_the_same_words(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import asyncio
    import logging

    from regward.agent.cli import _transparent_words
    from regward.agent.transparent import describe_taken
    from regward.agent.transparent.service import Transparent

    assert describe_taken(("docker0", "br-*"), True, {443, 80}) == (
        "interfaces docker0,br-*; loopback; ports 80,443"
    )
    assert describe_taken((), True, ALL_PORTS) == "loopback; ports all"
    assert describe_taken(("docker0",), False, {5000}) == "interfaces docker0; ports 5000"

    # nft's stand-in: real rules would redirect this machine's loopback connections, which
    # other tests share; test_transparent_e2e.py applies them inside its own namespaces.
    class Recorded:
        def available(self) -> bool:
            return True

        async def apply(self, script: str) -> None:
            self.script = script

    settings = TransparentSettings(ports=frozenset({80, 443}), listen_port=0)
    guard = Guard(Enforcement("unmanaged"))
    transparent = Transparent(settings, guard, Recorded())  # type: ignore[arg-type]
    taken = "interfaces docker0,br-*; loopback; ports 80,443"
    with caplog.at_level(logging.INFO, "regward.agent.transparent"):
        asyncio.run(transparent._apply())
    assert f"transparent rules in place: {taken}" in caplog.messages
    words = _transparent_words(transparent.status())
    assert words == f"rules in place ({taken}; listener port 0, served by 1 process)"


def _probe_once(handle: Callable[[socket.socket], None] | None) -> tuple[bool, bool, int]:
    """Probe a loopback server that treats each connection with `handle` (None: nothing
    listens): the first answer, the second, and how many probes were made for both."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if handle is None:
        listener.close()

    def serve() -> None:
        for _ in range(2):
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                handle(conn)  # type: ignore[misc]

    server = threading.Thread(target=serve, daemon=True)
    if handle is not None:
        server.start()
    probe = RegistryProbe(TransparentSettings(probe_timeout=5.0))

    async def twice() -> tuple[bool, bool]:
        return (
            await probe.is_registry("127.0.0.1", port, ""),
            await probe.is_registry("127.0.0.1", port, ""),
        )

    try:
        first, second = asyncio.run(twice())
    finally:
        listener.close()
    return first, second, probe.probes


def test_nothing_listening_is_no_registry_and_remembered() -> None:
    assert _probe_once(None) == (False, False, 1)


def test_a_plain_http_server_is_no_tls_registry() -> None:
    def plain(conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    assert _probe_once(plain) == (False, False, 1)


def test_a_server_that_drops_the_probe_is_taken_for_a_registry_and_asked_again() -> None:
    # A reset in the middle of the handshake says nothing either way: fail closed, and do not
    # remember it (a passing fault must not stick; a hostile server cannot earn a pass by it).
    def drop(conn: socket.socket) -> None:
        conn.recv(4096)  # the ClientHello
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    assert _probe_once(drop) == (True, True, 2)


def test_the_listeners_sockets_pass_no_nagle_on_to_what_they_accept() -> None:
    """TCP_NODELAY is set once on each listening socket (`bind`) and Linux passes it on:
    relayed segments (a TLS handshake message) are not held for the client's delayed ACK."""
    sockets = bind(TransparentSettings(interfaces=(), listen_port=0))
    try:
        for listener in sockets:
            assert listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            listener.settimeout(10)
            with socket.create_connection(listener.getsockname()[:2], timeout=10):
                accepted, _ = listener.accept()
                with accepted:
                    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        for listener in sockets:
            listener.close()
