"""evaluate() and evaluate_host(): the rules, the bypasses, and agreement with a linear scan."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from regward.policy import Action, ImageReference, Policy, evaluate, evaluate_host
from tests.policy.naive import naive_evaluate, naive_evaluate_host

PULL, PUSH = Action.PULL, Action.PUSH


def policy(*entries: dict[str, Any], enabled: bool = True) -> Policy:
    return Policy.from_dict(
        {"organization": "acme", "revision": 12, "enabled": enabled, "registries": list(entries)}
    )


ACME = policy(
    {"address": "docker.io", "nickname": "Docker Hub"},
    {"address": "ghcr.io", "repositories": ["acme/*"], "actions": ["pull"]},
    {"address": "*.example.com"},
    {"address": "bad.example.com", "allowed": False},
    {"address": "registry.internal:5000"},
    {"address": "localhost:5000"},
    {"address": "127.0.0.1:5000"},
    {"address": "[::1]:5000"},
    {"address": "*.dkr.ecr.eu-west-1.amazonaws.com"},
    {"address": "quay.io", "repositories": ["team/*"]},
    {"address": "quay.io", "repositories": ["team/secret"], "allowed": False},
    {"address": "quay.io", "repositories": ["team/ro/*"], "actions": ["pull"]},
)

CASES = [
    # (image, action, allowed)
    ("ubuntu", PULL, True),
    ("docker.io/library/ubuntu", PUSH, True),
    ("index.docker.io/library/ubuntu", PULL, True),
    ("docker.io.evil.com/library/ubuntu", PULL, False),
    ("evil.com/docker.io/ubuntu", PULL, False),
    ("ghcr.io/acme/app:1", PULL, True),
    (f"ghcr.io/acme/app@sha256:{'b' * 64}", PULL, True),
    ("ghcr.io/acme/app:1", PUSH, False),  # pull-only entry
    ("ghcr.io/acmeevil/app", PULL, False),
    ("ghcr.io/acme", PULL, False),  # acme/* is below acme/, not acme itself
    ("GHCR.IO/acme/app", PULL, True),  # the same registry, any case
    ("GHCR.IO/other/app", PULL, False),
    ("ghcr.io:443/acme/app", PULL, True),  # the default port, named
    ("ghcr.io:444/acme/app", PULL, False),
    ("a.example.com/x", PULL, True),
    ("a.b.example.com/x", PULL, True),
    ("example.com/x", PULL, False),
    ("evilexample.com/x", PULL, False),
    ("bad.example.com/x", PULL, False),  # the exact entry is switched off
    ("a.example.com:5000/x", PULL, False),
    ("registry.internal:5000/x", PUSH, True),
    ("registry.internal/x", PULL, False),
    ("registry.internal:5001/x", PULL, False),
    ("localhost/x", PULL, False),
    ("localhost:5000/x", PULL, True),
    ("127.0.0.1:5000/x", PULL, True),
    ("127.0.0.2:5000/x", PULL, False),
    ("[::1]:5000/x", PULL, True),
    ("[0::1]:5000/x", PULL, True),
    ("[::2]:5000/x", PULL, False),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", PULL, True),
    ("123456789012.dkr.ecr.us-east-1.amazonaws.com/app", PULL, False),
    ("quay.io/team/app", PUSH, True),
    ("quay.io/team/secret", PULL, False),
    ("quay.io/team/ro/app", PULL, True),
    ("quay.io/team/ro/app", PUSH, False),
    ("quay.io/other/app", PULL, False),
]


@pytest.mark.parametrize(("image", "action", "allowed"), CASES)
def test_decisions(image: str, action: Action, allowed: bool) -> None:
    decision = evaluate(ACME, action, ImageReference.parse(image))
    assert decision.allowed is allowed, decision.reason
    assert decision.revision == 12
    assert naive_evaluate(ACME, action, ImageReference.parse(image)) is allowed


def test_denial_message_is_the_products_sentence() -> None:
    decision = evaluate(ACME, PULL, ImageReference.parse("quay.io/other/app"))
    assert decision.reason == (
        "Pull of quay.io/other/app is restricted by your organization 'acme' (policy revision "
        "12). Ask an owner of 'acme' to allow this repository."
    )
    decision = evaluate(ACME, PULL, ImageReference.parse("gcr.io/x/y"))
    assert decision.reason == (
        "Access to registry gcr.io is restricted by your organization 'acme' (policy revision "
        "12). Ask an owner of 'acme' to add it to the allowed registries."
    )
    assert decision.entry is None
    assert decision.message("https://regward.acme.test/orgs/acme").endswith(
        "Allowed registries: https://regward.acme.test/orgs/acme"
    )


def test_a_hand_written_policy_file_is_cited_as_such_not_as_revision_0() -> None:
    local = dataclasses.replace(ACME, revision=0)
    refused = evaluate(local, PULL, ImageReference.parse("gcr.io/x/y"))
    assert refused.reason.startswith(
        "Access to registry gcr.io is restricted by your organization 'acme' (local policy file)."
    )
    allowed = evaluate(local, PULL, ImageReference.parse("quay.io/team/app"))
    off = evaluate(dataclasses.replace(local, enabled=False), PULL, ImageReference.parse("x.io/y"))
    for decision in (refused, allowed, off):
        assert "revision 0" not in decision.reason and "(local policy file)" in decision.reason
        assert decision.revision == 0


def test_deciding_entry_is_reported() -> None:
    decision = evaluate(ACME, PUSH, ImageReference.parse("ghcr.io/acme/app"))
    assert decision.entry is not None
    assert str(decision.entry.address) == "ghcr.io"
    assert "Push to ghcr.io/acme/app" in decision.reason


def test_off_allows_everything_and_on_with_nothing_allows_nothing() -> None:
    off = policy({"address": "ghcr.io"}, enabled=False)
    assert evaluate(off, PUSH, ImageReference.parse("anything.example/x")).allowed
    assert evaluate_host(off, "anything.example", 443).allowed
    empty = policy()
    assert not evaluate(empty, PULL, ImageReference.parse("ubuntu")).allowed
    switched_off = policy({"address": "docker.io", "allowed": False})
    assert not evaluate(switched_off, PULL, ImageReference.parse("ubuntu")).allowed
    assert not evaluate_host(switched_off, "registry-1.docker.io", 443).allowed


def test_equally_specific_entries_switched_off_wins() -> None:
    tied = policy({"address": "ghcr.io"}, {"address": "ghcr.io", "allowed": False})
    assert not evaluate(tied, PULL, ImageReference.parse("ghcr.io/a/b")).allowed
    union = policy(
        {"address": "ghcr.io", "actions": ["pull"]}, {"address": "ghcr.io", "actions": ["push"]}
    )
    assert evaluate(union, PUSH, ImageReference.parse("ghcr.io/a/b")).allowed


def test_docker_hub_one_component_pattern_means_official_image() -> None:
    hub = policy({"address": "docker.io", "repositories": ["nginx"]})
    assert evaluate(hub, PULL, ImageReference.parse("nginx")).allowed
    assert not evaluate(hub, PULL, ImageReference.parse("someone/nginx")).allowed
    assert not evaluate(hub, PULL, ImageReference.parse("ubuntu")).allowed


HOSTS = [
    ("registry-1.docker.io", 443, True),  # Docker Hub's bundle
    ("auth.docker.io", 443, True),
    ("production.cloudflare.docker.com", 443, True),
    ("docker.io", 443, True),
    ("docker.io.evil.com", 443, False),
    ("pkg-containers.githubusercontent.com", 443, True),
    ("githubusercontent.com", 443, False),
    ("evil.githubusercontent.com", 443, False),
    ("ghcr.io", 443, True),
    ("GHCR.IO.", 443, True),
    ("ghcr.io", 8443, False),
    ("xn--ghr-hnd.io", 443, False),  # an IDN look-alike
    ("gh\u0441r.io", 443, False),  # a Cyrillic look-alike, as Unicode
    ("a.example.com", 443, True),
    ("bad.example.com", 443, False),
    ("registry.internal", 5000, True),
    ("registry.internal", 443, False),
    ("api.ecr.eu-west-1.amazonaws.com", 443, True),
    ("prod-eu-west-1-starport-layer-bucket.s3.eu-west-1.amazonaws.com", 443, True),
    ("s3.amazonaws.com", 443, False),
    ("evil-bucket.s3.eu-west-1.amazonaws.com", 443, False),
    ("127.0.0.1", 5000, True),
    ("2130706433", 5000, False),
    ("127.1", 5000, False),
    ("::1", 5000, True),
    ("", 443, False),
    ("bad host", 443, False),
]


@pytest.mark.parametrize(("host", "port", "allowed"), HOSTS)
def test_host_decisions(host: str, port: int, allowed: bool) -> None:
    decision = evaluate_host(ACME, host, port)
    assert decision.allowed is allowed, decision.reason


def test_extra_hosts_only_while_the_entry_is_allowed() -> None:
    on = policy({"address": "reg.internal:5000", "extra_hosts": ["cdn.internal"]})
    assert evaluate_host(on, "cdn.internal", 443).allowed
    off = policy(
        {"address": "reg.internal:5000", "extra_hosts": ["cdn.internal"], "allowed": False}
    )
    assert not evaluate_host(off, "cdn.internal", 443).allowed
    assert not evaluate_host(off, "reg.internal", 5000).allowed


def test_shared_tenant_hosts_are_never_bundled() -> None:
    catalog = policy(
        {"address": "registry.k8s.io"}, {"address": "gcr.io"}, {"address": "registry.gitlab.com"}
    )
    for host in ("us-west1-docker.pkg.dev", "storage.googleapis.com", "gitlab.com"):
        assert not evaluate_host(catalog, host, 443).allowed, host
    assert evaluate_host(catalog, "cdn.registry.gitlab-static.net", 443).allowed


def test_a_broader_address_never_overrides_a_narrowed_host() -> None:
    narrowed = policy(
        {"address": "*.example.com"},
        {"address": "reg.example.com", "repositories": ["public/*"]},
        {"address": "docker.io", "repositories": ["library/*"]},
        {"address": "*.io"},
    )
    assert evaluate(narrowed, PULL, ImageReference.parse("reg.example.com/public/x")).allowed
    denied = evaluate(narrowed, PULL, ImageReference.parse("reg.example.com/private/secret"))
    assert not denied.allowed
    assert "allow this repository" in denied.reason
    assert evaluate(narrowed, PULL, ImageReference.parse("other.example.com/private/x")).allowed
    assert not evaluate(narrowed, PULL, ImageReference.parse("evil/x")).allowed
    assert evaluate(narrowed, PULL, ImageReference.parse("ubuntu")).allowed


def test_host_decision_for_repository_limited_entry() -> None:
    limited = policy({"address": "ghcr.io", "repositories": ["acme/*"]})
    assert evaluate_host(limited, "ghcr.io", 443).allowed  # the proxy cannot see paths


# Random policies over a small universe of hosts and repositories, so that entries collide.
HOST_NAMES = ["a.io", "b.a.io", "c.b.a.io", "x.io", "docker.io", "ghcr.io"]
addresses = st.builds(
    lambda wildcard, host, port: ("*." if wildcard else "") + host + (f":{port}" if port else ""),
    st.booleans(),
    st.sampled_from(HOST_NAMES),
    st.sampled_from([None, 443, 5000]),
)
patterns = st.sampled_from(["*", "p", "p/*", "p/q", "p/q/*", "r", "r/s/t"])
entries = st.fixed_dictionaries(
    {"address": addresses},
    optional={
        "allowed": st.booleans(),
        "repositories": st.lists(patterns, max_size=2),
        "actions": st.sets(st.sampled_from(["pull", "push"]), min_size=1).map(sorted),
        "extra_hosts": st.lists(addresses, max_size=2),
    },
)
images = st.builds(
    lambda host, port, repo: f"{host}{f':{port}' if port else ''}/{repo}",
    st.sampled_from(HOST_NAMES),
    st.sampled_from([None, 443, 5000, 80]),
    st.sampled_from(["p", "p/q", "p/q/z", "r", "r/s/t", "library/p", "z/p"]),
)


@settings(max_examples=300)
@given(st.lists(entries, max_size=8), images, st.sampled_from(list(Action)))
def test_engine_agrees_with_linear_scan(
    raw: list[dict[str, Any]], image: str, action: Action
) -> None:
    document = policy(*raw)
    reference = ImageReference.parse(image)
    assert evaluate(document, action, reference).allowed is naive_evaluate(
        document, action, reference
    )


HOST_QUESTIONS = [*HOST_NAMES, "pkg-containers.githubusercontent.com", "registry-1.docker.io"]


@settings(max_examples=300)
@given(
    st.lists(entries, max_size=8),
    st.sampled_from(HOST_QUESTIONS),
    st.sampled_from([443, 80, 5000]),
)
def test_host_question_agrees_with_linear_scan(
    raw: list[dict[str, Any]], host: str, port: int
) -> None:
    document = policy(*raw)
    assert evaluate_host(document, host, port).allowed is naive_evaluate_host(document, host, port)
