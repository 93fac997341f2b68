"""The published schema states the constraints the server checks, from the same constants:
names, addresses, repository patterns, entries, token names, denial reports, join rules."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regward.policy.schema import ADDRESS_PATTERN, REPOSITORY_PATTERN, entry_schema
from regward.policy.text import VISIBLE_TEXT_PATTERN
from regward.server.app import create_app
from regward.server.inputs import ANY_JSON, TEXT_PATTERN
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
    served = report["content"]["application/json"]["schema"]["anyOf"]
    assert [r["properties"].keys() for r in served] == [
        r["properties"].keys() for r in denials.REPORT_SCHEMA["anyOf"]
    ]
    assert served[1]["properties"]["reference"]["maxLength"] == denials.MAX_REFERENCE_LENGTH
    assert _body(schema, "SsoBody")["join"]["items"] == sso.RULE_SCHEMA


def _request_strings(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, schema) of every text a request carries: parameters and bodies."""
    components = schema["components"]["schemas"]
    seen: set[str] = set()

    def walk(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from walk(item, f"{where}[{index}]")
        elif isinstance(node, dict):
            reference = node.get("$ref", "")
            if reference and reference not in seen:
                seen.add(reference)
                yield from walk(components[reference.rsplit("/", 1)[-1]], reference)
            if node.get("type") == "string":
                yield where, node
            for key, value in node.items():
                if key not in ("examples", "default"):
                    yield from walk(value, f"{where}.{key}")

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            yield from walk(operation.get("parameters", []), f"{method} {path}")
            yield from walk(operation.get("requestBody", {}), f"{method} {path} body")


def test_every_text_a_request_carries_declares_that_nul_is_refused(
    schema: dict[str, Any],
) -> None:
    """The server refuses NUL anywhere in a request; the schema says so for every text, so a
    client generating requests from it never meets a refusal it does not describe."""
    checked = 0
    for where, text in _request_strings(schema):
        if text.get("format") in ("date-time", "binary") or "enum" in text:
            continue
        assert "pattern" in text, where
        assert re.search(text["pattern"], "a\x00b") is None, where
        checked += 1
    assert checked >= 30
    assert schema["components"]["schemas"][ANY_JSON]["anyOf"][0]["pattern"] == TEXT_PATTERN


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("CheckIn", "hostname"),
        ("CheckIn", "agent_id"),
        ("NewToken", "name"),
        ("Body_start_api_v1_auth_device_post", "machine"),
        ("Body_start_api_v1_auth_device_post", "agent_id"),
    ],
)
def test_text_owners_read_declares_invisible_characters_refused(
    schema: dict[str, Any], model: str, field: str
) -> None:
    text = _body(schema, model)[field]
    # An optional field's own pattern sits beside `anyOf` (it constrains only text).
    patterns = [t["pattern"] for t in (text, *text.get("anyOf", ())) if "pattern" in t]
    for hidden in ("\u202e", "\n", "\u200b", "\x00"):
        refused = [re.search(p, f"laptop{hidden}1") is None for p in patterns]
        assert any(refused), (field, hidden)
    assert all(re.search(p, "bob's laptop") for p in patterns)
    nickname = entry_schema()["properties"]["nickname"]["pattern"]
    assert nickname == VISIBLE_TEXT_PATTERN and re.search(nickname, "Git\u202ebuH") is None
