"""The Registry Access list: grouped by address, sorted, searched (a GET form, no script)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regward.server.dashboard import forms, views
from tests.server.conftest import World

ORG = "/api/v1/orgs/acme"
ROW = re.compile(r'<tr data-address="([^"]+)" data-repositories="([^"]*)"')
GROUP = re.compile(r'<tr class="group-head"><th[^>]*><code>([^<]+)</code> · (\d+) entries')

# The list is arranged in Python from the draft: one database kind is enough.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def listed(world: World) -> World:
    for entry in (
        {"address": "quay.io", "nickname": "Quay"},
        {"address": "ghcr.io", "nickname": "GitHub", "actions": ["pull"]},
        {"address": "registry.k8s.io", "nickname": "Kubernetes"},
        {"address": "ghcr.io", "repositories": ["acme/*"], "nickname": "Our images"},
        {"address": "*.corp.example", "extra_hosts": ["blobs.cdn.example"]},
    ):
        answer = world.client.post(
            f"{ORG}/registry-access/registries", json=entry, headers=world.headers("alice")
        )
        assert answer.status_code == 201, answer.text
    world.client.cookies.set("regward_session", world.tokens["bob"])
    return world


def shown(world: World, **query: str) -> list[tuple[str, str]]:
    page = world.client.get("/orgs/acme/registry-access", params=query)
    assert page.status_code == 200
    return ROW.findall(page.text)


@SQLITE
def test_entries_of_an_address_are_grouped_and_sorted(listed: World) -> None:
    assert shown(listed) == [
        ("*.corp.example", ""),
        ("docker.io", ""),
        ("ghcr.io", ""),
        ("ghcr.io", "acme/*"),
        ("quay.io", ""),
        ("registry.k8s.io", ""),
    ]
    page = listed.client.get("/orgs/acme/registry-access").text
    assert GROUP.findall(page) == [("ghcr.io", "2")]  # only addresses with several entries
    assert [a for a, _ in shown(listed, sort="-address")] == [
        "registry.k8s.io",
        "quay.io",
        "ghcr.io",
        "ghcr.io",
        "docker.io",
        "*.corp.example",
    ]
    # As the policy lists them: groups by first appearance, each group's entries together.
    assert [a for a, _ in shown(listed, sort="listed")] == [
        "docker.io",
        "quay.io",
        "ghcr.io",
        "ghcr.io",
        "registry.k8s.io",
        "*.corp.example",
    ]


@SQLITE
def test_search_finds_addresses_nicknames_repositories_and_extra_hosts(listed: World) -> None:
    assert shown(listed, q="GHCR") == [("ghcr.io", ""), ("ghcr.io", "acme/*")]
    assert shown(listed, q="our images") == [("ghcr.io", "acme/*")]
    assert shown(listed, q="acme/") == [("ghcr.io", "acme/*")]
    assert shown(listed, q="cdn") == [("*.corp.example", "")]
    page = listed.client.get("/orgs/acme/registry-access", params={"q": "k8s"}).text
    assert "Registries (1 of 6)" in page
    nothing = listed.client.get("/orgs/acme/registry-access", params={"q": "<b>zzz</b>"})
    assert nothing.status_code == 200
    assert "No registry matches “&lt;b&gt;zzz&lt;/b&gt;”." in nothing.text


@SQLITE
def test_lint_warnings_stay_with_their_entry_in_any_order(listed: World) -> None:
    c = listed.client
    answer = c.post(
        f"{ORG}/registry-access/registries",
        json={"address": "*.io"},
        headers=listed.headers("alice"),
    )
    assert answer.status_code == 201, answer.text
    for sort in ("address", "-address", "listed"):
        page = c.get("/orgs/acme/registry-access", params={"sort": sort}).text
        wildcard = page.index('<tr data-address="*.io"')
        following = page[wildcard : page.index("</tbody>", wildcard)]
        assert 'class="lint-warning"' in following, sort


@given(st.text(max_size=300), st.text(max_size=20))
def test_the_list_view_reads_any_query(search: str, sort: str) -> None:
    order, text = forms.entry_view(sort, search)
    assert order in views.ENTRY_SORTS
    assert order == sort or sort not in views.ENTRY_SORTS
    assert text == search.strip()[: forms.MAX_SEARCH]
