"""The published schema states the constraints the server checks, from the same constants:
names, addresses, repository patterns, entries, token names, denial reports, join rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from regward.policy.schema import ADDRESS_PATTERN, REPOSITORY_PATTERN, entry_schema
from regward.server.app import create_app
from regward.server.services import denials, names, sso, tokens
from regward.server.settings import Settings


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    directory: Path = tmp_path_factory.mktemp("openapi")
    settings = Settings(data_dir=directory, database_url=f"sqlite:///{directory}/rw.db")
    return create_app(settings).openapi()


def _parameter(schema: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    [found] = [p for p in schema["paths"][path][method]["parameters"] if p["name"] == name]
    return dict(found["schema"])


def _body(schema: dict[str, Any], model: str) -> dict[str, Any]:
    return dict(schema["components"]["schemas"][model]["properties"])


def test_names_carry_the_pattern_check_name_uses(schema: dict[str, Any]) -> None:
    assert _body(schema, "NewOrganization")["name"]["pattern"] == names.NAME_PATTERN
    assert _body(schema, "NewMember")["username"]["pattern"] == names.NAME_PATTERN
    member = "/api/v1/orgs/{org}/members/{username}"
    assert _parameter(schema, member, "delete", "username")["pattern"] == names.NAME_PATTERN
    assert _parameter(schema, member, "delete", "org")["pattern"] == names.NAME_PATTERN


def test_entries_and_addresses_carry_the_policy_grammar(schema: dict[str, Any]) -> None:
    entry = "/api/v1/orgs/{org}/registry-access/registries/{address}"
    assert _parameter(schema, entry, "put", "address")["pattern"] == ADDRESS_PATTERN
    selector = _parameter(schema, entry, "delete", "repositories")["pattern"]
    assert REPOSITORY_PATTERN.strip("^$") in selector
    assert _body(schema, "DraftBody")["registries"]["items"] == entry_schema()
    wrapped, bare = schema["components"]["schemas"]["EntryBody"]["anyOf"]
    assert wrapped["properties"]["entry"] == entry_schema()
    assert bare["properties"]["address"]["pattern"] == ADDRESS_PATTERN


def test_tokens_denials_and_join_rules_carry_their_limits(schema: dict[str, Any]) -> None:
    name = _body(schema, "NewToken")["name"]
    assert name["maxLength"] == tokens.MAX_NAME_LENGTH and name["minLength"] == 1
    report = schema["paths"]["/api/v1/orgs/{org}/denials"]["post"]["requestBody"]
    assert (
        report["content"]["application/json"]["schema"]["anyOf"] == (denials.REPORT_SCHEMA["anyOf"])
    )
    assert _body(schema, "SsoBody")["join"]["items"] == sso.RULE_SCHEMA
