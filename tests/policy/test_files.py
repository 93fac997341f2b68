"""Policy files: every problem reported with its line (YAML and JSON), hostile text refused
cleanly, and a written file that reads back as the same policy."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from regward.errors import InvalidPolicy, InvalidPolicyFile
from regward.policy import Policy, parse_policy_text, policy_file_text
from tests.policy.strategies import policy_dict

BROKEN_YAML = """\
organization: Acme Corp
enabled: maybe
colour: blue
registries:
  - address: ghcr.io
    actions: [pull, delete]
  - address: "http://quay.io/"
    nickname: Quay
  - address: docker.io
    repositories: ["Not A Pattern"]
    extra: 1
"""


def test_every_problem_of_a_yaml_file_has_its_line() -> None:
    with pytest.raises(InvalidPolicyFile) as caught:
        parse_policy_text(BROKEN_YAML, "acme.yaml")
    problems = caught.value.problems
    assert [problem.split(":")[0] for problem in problems] == [
        "line 3",  # colour, an unknown field
        "line 1",  # organization
        "line 2",  # enabled
        "line 6",  # registries[0].actions
        "line 7",  # registries[1].address
        "line 11",  # registries[2]'s unknown 'extra'
        "line 10",  # registries[2].repositories
    ]
    assert "registries[1].address:" in problems[4] and "'http://quay.io/'" in problems[4]
    assert str(caught.value).startswith("acme.yaml: 7 problems: line 3: unknown field 'colour'")


def test_every_problem_of_a_json_file_has_its_line() -> None:
    document = {
        "organization": "acme",
        "registries": [{"address": "ghcr.io"}, {"address": "bad host", "allowed": "yes"}],
    }
    text = json.dumps(document, indent=2)
    with pytest.raises(InvalidPolicyFile) as caught:
        parse_policy_text(text, "acme.json")
    lines = text.splitlines()
    for problem in caught.value.problems:
        number = int(problem.split(":")[0].removeprefix("line "))
        field = problem.split(": ")[1].rsplit(".", 1)[-1]
        assert f'"{field}"' in lines[number - 1], problem
    assert len(caught.value.problems) == 2


def test_one_problem_reads_as_before() -> None:
    with pytest.raises(InvalidPolicyFile, match=r"^p\.yaml: line 2: enabled: 'yes' must be"):
        parse_policy_text("organization: acme\nenabled: 'yes'\n", "p.yaml")


def test_a_billion_laughs_file_is_refused_without_expanding_it() -> None:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    rows += [
        f"{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
        for p, n in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    text = "\n".join(rows) + "\norganization: acme\n"
    with pytest.raises(InvalidPolicyFile) as caught:
        parse_policy_text(text, "laughs.yaml")
    assert all(problem.startswith("line ") for problem in caught.value.problems)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300), st.sampled_from(["p.yaml", "p.json"]))
@example("\x850", "p.yaml")  # NEL breaks a YAML line, not an editor's: found by this test
@example("a: b\n\u2028c: [", "p.yaml")
def test_any_text_parses_or_names_problems_with_real_lines(text: str, name: str) -> None:
    try:
        parse_policy_text(text, name)
    except InvalidPolicyFile as error:
        assert error.problems and str(error).startswith(f"{name}: ")
        count = max(1, text.count("\n") + 1)
        for problem in error.problems:
            if problem.startswith("line "):
                assert 1 <= int(problem.split(":")[0].removeprefix("line ")) <= count


yaml_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(
    policy_dict,
    st.dictionaries(
        st.sampled_from(["organization", "enabled", "revision", "registries", "x"]),
        yaml_value,
        max_size=3,
    ),
)
def test_documents_with_damage_report_every_damaged_field(
    base: dict[str, Any], damage: dict[str, Any]
) -> None:
    """A valid document with some fields replaced: the file is refused exactly when the
    document is, and a refusal lists at least the first error `Policy.from_dict` raises."""
    document = {**base, **damage}
    text = yaml.safe_dump(document)
    try:
        expected = Policy.from_dict(document)
    except InvalidPolicy as first:
        with pytest.raises(InvalidPolicyFile) as caught:
            parse_policy_text(text, "p.yaml")
        named = f"{first.field}: " if first.field else first.message.split("(")[0]
        assert any(named in problem for problem in caught.value.problems)  # YAML sorts keys
    else:
        assert parse_policy_text(text, "p.yaml") == expected


@given(policy_dict, st.sampled_from(["yaml", "json"]))
def test_a_written_file_reads_back_as_the_same_policy(data: dict[str, Any], kind: str) -> None:
    policy = Policy.from_dict(data)
    text = policy_file_text(policy, "yaml" if kind == "yaml" else "json")
    assert parse_policy_text(text, f"exported.{kind}") == policy
