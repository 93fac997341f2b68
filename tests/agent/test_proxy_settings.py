"""The proxy's settings: one reader of listen addresses for the proxy, the agent and install."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.agent.proxy.settings import ProxySettings, parse_listen
from regward.agent.runner import parse_listen as parse_agent_listen
from regward.errors import ConfigError
from regward.policy.address import join_host_port

READ = [
    ("127.0.0.1:3128", ("127.0.0.1", 3128)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),  # noqa: S104 - a parsed value, nothing binds here
    ("localhost:65535", ("localhost", 65535)),
    ("[::1]:3128", ("::1", 3128)),
    ("[0:0::1]:3128", ("::1", 3128)),
    ("[::]:3128", ("::", 3128)),
]


@pytest.mark.parametrize(("text", "expected"), READ)
def test_listen_addresses_read_alike_in_the_proxy_and_the_agent(
    text: str, expected: tuple[str, int]
) -> None:
    assert parse_listen(text) == expected
    assert parse_agent_listen(text) == expected
    assert ProxySettings.from_listen(text).host == expected[0]


REFUSED = [
    "127.0.0.1:0",  # the agent refused it, the proxy took it: dockerd cannot be pointed there
    "[::1:3128",  # the agent read it as ::1, the proxy as a host named "[::1"
    "::1]:3128",
    "::1:3128",  # ambiguous without brackets
    "[not-v6]:3128",
    "127.0.0.1:65536",
    "127.0.0.1:+80",
    "127.0.0.1:\u00b3",  # a digit to str.isdigit, not to a port
    "127.0.0.1",
    ":3128",
    "nowhere",
    "bad host:3128",
]


@pytest.mark.parametrize("text", REFUSED)
def test_malformed_listen_addresses_are_refused_everywhere(text: str) -> None:
    for parse in (parse_listen, parse_agent_listen):
        with pytest.raises(ConfigError, match="is not HOST:PORT") as raised:
            parse(text)
        assert repr(text) in str(raised.value)


def test_the_agent_reads_off_as_no_proxy() -> None:
    assert parse_agent_listen("off") is None
    assert parse_agent_listen(" OFF ") is None


@given(st.text(max_size=40))
def test_listen_raises_only_config_error_naming_the_value(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except ConfigError as error:
        assert repr(text) in str(error)
        return
    assert host and 0 < port < 65536
    assert parse_listen(join_host_port(host, port)) == (host, port)


@given(st.ip_addresses(), st.integers(1, 65535))
def test_every_ip_and_port_round_trips_through_its_written_form(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    assert parse_listen(join_host_port(str(address), port)) == (str(address), port)
