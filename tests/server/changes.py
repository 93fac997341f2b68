"""Save & Apply of one real change, for tests that need a new revision: a draft with nothing
pending publishes nothing (409), so each call adds an entry `published-N.example` first."""

from __future__ import annotations

import itertools

import httpx

_counter = itertools.count(1)


def publish(
    client: httpx.Client, org: str = "/api/v1/orgs/acme", headers: dict[str, str] | None = None
) -> int:
    """Add an entry to the draft of the organization at path `org` and apply it; the new
    revision."""
    path = f"{org}/registry-access"
    entry = {"address": f"published-{next(_counter)}.example"}
    added = client.post(f"{path}/registries", json=entry, headers=headers)
    assert added.status_code == 201, added.text
    applied = client.post(f"{path}/apply", headers=headers)
    assert applied.status_code == 200, applied.text
    return int(applied.json()["revision"])


def revision_or_none(applied: httpx.Response) -> int | None:
    """The revision an apply published, or None when it found nothing pending (409): with
    concurrent owners, another apply may publish an edit before its author's apply runs."""
    if applied.status_code == 409:
        assert applied.json()["detail"].startswith("nothing to apply"), applied.text
        return None
    assert applied.status_code == 200, applied.text
    return int(applied.json()["revision"])
