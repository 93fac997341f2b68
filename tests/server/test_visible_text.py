"""Nicknames hold only characters shown as they are (regward.policy.text): new ones with a
right-to-left override, NUL, a newline or a zero-width space are refused naming the field and
the character, through the API, the dashboard's forms and a policy file alike; ones stored
before the rule load unchanged and are shown escaped."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from regward.policy.text import shown
from regward.server.models import Draft
from tests.server.conftest import World
from tests.server.test_dashboard import client, csrf_of, shown_after, sign_in

__all__ = ["client"]  # the dashboard's fixture, used here
ORG = "/api/v1/orgs/acme/registry-access"
HIDDEN = {"\u202e": "U+202E (RIGHT-TO-LEFT OVERRIDE)", "\n": "U+000A", "\u200b": "U+200B"}


@pytest.mark.parametrize("hidden", list(HIDDEN))
def test_the_api_refuses_a_nickname_with_a_hidden_character(world: World, hidden: str) -> None:
    alice = world.headers("alice")
    entry = {"address": "ghcr.io", "nickname": f"Git{hidden}Hub"}
    version = world.client.get(ORG, headers=alice).json()["version"]
    answers = [
        ("nickname", world.client.post(f"{ORG}/registries", json=entry, headers=alice)),
        (
            "registries[1].nickname",
            world.client.put(
                ORG,
                json={
                    "enabled": True,
                    "registries": [{"address": "docker.io"}, entry],
                    "version": version,
                },
                headers=alice,
            ),
        ),
        (
            "nickname",
            world.client.put(f"{ORG}/registries/docker.io", json={"entry": entry}, headers=alice),
        ),
    ]
    for field, answer in answers:
        assert answer.status_code == 422, answer.text
        assert answer.json()["detail"].startswith(f"{field}: "), answer.text
        assert HIDDEN[hidden] in answer.json()["detail"], answer.text
    document = json.dumps({"organization": "acme", "registries": [entry]}, indent=1)
    imported = world.client.put(
        f"{ORG}/file?format=json",
        content=document,
        headers={**alice, "Content-Type": "application/json"},
    )
    assert imported.status_code == 422, imported.text
    assert "registries[0].nickname" in imported.text and HIDDEN[hidden][:6] in imported.text
    after = world.client.get(ORG, headers=alice).json()
    assert [e["address"] for e in after["registries"]] == ["docker.io"]
    assert after["version"] == version


def test_the_add_form_names_the_character_and_keeps_the_input(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    answer = shown_after(
        client,
        client.post(
            "/orgs/acme/registry-access/add",
            data={
                "csrf_token": token,
                "address": "ghcr.io",
                "nickname": "Git\u202ebuH",
                "actions": "pull",
            },
        ),
    )
    assert answer.status_code == 422
    assert "U+202E (RIGHT-TO-LEFT OVERRIDE)" in answer.text
    assert 'id="add-nickname-error"' in answer.text and 'value="ghcr.io"' in answer.text


def test_a_nickname_stored_before_the_rule_loads_and_is_shown_escaped(
    client: TestClient,
) -> None:
    """Nothing stored is lost: the draft and the revision applied from it keep the text; the
    list, the edit page and Activity show it escaped; saving the entry asks for a new one."""
    app = client.app
    database = app.state.server.database  # type: ignore[attr-defined]
    stored = "Git\u202ebuH\x00"
    with database.session(write=True) as session:
        draft = session.scalars(select(Draft)).first()
        assert draft is not None
        draft.registries = [*draft.registries, {"address": "ghcr.io", "nickname": stored}]
    sign_in(client, "alice")
    token = client.cookies.get("regward_session")
    bearer = {"Authorization": f"Bearer {token}"}
    listed = client.get(ORG, headers=bearer).json()["registries"]
    assert listed[-1]["nickname"] == stored
    applied = client.post(f"{ORG}/apply", headers=bearer)
    assert applied.status_code == 200, applied.text
    signed = client.get("/api/v1/orgs/acme/policy", headers=bearer).json()
    assert signed["policy"]["registries"][-1]["nickname"] == stored
    page = client.get("/orgs/acme/registry-access").text
    assert shown(stored) == "Git\\u202ebuH\\x00"
    assert f'<td data-label="Nickname">{shown(stored)}</td>' in page and "\u202e" not in page
    activity = client.get("/orgs/acme/activity").text
    assert shown(stored) in activity and "\u202e" not in activity
    edit = client.get("/orgs/acme/registry-access/edit?address=ghcr.io").text
    assert 'id="edit-nickname-error"' in edit and "U+202E" in edit
    saved = client.post(
        "/orgs/acme/registry-access/edit",
        data={
            "csrf_token": csrf_of(edit),
            "original_address": "ghcr.io",
            "address": "ghcr.io",
            "nickname": "GitHub",
            "actions": "pull",
        },
    )
    assert saved.status_code == 303, saved.text
    assert client.get(ORG, headers=bearer).json()["registries"][-1]["nickname"] == "GitHub"
