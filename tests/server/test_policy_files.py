"""The list as a file over the REST API: export the draft or a revision, import into the draft;
an exported file gives `regward check --policy` the server's own decisions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from regward.policy import Action, ImageReference, evaluate, parse_policy_text
from tests.server.conftest import World

ORG = "/api/v1/orgs/acme/registry-access"
IMAGES = ("ghcr.io/acme/app:1", "ghcr.io/other/app", "quay.io/x/y", "ubuntu", "nginx")


def _draft(world: World) -> dict[str, object]:
    return dict(world.client.get(ORG, headers=world.headers("alice")).json())


@pytest.mark.parametrize("kind", ["yaml", "json"])
def test_an_exported_revision_gives_check_the_same_decisions(
    world: World, tmp_path: Path, kind: str
) -> None:
    c, h = world.client, world.headers("alice")
    entry = {"address": "ghcr.io", "repositories": ["acme/*"], "actions": ["pull"]}
    assert c.post(f"{ORG}/registries", json=entry, headers=h).status_code == 201
    c.put(f"{ORG}/enabled", json={"enabled": True}, headers=h)
    revision = c.post(f"{ORG}/apply", headers=h).json()["revision"]
    exported = c.get(f"{ORG}/file?format={kind}&revision={revision}", headers=world.headers("bob"))
    assert exported.status_code == 200
    assert f'filename="acme-revision-{revision}.{kind}"' in exported.headers["content-disposition"]
    served = parse_policy_text(c.get("/api/v1/orgs/acme/policy", headers=h).text, "feed.json")
    path = tmp_path / f"acme.{kind}"
    path.write_text(exported.text)
    assert parse_policy_text(exported.text, path.name) == served
    for image in IMAGES:
        want = evaluate(served, Action.PULL, ImageReference.parse(image))
        checked = subprocess.run(
            [sys.executable, "-m", "regward.cli", "check", image, "--policy", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert checked.returncode == (0 if want.allowed else 1), (image, checked.stderr)
        assert want.reason in checked.stdout
    draft = c.get(f"{ORG}/file?format={kind}", headers=h)
    assert 'filename="acme-draft.' in draft.headers["content-disposition"]
    assert parse_policy_text(draft.text, f"d.{kind}").revision == 0  # not published
    assert "revision" not in draft.text  # as docs/api.md says: the draft has no revision
    assert c.get(f"{ORG}/file?revision=99", headers=h).status_code == 404


def test_an_import_is_pending_until_applied_and_a_bad_file_changes_nothing(world: World) -> None:
    c, h = world.client, world.headers("alice")
    text = (
        "organization: acme\nenabled: true\nregistries:\n"
        "  - address: quay.io\n    nickname: Quay\n  - address: ghcr.io\n"
    )
    headers = {**h, "Content-Type": "application/yaml"}
    imported = c.put(f"{ORG}/file?format=yaml", content=text.encode(), headers=headers)
    assert imported.status_code == 200, imported.text
    pending = {(p["action"], p["address"]) for p in imported.json()["pending_changes"]}
    assert pending == {
        ("registry_access.enabled", None),
        ("registry_access.registry_added", "quay.io"),
        ("registry_access.registry_added", "ghcr.io"),
        ("registry_access.registry_removed", "docker.io"),
    }
    assert c.get("/api/v1/orgs/acme/policy", headers=h).json()["policy"]["revision"] == 1
    before = _draft(world)
    broken = "organization: acme\nenabled: sure\nregistries:\n  - address: 'a b'\n"
    for body, said in (
        (broken, "2 problems: line 2: enabled: 'sure' must be true or false; line 4: registries"),
        ("organization: demo\n", "the policy of 'demo', not of 'acme'"),
        ("organization: [", "not valid YAML: line 1"),
        ("\udcff", None),
    ):
        data = body.encode("utf-8", "surrogateescape")
        refused = c.put(f"{ORG}/file?format=yaml", content=data, headers=headers)
        assert refused.status_code == 422, refused.text
        assert said is None or said in refused.json()["detail"], refused.text
    assert _draft(world) == before  # bad input loses nothing
    as_bob = {**world.headers("bob"), "Content-Type": "application/yaml"}
    member = c.put(f"{ORG}/file", content=text.encode(), headers=as_bob)
    assert member.status_code == 403
    stale = c.put(f"{ORG}/file?version=1", content=text.encode(), headers=headers)
    assert stale.status_code == 409
