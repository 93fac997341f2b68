"""Registry address patterns: parsing, normalization, whole-label matching, properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.errors import InvalidAddress
from regward.policy import Address
from regward.policy.address import join_host_port

PARSED = [
    ("ghcr.io", "ghcr.io"),
    ("GHCR.IO.", "ghcr.io"),
    (" ghcr.io ", "ghcr.io"),
    ("ghcr.io:443", "ghcr.io:443"),
    ("*.Example.COM", "*.example.com"),
    ("*.example.com:5000", "*.example.com:5000"),
    ("bücher.example", "xn--bcher-kva.example"),
    ("10.0.0.1:5000", "10.0.0.1:5000"),
    ("[::1]:5000", "[::1]:5000"),
    ("[0:0:0::1]", "[::1]"),
    ("localhost", "localhost"),
    ("registry-1.docker.io", "registry-1.docker.io"),  # folded to docker.io only in entries
]


@pytest.mark.parametrize(("text", "canonical"), PARSED)
def test_parse(text: str, canonical: str) -> None:
    assert str(Address.parse(text)) == canonical


INVALID = [
    ("", "empty"),
    ("https://ghcr.io", "has a scheme"),
    ("ghcr.io/acme", "has a path"),
    ("gh*r.io", "wildcard is allowed only as a leading"),
    ("*", "wildcard is allowed only as a leading"),
    ("*.", "no host"),
    ("*.10.0.0.1", "cannot take"),
    ("ghcr.io:0", "port must be 1-65535"),
    ("ghcr.io:65536", "port must be 1-65535"),
    ("ghcr.io:x", "port must be 1-65535"),
    ("::1", "put an IPv6 address in brackets"),
    ("[::1", "missing ']'"),
    ("[::1]x", "unexpected text"),
    ("[nope]", "not an IPv6 address"),
    ("bad_host.io", "not a valid hostname"),
    ("-bad.io", "not a valid hostname"),
    ("a..b", "not a valid hostname"),
    ("127.1", "write an IPv4 address in full"),
    ("2130706433", "write an IPv4 address in full"),
    ("a" * 64 + ".io", "not a valid hostname"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_addresses_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(InvalidAddress, match=message.replace("[", r"\[").replace("*", r"\*")):
        Address.parse(text)


MATCHES = [
    ("docker.io", "docker.io", 443, True),
    ("docker.io", "docker.io", 80, True),
    ("docker.io", "docker.io", 5000, False),
    ("docker.io", "docker.io.evil.com", 443, False),
    ("docker.io", "evildocker.io", 443, False),
    ("docker.io", "sub.docker.io", 443, False),
    ("ghcr.io:5000", "ghcr.io", 5000, True),
    ("ghcr.io:5000", "ghcr.io", 443, False),
    ("*.example.com", "a.example.com", 443, True),
    ("*.example.com", "a.b.example.com", 443, True),
    ("*.example.com", "example.com", 443, False),
    ("*.example.com", "evilexample.com", 443, False),
    ("*.example.com", "a.example.com.evil.io", 443, False),
    ("*.example.com", "a.example.com", 5000, False),
    ("*.example.com:5000", "a.example.com", 5000, True),
    ("[::1]:5000", "::1", 5000, True),
]


@pytest.mark.parametrize(("pattern", "host", "port", "expected"), MATCHES)
def test_matching_is_by_whole_labels(pattern: str, host: str, port: int, expected: bool) -> None:
    assert Address.parse(pattern).matches(host, port) is expected


@given(st.text(max_size=80))
def test_parse_raises_only_our_error_and_round_trips(text: str) -> None:
    try:
        address = Address.parse(text)
    except InvalidAddress as error:
        assert str(error)
    else:
        assert Address.parse(str(address)) == address


labels = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)


@given(st.lists(labels, min_size=2, max_size=5), st.booleans(), st.integers(1, 65535) | st.none())
def test_canonical_form_round_trips(parts: list[str], wildcard: bool, port: int | None) -> None:
    text = ("*." if wildcard else "") + ".".join(parts).upper() + "."
    try:
        address = Address.parse(text if port is None else f"{text[:-1]}:{port}")
    except InvalidAddress:
        assert all(p.isdigit() for p in parts)  # an all-digit name is refused on purpose
        return
    assert Address.parse(str(address)) == address
    assert address.host == ".".join(parts)


@pytest.mark.parametrize(
    ("host", "port", "written"),
    [
        ("ghcr.io", 443, "ghcr.io:443"),
        ("ghcr.io", None, "ghcr.io"),
        ("10.0.0.1", 5000, "10.0.0.1:5000"),
        ("::1", 5000, "[::1]:5000"),
        ("fe80::1", None, "[fe80::1]"),
    ],
)
def test_join_host_port_brackets_ipv6_only(host: str, port: int | None, written: str) -> None:
    assert join_host_port(host, port) == written
