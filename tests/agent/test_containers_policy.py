"""The containers policy the agent writes for podman, buildah, skopeo and CRI-O.

`lookup` below is how containers/image picks the requirements for an image (the most specific
scope of the docker transport: the image, its repository, each parent namespace, the registry,
then `*.domain` wildcards without the port, then the transport's "" and the global default);
the property test holds the rendered file to the policy core's decisions with it. The real tools
reading the real file are in test_containers_policy_e2e.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from regward.agent.containers_policy import ContainersPolicy, render
from regward.agent.guard import Enforcement
from regward.policy import Action, ImageReference, Policy, evaluate

ACCEPT = [{"type": "insecureAcceptAnything"}]
REJECT = [{"type": "reject"}]
SIGNED = [{"type": "sigstoreSigned", "keyPath": "/etc/pki/acme.pub"}]
BASE: dict[str, Any] = {
    "default": ACCEPT,
    "transports": {
        "docker": {"ghcr.io/acme": SIGNED, "evil.example": ACCEPT, "docker.io": SIGNED},
        "docker-daemon": {"": ACCEPT},
    },
}


def scope_of(document: dict[str, Any], reference: ImageReference) -> str | None:
    """The docker scope containers/image would use for `reference` ("" or None: defaults)."""
    scopes = document.get("transports", {}).get("docker", {})
    name = reference.name
    candidates = [str(reference), name]
    while "/" in name:
        name = name.rsplit("/", 1)[0]
        candidates.append(name)
    host = reference.host
    while "." in host and not reference.host.replace(".", "").isdigit():
        host = host.split(".", 1)[1]
        candidates.append(f"*.{host}")
    candidates.append("")
    return next((c for c in candidates if c in scopes), None)


def lookup(document: dict[str, Any], reference: ImageReference) -> Any:
    scope = scope_of(document, reference)
    if scope is None:
        return document["default"]
    return document["transports"]["docker"][scope]


def policy(*entries: dict[str, Any], enabled: bool = True) -> Policy:
    return Policy.from_dict(
        {"organization": "acme", "revision": 3, "enabled": enabled, "registries": list(entries)}
    )


def enforcing(p: Policy) -> Enforcement:
    return Enforcement(mode="local", policy=p, organization="acme")


def pulls(document: dict[str, Any], image: str) -> Any:
    return lookup(document, ImageReference.parse(image))


def test_allowed_entries_accept_and_everything_else_is_rejected() -> None:
    document = render(
        enforcing(
            policy(
                {"address": "docker.io", "repositories": ["library/*"]},
                {"address": "ghcr.io", "repositories": ["acme/*"]},
                {"address": "*.example.com"},
                {"address": "bad.example.com", "allowed": False},
                {"address": "reg.internal:5000"},
                {"address": "quay.io", "actions": ["push"]},
            )
        ),
        {"default": ACCEPT},
    )
    assert document["default"] == REJECT
    assert document["transports"]["docker"][""] == REJECT
    assert pulls(document, "ubuntu") == ACCEPT  # docker.io/library/ubuntu
    assert pulls(document, "acme/tool") == REJECT  # docker.io/acme/tool: not library/*
    assert pulls(document, "ghcr.io/acme/app:1") == ACCEPT
    assert pulls(document, "ghcr.io/acmeevil/app:1") == REJECT
    assert pulls(document, "ghcr.io/other/app") == REJECT
    assert pulls(document, "cdn.example.com/x/y") == ACCEPT  # wildcard
    assert pulls(document, "example.com/x/y") == REJECT  # never the domain itself
    assert pulls(document, "bad.example.com/x/y") == REJECT  # switched off beats the wildcard
    assert pulls(document, "reg.internal:5000/x") == ACCEPT
    assert pulls(document, "reg.internal/x") == REJECT  # another port
    assert pulls(document, "quay.io/x/y") == REJECT  # push only
    assert pulls(document, "quay.io:443/x/y") == REJECT
    assert pulls(document, "docker.io.evil.com/x") == REJECT
    # Local transports keep what applied before: pushes from local storage still read it.
    assert document["transports"]["containers-storage"][""] == ACCEPT


def test_signature_requirements_on_allowed_scopes_are_kept() -> None:
    document = render(enforcing(policy({"address": "ghcr.io"}, {"address": "docker.io"})), BASE)
    docker = document["transports"]["docker"]
    assert docker["ghcr.io/acme"] == SIGNED  # kept: inside an allowed registry
    assert docker["docker.io"] == SIGNED  # the scope the agent writes inherits it
    assert pulls(document, "nginx") == SIGNED
    assert pulls(document, "ghcr.io/acme/app") == SIGNED
    assert pulls(document, "ghcr.io/other/app") == ACCEPT
    assert "evil.example" not in docker  # an acceptance the policy does not allow is dropped
    assert pulls(document, "evil.example/x") == REJECT
    assert document["transports"]["docker-daemon"] == {"": ACCEPT}


def test_a_signed_scope_that_is_not_allowed_is_dropped_not_opened() -> None:
    document = render(enforcing(policy({"address": "quay.io"})), BASE)
    assert "ghcr.io/acme" not in document["transports"]["docker"]
    assert pulls(document, "ghcr.io/acme/app") == REJECT


def test_nothing_enforced_gives_the_base_back_and_fail_closed_rejects_all() -> None:
    assert render(enforcing(policy({"address": "quay.io"}, enabled=False)), BASE) == BASE
    assert render(Enforcement(mode="unmanaged"), BASE) == BASE
    blocked = render(Enforcement(mode="signed-in", organization="acme"), BASE)
    assert blocked["transports"]["docker"] == {"": REJECT}
    assert pulls(blocked, "ghcr.io/acme/app") == REJECT


def test_what_the_format_cannot_say_is_stricter_or_documented() -> None:
    document = render(
        enforcing(
            policy(
                {"address": "*.corp.test", "repositories": ["team/*"]},
                {"address": "*.example.com"},
                {"address": "reg.test", "repositories": ["library/nginx"]},
            )
        ),
        {"default": ACCEPT},
    )
    # A wildcard narrowed to repositories cannot be written: rejected whole (stricter).
    assert pulls(document, "a.corp.test/team/app") == REJECT
    # Documented in docs/security.md: a wildcard scope covers every port...
    assert pulls(document, "a.example.com:5000/x") == ACCEPT
    # ...and a repository scope the repositories below it.
    assert pulls(document, "reg.test/library/nginx/sub") == ACCEPT


HOSTS = ["a.test", "b.a.test", "c.test"]
ADDRESSES = st.sampled_from(
    [*HOSTS, *(f"{h}:443" for h in HOSTS), *(f"{h}:5000" for h in HOSTS), "*.test", "*.a.test"]
)
PATTERNS = st.lists(st.sampled_from(["x/*", "x/y/*", "w/*"]), max_size=2)
ENTRY = st.builds(
    lambda address, repositories, allowed, actions: {
        "address": address,
        "repositories": [] if address.startswith("*") else repositories,
        "allowed": allowed,
        "actions": sorted(actions),
    },
    ADDRESSES,
    PATTERNS,
    st.booleans(),
    st.sets(st.sampled_from(["pull", "push"]), min_size=1),
)
REFERENCE = st.builds(
    lambda host, port, repository: ImageReference.parse(
        f"{host}{'' if port is None else f':{port}'}/{repository}:1"
    ),
    st.sampled_from([*HOSTS, "d.test", "e.b.a.test", "test"]),
    st.sampled_from([None, 443, 80, 5000]),
    st.sampled_from(["x", "x/y", "x/y/z", "w", "w/v", "q"]),
)


@given(st.lists(ENTRY, max_size=6), REFERENCE)
def test_the_file_decides_as_the_policy_core(entries: list[dict[str, Any]], image: Any) -> None:
    """Exact agreement, outside the two breadths docs/security.md names (a wildcard scope covers
    every port; `x/*` also covers the repository `x`)."""
    p = policy(*entries)
    document = render(enforcing(p), {"default": ACCEPT})
    scope = scope_of(document, image) or ""
    wildcard_port = scope.startswith("*.") and image.port not in (None, 443, 80)
    namespace_itself = "/" in scope and scope.split("/", 1)[1] == image.repository
    assume(not wildcard_port and not namespace_itself)
    allowed = evaluate(p, Action.PULL, image).allowed
    assert (lookup(document, image) == ACCEPT) == allowed, (scope, document)


def test_the_file_is_replaced_atomically_and_its_owners_edits_become_the_base(
    tmp_path: Path,
) -> None:
    path = tmp_path / "etc" / "policy.json"
    path.parent.mkdir()
    path.write_text(json.dumps(BASE))
    writer = ContainersPolicy(path, tmp_path / "state")
    writer.update(enforcing(policy({"address": "quay.io"})))
    written = json.loads(path.read_text())
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "ghcr.io/acme" not in written["transports"]["docker"]
    # ghcr.io allowed again later: the signature requirement comes back from the saved base.
    writer.update(enforcing(policy({"address": "ghcr.io"})))
    assert json.loads(path.read_text())["transports"]["docker"]["ghcr.io/acme"] == SIGNED
    # The owner edits the file: the edit is the new base.
    edited = json.loads(path.read_text())
    edited["transports"]["docker"]["ghcr.io/tools"] = SIGNED
    path.write_text(json.dumps(edited))
    writer.update(enforcing(policy({"address": "ghcr.io"})))
    assert json.loads(path.read_text())["transports"]["docker"]["ghcr.io/tools"] == SIGNED
    writer.update(enforcing(policy({"address": "ghcr.io"}, enabled=False)))
    assert json.loads(path.read_text()) == edited
    assert [p.name for p in path.parent.iterdir()] == ["policy.json"]  # no temporary left


def test_a_broken_file_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text("{not json")
    writer = ContainersPolicy(path, tmp_path / "state")
    writer.update(enforcing(policy({"address": "quay.io"})))
    assert path.read_text() == "{not json"  # the tools refuse it: closed, not opened
    assert writer.writes == 0
