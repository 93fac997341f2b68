"""Policy files: the text `regward check --policy`, `agent run --policy` and the dashboard's
import read, and the text the dashboard's export writes. YAML for `.yaml`/`.yml` names, JSON
otherwise; the document is `regward.policy.document`'s.

    parse_policy_text(text, "acme.yaml")  -> Policy, or InvalidPolicyFile listing every problem
                                             with its line: `line 4: registries[1].address: ...`
    policy_file_text(policy, "yaml")      -> the policy as a file that parses back to it

A signed revision saved from the server's feed (`{"policy": ..., "signature": ...}`) reads as
its policy, unverified: a local file is trusted as it stands.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import yaml

from regward.errors import InvalidPolicy, InvalidPolicyFile
from regward.policy.document import Policy

Format = Literal["yaml", "json"]
_STEP = re.compile(r"(?:^|\.)[^.\[]+$|\[\d+\]$")  # the last step of a field path


def format_of(filename: str) -> Format:
    return "yaml" if filename.lower().endswith((".yaml", ".yml")) else "json"


def parse_policy_text(text: str, filename: str) -> Policy:
    """The policy in a file's text; InvalidPolicyFile names every problem and its line."""
    kind = format_of(filename)
    try:
        data = yaml.safe_load(text) if kind == "yaml" else json.loads(text)
    except (yaml.YAMLError, ValueError) as error:
        problem = f"not valid {kind.upper()}: {_syntax(error, text)}"
        raise InvalidPolicyFile(filename, [problem]) from None
    # A revision as the feed serves it (verify() checks signatures) was published: it loads as
    # signed, text from before a rule included (Policy.from_dict's `stored`).
    stored = isinstance(data, dict) and set(data) == {"policy", "signature"}
    if stored:
        data = data["policy"]
    problems = Policy.problems(data, stored=stored)
    if problems:
        lines = _field_lines(text)
        raise InvalidPolicyFile(filename, [_located(error, lines) for error in problems])
    return Policy.from_dict(data, stored=stored)


def policy_file_text(policy: Policy, kind: Format) -> str:
    """`policy` as a file of `kind`: every field written out, entries in order; a policy not
    published (revision 0, such as a draft) has no revision line, as a file written by hand."""
    document = policy.to_dict()
    if policy.revision == 0:
        del document["revision"]
    if kind == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    text: str = yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return text


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, writing text that holds a line break YAML knows beyond `\n` (NEL,
    U+2028, U+2029) double-quoted, where they are escaped: written plain or single-quoted they
    read back as a space (found by the round-trip property test)."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if any(ch in value for ch in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def _line(text: str, index: int) -> int:
    """The line of character `index` as editors number them: YAML also breaks lines at NEL,
    U+2028 and U+2029, which would name a line the user's editor does not show."""
    return text.count("\n", 0, index) + 1


def _syntax(error: Exception, text: str) -> str:
    """A syntax error in one line, with the line and column where the file went wrong."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        index = error.problem_mark.index
        column = index - (text.rfind("\n", 0, index) + 1) + 1
        return f"line {_line(text, index)}, column {column}: {error.problem}"
    text = str(error)
    return text.splitlines()[0] if text else type(error).__name__


def _located(error: InvalidPolicy, lines: dict[str, int]) -> str:
    """`line N: field: message`, with the line of the field or of what holds it."""
    path = error.field or ""
    if error.message.startswith("unknown field") and isinstance(error.value, str):
        path = f"{path}.{error.value}" if path else error.value
    while path not in lines and path:
        shorter = _STEP.sub("", path)
        path = shorter if shorter != path else ""  # a key of any text still ends the walk
    line = lines.get(path)
    return f"line {line}: {error}" if line is not None else str(error)


def _field_lines(text: str) -> dict[str, int]:
    """The line where each field path (`registries[1].address`, `""` for the document)
    starts, for YAML and JSON alike (JSON is read as YAML here); {} where that fails."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    seen: set[int] = set()  # an alias repeats a node: walk each once, whatever the nesting

    def walk(node: Any, path: str) -> None:
        lines.setdefault(path, _line(text, node.start_mark.index))
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    inner = f"{path}.{key.value}" if path else str(key.value)
                    lines.setdefault(inner, _line(text, key.start_mark.index))
                    walk(value, inner)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                walk(item, f"{path}[{index}]")

    if root is not None:
        walk(root, "")
    return lines
