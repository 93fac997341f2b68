"""lint(): risky and dead entries are found; a clean policy has no warnings."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given

from regward.policy import Policy, lint
from tests.policy.strategies import policy_dict


def warnings_for(*entries: dict[str, Any], enabled: bool = True) -> list[str]:
    policy = Policy.from_dict(
        {"organization": "acme", "enabled": enabled, "registries": list(entries)}
    )
    return [str(w) for w in lint(policy)]


def test_clean_policy_has_no_warnings() -> None:
    assert (
        warnings_for(
            {"address": "docker.io"},
            {"address": "ghcr.io", "repositories": ["acme/*"]},
            {"address": "ghcr.io", "repositories": ["tools/x"]},
            {"address": "123456789012.dkr.ecr.eu-west-1.amazonaws.com"},
        )
        == []
    )


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"address": "amazonaws.com"}, "shared domain amazonaws.com"),
        ({"address": "*.amazonaws.com"}, "shared domain"),
        ({"address": "s3.amazonaws.com"}, "shared domain s3.amazonaws.com"),
        ({"address": "*.blob.core.windows.net"}, "shared domain blob.core.windows.net"),
        ({"address": "blob.core.windows.net"}, "shared domain blob.core.windows.net"),
        ({"address": "reg.io", "extra_hosts": ["storage.googleapis.com"]}, "shared domain"),
        ({"address": "*.com"}, "public suffix"),
        ({"address": "*.co.uk"}, "public suffix"),
        (
            {"address": "ghcr.io", "extra_hosts": ["pkg-containers.githubusercontent.com"]},
            "already covered",
        ),
    ],
)
def test_risky_entries(entry: dict[str, Any], fragment: str) -> None:
    assert any(fragment in w for w in warnings_for(entry)), warnings_for(entry)


def test_duplicates_and_shadowed_entries_never_decide() -> None:
    found = warnings_for(
        {"address": "ghcr.io"},
        {"address": "GHCR.IO.", "repositories": ["*"]},
        {"address": "quay.io", "repositories": ["a/*", "b"]},
        {"address": "quay.io", "repositories": ["b"]},
        {"address": "quay.io", "repositories": ["b", "c"]},
    )
    assert found == [
        "ghcr.io: entry #2 never decides: entry #1 lists the same address and repositories",
        "quay.io: entry #4 never decides: entry #3 lists the same address and repositories",
    ]


def test_whole_policy_warnings() -> None:
    assert warnings_for({"address": "ghcr.io"}, enabled=False) == [
        "registry access is off: every registry is allowed"
    ]
    assert warnings_for({"address": "ghcr.io", "allowed": False}) == [
        "registry access is on with no allowed entry: nothing can be pulled"
    ]


def test_a_narrower_entry_that_drops_an_action_is_pointed_out() -> None:
    found = warnings_for(
        {"address": "ghcr.io", "actions": ["pull"]},
        {"address": "ghcr.io", "repositories": ["acme/*"], "actions": ["push"]},
    )
    assert found == [
        "ghcr.io: entry #2 decides for acme/*: pull there is refused, though entry #1 allows "
        "it elsewhere on this registry"
    ]
    assert (
        warnings_for(
            {"address": "ghcr.io", "actions": ["pull"]},
            {"address": "ghcr.io", "repositories": ["acme/*"], "actions": ["pull", "push"]},
        )
        == []
    )


@given(policy_dict)
def test_every_warning_names_the_entry_it_is_about(document: dict[str, Any]) -> None:
    policy = Policy.from_dict(document)
    for warning in lint(policy):
        if warning.entry == 0:
            assert warning.address == ""
        else:
            assert str(policy.registries[warning.entry - 1].address) == warning.address
