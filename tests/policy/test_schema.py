"""The published JSON Schema of addresses, repository patterns and entries agrees with the
parsers: what the schema admits, the parser accepts; what the parser stores, the schema admits."""

from __future__ import annotations

import re

import jsonschema_rs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.errors import RegwardError
from regward.policy import Address, RegistryEntry, RepositoryPattern
from regward.policy.document import ENTRY_KEYS
from regward.policy.schema import ADDRESS_PATTERN, REPOSITORY_PATTERN, entry_schema
from tests.policy import strategies

# Schema patterns are ECMA-262 with `^...$`; `$` there never matches before a final newline.
ADDRESS = re.compile(ADDRESS_PATTERN.removesuffix("$") + r"\Z")
REPOSITORY = re.compile(REPOSITORY_PATTERN.removesuffix("$") + r"\Z")


@given(st.from_regex(ADDRESS))
def test_every_address_the_schema_admits_parses(text: str) -> None:
    parsed = Address.parse(text)
    if not text.startswith("["):  # IPv6 has several spellings; the parser compresses them
        assert str(parsed) == text


@given(strategies.address | st.text(max_size=40))
def test_every_stored_address_is_one_the_schema_admits(text: str) -> None:
    try:
        parsed = Address.parse(text)
    except RegwardError:
        return
    assert ADDRESS.match(str(parsed)), str(parsed)


@pytest.mark.parametrize(
    "text",
    ["127.1", "*.10.0.0.1", "ghcr.io:0", "GHCR.IO", "ghcr.io/acme", "::1", "a" * 250 + ".io"],
)
def test_the_schema_refuses_what_is_not_canonical(text: str) -> None:
    assert not ADDRESS.match(text)


@given(st.from_regex(REPOSITORY))
def test_every_repository_pattern_the_schema_admits_parses(text: str) -> None:
    assert str(RepositoryPattern.parse(text, docker_hub=False)) == text


@given(strategies.pattern)
def test_every_repository_pattern_parsed_is_one_the_schema_admits(text: str) -> None:
    assert REPOSITORY.match(str(RepositoryPattern.parse(text, docker_hub=True)))


def test_the_entry_schema_names_every_field_the_parser_knows() -> None:
    assert set(entry_schema()["properties"]) == ENTRY_KEYS


@given(strategies.entry)
def test_every_stored_entry_is_valid_by_the_schema(data: dict[str, object]) -> None:
    stored = RegistryEntry.from_dict(data).to_dict()
    assert jsonschema_rs.validator_for(entry_schema()).is_valid(stored)
