"""A plain-HTTP registry request decided by the repositories it names (regward.agent.proxy
.repository): a cross-repository blob mount reads the repository in its `from`."""

from __future__ import annotations

import urllib.parse

from hypothesis import given
from hypothesis import strategies as st

from regward.agent.guard import Enforcement, Guard
from regward.agent.proxy.protocol import parse_request
from regward.agent.proxy.repository import mount_sources, repository_refusal
from regward.policy import Action, Decision, Policy

REGISTRY = "reg.test:5000"
GUARD = Guard(
    Enforcement(
        "local",
        Policy.from_dict(
            {
                "organization": "acme",
                "revision": 3,
                "registries": [{"address": REGISTRY, "repositories": ["demo/*"]}],
            }
        ),
        "acme",
    )
)


def decide(action: Action, reference: str) -> Decision:
    return GUARD.decide(action, reference, "proxy", record=False)


def refusal(method: str, target: str) -> Decision | None:
    head = f"{method} {target} HTTP/1.1\r\nHost: {REGISTRY}\r\n\r\n".encode()
    return repository_refusal(decide, parse_request(head, origin_port=5000), "reg.test", 5000)


def test_a_blob_mount_from_a_repository_the_entry_does_not_allow_is_refused() -> None:
    uploads = "/v2/demo/app/blobs/uploads/"
    assert refusal("POST", uploads) is None
    assert refusal("POST", f"{uploads}?mount=sha256:{'a' * 64}&from=demo/base") is None
    for source in ("secret/base", "secret%2Fbase", "", "demo/../secret/base"):
        refused = refusal("POST", f"{uploads}?mount=sha256:{'a' * 64}&from={source}")
        assert refused is not None and not refused.allowed, source
    # Two `from` values: the registry reads one of them, so each must be allowed.
    refused = refusal("POST", f"{uploads}?from=demo/base&from=secret/base")
    assert refused is not None and "secret/base" in refused.reason, refused


@given(st.text(max_size=40))
def test_every_mount_source_is_decided_as_a_pull(source: str) -> None:
    target = "/v2/demo/app/blobs/uploads/?" + urllib.parse.urlencode({"from": source})
    assert mount_sources(target) == [source]
    expected = decide(Action.PULL, f"{REGISTRY}/{source}")
    refused = refusal("POST", target)
    assert (refused is None) == expected.allowed
