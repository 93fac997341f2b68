"""Text people read: characters not shown as they are refused in new text (a nickname in a
file, an API body or a form), kept in stored text, and escaped where stored text is shown."""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from regward.errors import InvalidPolicy, InvalidPolicyFile
from regward.policy import Policy, RegistryEntry, generate_key, parse_policy_text, sign
from regward.policy.signing import SignedPolicy
from regward.policy.text import (
    INVISIBLE_CATEGORIES,
    INVISIBLE_RANGES,
    VISIBLE_TEXT_PATTERN,
    invisible_character,
    refuse_invisible,
    shown,
)
from tests.policy.strategies import stored_policy_dict

HIDDEN = ["\u202e", "\x00", "\n", "\x85", "\u200b", "\u2028", "\ufeff", "\U000e0041", "\x1b"]


def test_the_table_holds_exactly_the_refused_categories() -> None:
    """The check and the schema's pattern read one table; it is Unicode's, as this Python has
    it (a Python with a newer Unicode fails here: regenerate the table)."""
    listed = {code for low, high in INVISIBLE_RANGES for code in range(low, high + 1)}
    # Planes 0, 1 and 14; planes 2-13 hold ideographs or nothing, 15-16 private use.
    planes = (*range(0x20000), *range(0xE0000, 0xF0000))
    scanned = {code for code in planes if unicodedata.category(chr(code)) in INVISIBLE_CATEGORIES}
    assert listed == scanned, unicodedata.unidata_version
    pattern = re.compile(VISIBLE_TEXT_PATTERN)
    for code in (0x1F, 0x20, 0xAD, 0x202E, 0xFEFF, 0xE0001, 0x1F600):
        assert (pattern.match(chr(code)) is None) == (code in listed), hex(code)


def _invisible(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) in INVISIBLE_CATEGORIES]


@given(st.text(max_size=40))
@example("Git\u202ebuh")
@example("\ud800")
def test_a_character_not_shown_as_it_is_is_named(text: str) -> None:
    found = _invisible(text)
    named = invisible_character(text)
    if not found:
        assert named is None
        refuse_invisible(text, "nickname", InvalidPolicy)
        return
    assert named is not None and named.startswith(f"U+{ord(found[0]):04X} (")
    with pytest.raises(InvalidPolicy) as caught:
        refuse_invisible(text, "nickname", InvalidPolicy)
    assert caught.value.field == "nickname" and caught.value.value == text
    assert named in caught.value.message and "use visible characters only" in caught.value.message


@given(st.text(max_size=40))
@example("a\u202eb\\x00")
def test_shown_text_holds_only_visible_characters_and_keeps_the_rest(text: str) -> None:
    """Shown text reads as what it holds: every hidden character as its escape, the others
    unchanged and in order."""
    seen = shown(text)
    assert not _invisible(seen)
    if not _invisible(text):
        assert seen == text
    if "\\" not in text:  # escapes are the only backslashes: reading them back is the text
        assert seen.encode("ascii", "backslashreplace").decode("unicode_escape") == text


@pytest.mark.parametrize("hidden", HIDDEN)
def test_a_nickname_holding_one_is_refused_naming_field_and_character(hidden: str) -> None:
    entry = {"address": "ghcr.io", "nickname": f"Git{hidden}Hub"}
    code = re.escape(f"U+{ord(hidden):04X}")
    with pytest.raises(InvalidPolicy, match=rf"^registries\[0\]\.nickname: .*holds {code} \("):
        Policy.from_dict({"organization": "acme", "registries": [entry]})
    with pytest.raises(InvalidPolicy, match=rf"^nickname: .*{code}"):
        RegistryEntry.from_dict(entry)
    # PyYAML reads the JSON escape of a character past U+FFFF as its two surrogate halves, the
    # first of them named instead (refused all the same).
    high = 0xD800 + ((ord(hidden) - 0x10000) >> 10)
    yaml_code = code if ord(hidden) < 0x10000 else re.escape(f"U+{high:04X}")
    for name, text, expected in (
        ("p.json", json.dumps(entry), code),
        ("p.yaml", json.dumps(entry), yaml_code),
    ):
        document = f'{{"organization": "acme", "registries": [\n{text}]}}'
        with pytest.raises(
            InvalidPolicyFile, match=rf"line 2: registries\[0\]\.nickname: .*{expected}"
        ):
            parse_policy_text(document, name)


@settings(max_examples=50)  # documents are slow to draw
@given(stored_policy_dict)
def test_stored_text_loads_as_it_was_and_new_text_is_checked(data: dict[str, Any]) -> None:
    """A document stored before the rule (a signed revision, a saved draft) loads with every
    nickname unchanged; the same document as new text is refused exactly when one holds a
    hidden character, naming that entry."""
    stored = Policy.from_dict(data, stored=True)
    assert [e.nickname for e in stored.registries] == [
        e.get("nickname") or "" for e in data["registries"]
    ]
    hidden = [i for i, e in enumerate(data["registries"]) if _invisible(e.get("nickname") or "")]
    if not hidden:
        assert Policy.from_dict(data) == stored
        return
    with pytest.raises(InvalidPolicy) as caught:
        Policy.from_dict(data)
    assert caught.value.field == f"registries[{hidden[0]}].nickname"
    assert [p.field for p in Policy.problems(data)] == [f"registries[{i}].nickname" for i in hidden]


def test_a_revision_signed_before_the_rule_still_loads_and_reads_from_a_file() -> None:
    """Published revisions stay readable everywhere: the agent's feed and cache, and a saved
    revision given to `regward check --policy`."""
    entry = {"address": "ghcr.io", "nickname": "Git\u202ebuHtiG"}
    policy = Policy.from_dict({"organization": "acme", "registries": [entry]}, stored=True)
    wire = sign(policy, generate_key()).to_json()
    assert SignedPolicy.from_json(wire).policy == policy
    assert parse_policy_text(wire.decode(), "revision-3.json") == policy
    with pytest.raises(InvalidPolicyFile, match="U\\+202E"):
        parse_policy_text(json.dumps(policy.to_dict()), "hand-written.json")
