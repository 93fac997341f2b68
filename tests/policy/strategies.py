"""Hypothesis strategies for valid policy documents."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import strategies as st

from regward.policy.text import INVISIBLE_CATEGORIES

label = st.from_regex(r"[a-z][a-z0-9-]{0,6}[a-z0-9]", fullmatch=True)
address = st.builds(
    lambda wildcard, labels, port: (
        ("*." if wildcard else "") + ".".join(labels) + (f":{port}" if port else "")
    ),
    st.booleans(),
    st.lists(label, min_size=2, max_size=4),
    st.none() | st.integers(1, 65535),
)
pattern = st.from_regex(r"[a-z0-9]{1,6}(?:/[a-z0-9]{1,6}){0,2}(?:/\*)?", fullmatch=True) | st.just(
    "*"
)
visible_text = st.text(
    st.characters(exclude_categories=cast(Any, sorted(INVISIBLE_CATEGORIES))),
    max_size=30,
)
"""Text a person reads as it stands (regward.policy.text)."""


def _entry(nickname: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"address": address},
        optional={
            "nickname": nickname,
            "allowed": st.booleans(),
            "repositories": st.lists(pattern, max_size=3),
            "actions": st.sets(st.sampled_from(["pull", "push"]), min_size=1).map(sorted),
            "extra_hosts": st.lists(address, max_size=2),
        },
    )


def _policy(entry: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "organization": st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}[a-z0-9]", fullmatch=True),
            "revision": st.integers(0, 2**40),
            "enabled": st.booleans(),
            "registries": st.lists(entry, max_size=6),
        }
    )


entry = _entry(visible_text)
policy_dict = _policy(entry)
stored_policy_dict = _policy(_entry(st.text(max_size=30)))
"""A document stored before invisible characters were refused: its nicknames any text."""
