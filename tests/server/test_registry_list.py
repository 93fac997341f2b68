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


@SQLITE
def test_two_thousand_registries_are_paged_and_searchable(world: World) -> None:
    """An organization with 2,000 entries gets pages of about 100 (an address's entries stay
    on one page), each page linked with the search and sort kept, and the whole count."""
    entries: list[dict[str, object]] = [{"address": "docker.io"}]
    entries += [{"address": f"r{n:04}.example"} for n in range(1998)]
    entries += [{"address": "r0150.example", "repositories": ["acme/*"]}]  # a group of two
    version = world.client.get(f"{ORG}/registry-access", headers=world.headers("alice"))
    replaced = world.client.put(
        f"{ORG}/registry-access",
        json={"enabled": True, "registries": entries, "version": version.json()["version"]},
        headers=world.headers("alice"),
    )
    assert replaced.status_code == 200, replaced.text
    world.client.cookies.set("regward_session", world.tokens["bob"])
    first = world.client.get("/orgs/acme/registry-access").text
    assert len(ROW.findall(first)) == 100 and "Registries (2000)" in first
    assert (
        "Page 1 of 20" in first and 'href="/orgs/acme/registry-access?page=2#list-title"' in first
    )
    second = world.client.get("/orgs/acme/registry-access", params={"page": "2"}).text
    rows = ROW.findall(second)
    assert rows[0] == ("r0099.example", "") and ("r0150.example", "acme/*") in rows
    assert ("r0150.example", "") in rows and len(rows) == 100  # the group is not split
    last = shown(world, page="20")
    assert last[-1] == ("r1997.example", "") and len(last) == 2000 - 19 * 100
    assert shown(world, page="999") == shown(world, page="20")  # past the end: the last
    searched = world.client.get(
        "/orgs/acme/registry-access", params={"q": "r01", "sort": "-address"}
    )
    assert "Page 1 of 2" in searched.text
    assert (
        'href="/orgs/acme/registry-access?q=r01&amp;sort=-address&amp;page=2#list-title"'
        in searched.text
    )


@given(st.lists(st.integers(1, 5), max_size=60), st.integers(1, 40))
def test_pages_hold_every_group_once_and_whole(sizes: list[int], size: int) -> None:
    groups = [
        views.EntryGroup(
            f"r{i}.example", [views.EntryRow(f"r{i}.example", "", True, [], [], [])] * n
        )
        for i, n in enumerate(sizes)
    ]
    pages = views.page_of_groups(groups, 1, size)[1]
    paged = [g for n in range(1, pages + 1) for g in views.page_of_groups(groups, n, size)[0]]
    assert paged == groups
    for n in range(1, pages):
        assert sum(len(g.rows) for g in views.page_of_groups(groups, n, size)[0]) >= size
