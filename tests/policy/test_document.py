"""The policy document and file format: parsing, errors that name the field, round trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from regward.errors import InvalidPolicy
from regward.policy import Action, Policy, parse_policy_text
from tests.policy.strategies import policy_dict

EXAMPLE_YAML = """
organization: acme
enabled: true
registries:
  - address: docker.io            # Docker Hub
    nickname: Docker Hub
  - address: ghcr.io
    repositories: ["acme/*"]
    actions: [pull]
  - address: "*.dkr.ecr.eu-west-1.amazonaws.com"
  - address: registry.internal:5000
    allowed: false
    extra_hosts: [cdn.registry.internal]
"""


def test_the_issue_example_parses() -> None:
    policy = parse_policy_text(EXAMPLE_YAML, "policy.yaml")
    assert policy.organization == "acme"
    assert policy.revision == 0
    hub, ghcr, ecr, internal = policy.registries
    assert (hub.nickname, hub.allowed, hub.actions) == ("Docker Hub", True, frozenset(Action))
    assert [str(p) for p in ghcr.repositories] == ["acme/*"]
    assert ghcr.actions == {Action.PULL}
    assert ecr.address.wildcard
    assert not internal.allowed
    assert [str(h) for h in internal.extra_hosts] == ["cdn.registry.internal"]
    as_json = json.dumps(yaml.safe_load(EXAMPLE_YAML))
    assert parse_policy_text(as_json, "policy.json") == policy


def test_hub_aliases_fold_into_docker_io() -> None:
    policy = Policy.from_dict(
        {"organization": "acme", "registries": [{"address": "Registry-1.Docker.IO"}]}
    )
    assert str(policy.registries[0].address) == "docker.io"


BAD: list[tuple[Any, str]] = [
    ([], "policy must be a mapping"),
    ({"registries": []}, "organization: None must be a lowercase name"),
    ({"organization": "Acme"}, "organization: 'Acme'"),
    ({"organization": "acme", "extra": 1}, "unknown field 'extra'"),
    ({"organization": "acme", "enabled": "yes"}, "enabled: 'yes' must be true or false"),
    ({"organization": "acme", "revision": -1}, "revision: -1"),
    ({"organization": "acme", "revision": True}, "revision: True"),
    ({"organization": "acme", "registries": {}}, "registries: {} must be a list"),
    ({"organization": "acme", "registries": ["ghcr.io"]}, r"registries\[0\]: expected a mapping"),
    ({"organization": "acme", "registries": [{}]}, r"registries\[0\]: missing 'address'"),
    (
        {"organization": "acme", "registries": [{"address": "ok.io"}, {"address": "https://x"}]},
        r"registries\[1\]\.address: registry address 'https://x' has a scheme",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "actions": ["pull", "rm"]}]},
        r"registries\[0\]\.actions: \['pull', 'rm'\] may only contain",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "actions": []}]},
        r"registries\[0\]\.actions: empty",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "repositories": ["Acme/*"]}]},
        r"registries\[0\]\.repositories: repository pattern 'Acme/\*'",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "repositories": ["a*"]}]},
        r"repository pattern 'a\*'",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "allowed": "no"}]},
        r"registries\[0\]\.allowed: 'no' must be true or false",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "nickname": "x" * 101}]},
        r"registries\[0\]\.nickname",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "extra_hosts": ["a/b"]}]},
        r"registries\[0\]\.extra_hosts: registry address 'a/b' has a path",
    ),
    (
        {"organization": "acme", "registries": [{"address": "ok.io", "colour": "red"}]},
        r"registries\[0\]: unknown field 'colour'",
    ),
]


@pytest.mark.parametrize(("data", "message"), BAD)
def test_errors_name_field_and_value(data: Any, message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        Policy.from_dict(data)


def test_file_errors_name_the_file() -> None:
    with pytest.raises(InvalidPolicy, match=r"p\.json: not valid JSON"):
        parse_policy_text("{", "p.json")
    with pytest.raises(InvalidPolicy, match=r"p\.yaml: not valid YAML"):
        parse_policy_text("a: [", "p.yaml")
    with pytest.raises(InvalidPolicy, match=r"p\.yml: line 1: organization"):
        parse_policy_text("enabled: true", "p.yml")


def test_a_yaml_syntax_error_names_its_line() -> None:
    text = "organization: acme\nregistries:\n  - address: ghcr.io\n   nickname: x\n"
    with pytest.raises(InvalidPolicy, match=r"p\.yaml: not valid YAML: line 4, column 4: "):
        parse_policy_text(text, "p.yaml")


@given(policy_dict)
def test_canonical_json_round_trips(data: dict[str, Any]) -> None:
    policy = Policy.from_dict(data)
    canonical = policy.canonical_json()
    again = Policy.from_dict(json.loads(canonical))
    assert again == policy
    assert again.canonical_json() == canonical
    assert parse_policy_text(yaml.safe_dump(policy.to_dict()), "p.yaml") == policy


@given(st.text(max_size=200), st.sampled_from(["p.json", "p.yaml"]))
def test_parse_policy_text_raises_only_our_error(text: str, filename: str) -> None:
    try:
        parse_policy_text(text, filename)
    except InvalidPolicy as error:
        assert str(error).startswith(filename)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    policy_dict,
    st.sampled_from(["organization", "revision", "enabled", "registries"]),
    json_values,
)
def test_any_mangled_field_is_refused_or_parsed(data: dict[str, Any], key: str, value: Any) -> None:
    data = {**data, key: value}
    try:
        Policy.from_dict(data)
    except InvalidPolicy as error:
        assert str(error)


def test_a_signed_revision_from_the_feed_reads_as_its_policy() -> None:
    document = {"organization": "acme", "revision": 4, "registries": [{"address": "ghcr.io"}]}
    wire = json.dumps({"policy": document, "signature": "c2ln"})
    assert parse_policy_text(wire, "feed.json") == Policy.from_dict(document)
