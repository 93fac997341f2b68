"""The dashboard's security and form handling, over HTTP without a browser (fast).

Each test gets its own SQLite database copied from the migrated template: `acme` (owner alice,
member bob) and `evilcorp` (owner eve). The browser tests (test_dashboard_browser.py) cover the
same pages in Chromium.
"""

from __future__ import annotations

import re
import shutil
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from regward.server.app import create_app
from regward.server.dashboard.rendering import FORM_COOKIE
from regward.server.db import Database
from regward.server.keys import load_or_create
from regward.server.models import Device, Role, Scope, Token, TokenKind
from regward.server.services import auth, orgs, registry_access
from regward.server.services.limits import PER_USER, SignInLimiter
from regward.server.settings import Settings
from tests.server.accounts import PASSWORD
from tests.server.conftest import WorldTemplate

with warnings.catch_warnings():
    # Starlette 1.x prefers the httpx2 fork for its test client; httpx works the same here.
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
TOKEN_SHOWN = re.compile(r'id="created-token" type="text" readonly value="(rwp_[^"]+)"')


@pytest.fixture
def client(tmp_path: Path, sqlite_world: WorldTemplate) -> Iterator[TestClient]:
    shutil.copy(sqlite_world.source, tmp_path / "regward.db")  # make_users' accounts
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'regward.db'}")
    sqlite_world.install_key(settings)
    database = Database(settings.database_url)
    app = create_app(settings, database=database)
    with TestClient(app, follow_redirects=False) as test_client:
        yield test_client


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "page has no form with a CSRF token"
    return match.group(1)


def sign_in(client: TestClient, username: str, password: str = PASSWORD) -> None:
    page = client.get("/signin")
    answer = client.post(
        "/signin",
        data={"csrf_token": csrf_of(page.text), "username": username, "password": password},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"


def shown_after(client: TestClient, answer: httpx.Response) -> httpx.Response:
    """The page a refused form is shown on: a 303 to a GET page, the form kept for it in a
    cookie (so a reload never sends the form again); `answer` itself when it is no refusal."""
    if answer.status_code != 303 or FORM_COOKIE not in answer.headers.get("set-cookie", ""):
        return answer
    page: httpx.Response = client.get(answer.headers["location"])
    assert page.request.method == "GET"
    return page


def draft(client: TestClient) -> list[str]:
    """Addresses in acme's draft, read through the REST API with alice's session."""
    token = client.cookies.get("regward_session")
    answer = client.get(
        "/api/v1/orgs/acme/registry-access", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200, answer.text
    return [entry["address"] for entry in answer.json()["registries"]]


def test_session_cookie_is_httponly_and_samesite(client: TestClient) -> None:
    page = client.get("/signin")
    answer = client.post(
        "/signin",
        data={"csrf_token": csrf_of(page.text), "username": "alice", "password": PASSWORD},
    )
    cookie = next(
        value
        for name, value in answer.headers.multi_items()
        if name == "set-cookie" and value.startswith("regward_session=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie
    assert client.get("/").headers["location"] == "/orgs/acme/overview"


def test_pages_forbid_framing_and_foreign_scripts(client: TestClient) -> None:
    answer = client.get("/signin")
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert answer.headers["x-frame-options"] == "DENY"
    # Every asset the page names is served by the server itself.
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', answer.text):
        assert client.get(asset).status_code == 200, asset
    assert "http" not in "".join(re.findall(r'(?:href|src)="([^"]+)"', answer.text))


def test_sign_in_is_rate_limited_per_username(client: TestClient) -> None:
    page = client.get("/signin")
    token = csrf_of(page.text)
    for _ in range(PER_USER):
        wrong = client.post(
            "/signin", data={"csrf_token": token, "username": "alice", "password": "wrong-guess"}
        )
        assert wrong.status_code == 401
        assert "Wrong username or password." in wrong.text
    # Now even the right password waits: a guesser cannot tell.
    blocked = client.post(
        "/signin", data={"csrf_token": token, "username": "alice", "password": PASSWORD}
    )
    assert blocked.status_code == 429
    assert re.search(r"Wait \d+ seconds and try again", blocked.text)
    # Other users are not locked out by alice's attacker.
    sign_in(client, "bob")


def test_limiter_forgets_failures_after_the_window(database: Database) -> None:
    now = [datetime(2026, 11, 27, 12, 0, tzinfo=UTC)]
    limiter = SignInLimiter(database, per_user=2, per_client=3, window=60, clock=lambda: now[0])
    limiter.failed("Alice", "10.0.0.1")
    limiter.failed("alice", "10.0.0.1")
    assert limiter.retry_after("ALICE", "10.0.0.2") == 60  # usernames in any case are one
    assert limiter.retry_after("bob", "10.0.0.2") == 0
    now[0] += timedelta(seconds=20)
    limiter.failed("carol", "10.0.0.1")  # the client's third
    assert limiter.retry_after("bob", "10.0.0.1") == 40
    limiter.succeeded("alice")
    assert limiter.retry_after("alice", "10.0.0.2") == 0
    now[0] += timedelta(seconds=41)
    assert limiter.retry_after("bob", "10.0.0.1") == 0


def test_sign_in_form_needs_its_csrf_token(client: TestClient) -> None:
    client.get("/signin")
    answer = client.post("/signin", data={"username": "alice", "password": PASSWORD})
    assert answer.status_code == 403
    assert "regward_session" not in client.cookies


def test_sign_in_never_redirects_off_site(client: TestClient) -> None:
    page = client.get("/signin", params={"next": "//evil.example.com/x"})
    assert 'name="next" value="/"' in page.text
    answer = client.post(
        "/signin",
        data={
            "csrf_token": csrf_of(page.text),
            "username": "alice",
            "password": PASSWORD,
            "next": "https://evil.example.com/",
        },
    )
    assert answer.headers["location"] == "/"


def test_sign_out_ends_the_session_on_the_server(client: TestClient) -> None:
    sign_in(client, "alice")
    stolen = client.cookies.get("regward_session")
    page = client.get("/orgs/acme/registry-access")
    answer = client.post("/signout", data={"csrf_token": csrf_of(page.text)})
    assert answer.status_code == 303
    client.cookies.set("regward_session", stolen or "")
    again = client.get("/orgs/acme/registry-access")
    assert again.status_code == 303
    assert again.headers["location"].startswith("/signin")


def test_every_post_needs_the_session_csrf_token(client: TestClient) -> None:
    sign_in(client, "alice")
    posts = [
        "/orgs/acme/registry-access/toggle",
        "/orgs/acme/registry-access/add",
        "/orgs/acme/registry-access/allowed",
        "/orgs/acme/registry-access/remove",
        "/orgs/acme/registry-access/apply",
        "/orgs/acme/registry-access/edit",
        "/orgs/acme/members/add",
        "/orgs/acme/members/role",
        "/orgs/acme/members/remove",
        "/tokens/create",
        "/tokens/revoke",
        "/signout",
    ]
    for path in posts:
        for token in ("", "forged-token-value"):
            answer = client.post(
                path, data={"csrf_token": token, "address": "quay.io", "username": "bob"}
            )
            assert answer.status_code == 403, path
            assert "This form cannot be accepted" in answer.text
    assert draft(client) == ["docker.io"]


def test_member_reads_but_every_change_is_refused(client: TestClient) -> None:
    sign_in(client, "bob")
    page = client.get("/orgs/acme/registry-access")
    assert page.status_code == 200
    assert "only owners can change them" in page.text
    assert 'action="/orgs/acme/registry-access/add"' not in page.text
    token = csrf_of(page.text)
    for path, data in [
        ("/orgs/acme/registry-access/toggle", {"enabled": "true"}),
        ("/orgs/acme/registry-access/add", {"address": "quay.io", "actions": "pull"}),
        ("/orgs/acme/registry-access/remove", {"address": "docker.io"}),
        ("/orgs/acme/registry-access/apply", {}),
        ("/orgs/acme/members/add", {"username": "mallory", "role": "owner"}),
        ("/orgs/acme/members/role", {"username": "bob", "role": "owner"}),
    ]:
        answer = client.post(path, data={"csrf_token": token, **data})
        assert answer.status_code == 403, path
    assert client.get("/orgs/acme/registry-access/edit?address=docker.io").status_code == 403
    members = client.get("/orgs/acme/members").text
    assert "Add member" not in members


def test_outsider_gets_not_found_for_every_page(client: TestClient) -> None:
    sign_in(client, "eve")
    page = client.get("/orgs/evilcorp/registry-access")
    token = csrf_of(page.text)
    for tab in ("registry-access", "activity", "members", "devices", "blocked", "test"):
        answer = client.get(f"/orgs/acme/{tab}")
        assert answer.status_code == 404, tab
        assert "docker.io" not in answer.text
    answer = client.post(
        "/orgs/acme/registry-access/add", data={"csrf_token": token, "address": "quay.io"}
    )
    assert answer.status_code == 404
    assert '<option value="acme"' not in page.text


def test_markup_in_a_nickname_is_escaped(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    nickname = '"><script>alert(1)</script>'
    client.post(
        "/orgs/acme/registry-access/add",
        data={
            "csrf_token": token,
            "address": "ghcr.io",
            "nickname": nickname,
            "allowed": "true",
            "actions": ["pull", "push"],
        },
    )
    page = client.get("/orgs/acme/registry-access").text
    assert "<script>alert(1)</script>" not in page
    assert "&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_bad_address_names_the_value_and_keeps_the_input(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    sent = client.post(
        "/orgs/acme/registry-access/add",
        data={
            "csrf_token": token,
            "address": "not a host!",
            "nickname": "Typo",
            "repositories": "acme/*",
            "actions": "pull",
        },
    )
    assert sent.status_code == 303 and sent.headers["location"] == "/orgs/acme/registry-access"
    answer = shown_after(client, sent)
    assert answer.status_code == 422
    assert "The registry was not added." in answer.text
    assert "not a host!" in answer.text
    assert 'value="Typo"' in answer.text
    assert ">acme/*</textarea>" in answer.text
    assert draft(client) == ["docker.io"]


def test_stale_toggle_is_refused_and_the_draft_kept(client: TestClient) -> None:
    sign_in(client, "alice")
    page = client.get("/orgs/acme/registry-access").text
    token = csrf_of(page)
    version = re.search(r'name="version" value="(\d+)"', page)
    assert version
    fresh = client.post(
        "/orgs/acme/registry-access/add",
        data={"csrf_token": token, "address": "quay.io", "allowed": "true", "actions": "pull"},
    )
    assert fresh.status_code == 303
    stale = client.post(
        "/orgs/acme/registry-access/remove",
        data={"csrf_token": token, "address": "docker.io", "version": version.group(1)},
    )
    assert stale.status_code == 409
    assert "changed since you loaded them" in stale.text
    assert draft(client) == ["docker.io", "quay.io"]


def test_token_value_is_shown_once(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/tokens").text)
    created = client.post(
        "/tokens/create", data={"csrf_token": token, "name": "ci", "scope": "read"}
    )
    value = re.search(TOKEN_SHOWN, created.text)

    assert value
    feed = client.get(
        "/api/v1/orgs/acme/policy", headers={"Authorization": f"Bearer {value.group(1)}"}
    )
    assert feed.status_code == 200
    listing = client.get("/tokens").text
    assert value.group(1) not in listing
    token_id = re.search(r'name="token_id" value="(\d+)"', listing)
    assert token_id
    # Without JavaScript the first post only asks; nothing is revoked yet.
    asked = client.post("/tokens/revoke", data={"csrf_token": token, "token_id": token_id.group(1)})
    assert asked.status_code == 200
    assert "Revoke ci?" in asked.text and "cannot be undone" in asked.text
    feed = client.get(
        "/api/v1/orgs/acme/policy", headers={"Authorization": f"Bearer {value.group(1)}"}
    )
    assert feed.status_code == 200
    page_form = re.search(
        r'<form method="post" action="/tokens/revoke">(.*?)</form>', asked.text, re.S
    )
    assert page_form
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page_form[1]))
    assert form == {"csrf_token": token, "token_id": token_id.group(1), "confirmed": "yes"}
    revoked = client.post("/tokens/revoke", data=form)
    assert revoked.status_code == 303
    feed = client.get(
        "/api/v1/orgs/acme/policy", headers={"Authorization": f"Bearer {value.group(1)}"}
    )
    assert feed.status_code == 401


def test_new_member_gets_a_one_time_password(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/members").text)
    answer = client.post(
        "/orgs/acme/members/add", data={"csrf_token": token, "username": "carol", "role": "member"}
    )
    assert answer.status_code == 200
    password = re.search(r'id="new-password" type="text" readonly value="([^"]+)"', answer.text)
    assert password
    client.cookies.clear()
    one_time = password.group(1)
    sign_in(client, "carol", one_time)
    # Every page leads to the Account page until carol chooses her own password.
    for path in ("/", "/orgs/acme/registry-access", "/orgs/acme/members", "/tokens", "/device"):
        bounced = client.get(path)
        assert (bounced.status_code, bounced.headers.get("location")) == (303, "/account"), path
    account = client.get("/account")
    assert account.status_code == 200 and 'id="one-time-notice"' in account.text
    # The API says so but keeps working with her sign-in.
    bearer = {"Authorization": f"Bearer {client.cookies.get('regward_session')}"}
    assert client.get("/api/v1/user", headers=bearer).json()["password_change_required"] is True
    assert client.get("/api/v1/orgs/acme/registry-access", headers=bearer).status_code == 200

    def choose(current: str, new: str) -> httpx.Response:
        fields = {"current_password": current, "new_password": new, "confirm_password": new}
        token = csrf_of(client.get("/account").text)
        answer: httpx.Response = client.post(
            "/account/password", data={"csrf_token": token, **fields}
        )
        return answer

    same = choose(one_time, one_time)
    assert same.status_code == 422 and "not the one-time one" in same.text
    chosen = choose(one_time, "carols-own-password")
    assert (chosen.status_code, chosen.headers["location"]) == (303, "/")
    assert "member of acme" in client.get("/orgs/acme/registry-access").text
    assert 'id="one-time-notice"' not in client.get("/account").text
    assert client.get("/api/v1/user", headers=bearer).json()["password_change_required"] is False


def test_last_owner_cannot_demote_themselves(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/members").text)
    answer = client.post(
        "/orgs/acme/members/role", data={"csrf_token": token, "username": "alice", "role": "member"}
    )
    assert answer.status_code == 409
    assert "last owner" in answer.text


def test_image_tester_compares_draft_and_applied(client: TestClient, tmp_path: Path) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    client.post("/orgs/acme/registry-access/toggle", data={"csrf_token": token, "enabled": "true"})
    page = client.get("/orgs/acme/test", params={"image": "quay.io/org/app:1", "action": "pull"})
    assert page.status_code == 200
    assert "Draft, with pending changes (revision 2 once applied): " in page.text
    assert 'once applied): <span class="tag tag-bad">blocked' in page.text
    assert 'Applied revision 1: <span class="tag tag-ok">allowed' in page.text
    assert "restricted by your organization" in page.text
    bad = client.get("/orgs/acme/test", params={"image": "UPPER/Case:bad tag"})
    assert bad.status_code == 422
    assert "UPPER/Case:bad tag" in bad.text
    # The pending toggle is what Save & Apply would publish.
    database = Database(f"sqlite:///{tmp_path / 'regward.db'}")
    with database.session() as session:
        acme = orgs.get(session, "acme")
        assert acme is not None
        assert [c.action for c in registry_access.get_draft(session, acme).pending] == [
            "registry_access.enabled"
        ]
    database.dispose()


def test_activity_rejects_a_malformed_time(client: TestClient) -> None:
    sign_in(client, "alice")
    answer = client.get("/orgs/acme/activity", params={"since": "yesterday"})
    assert answer.status_code == 422
    assert "yesterday" in answer.text


def test_change_password(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/account").text)
    new = "a much longer passphrase"

    def change(current: str, confirm: str) -> int:
        answer = client.post(
            "/account/password",
            data={
                "csrf_token": token,
                "current_password": current,
                "new_password": new,
                "confirm_password": confirm,
            },
        )
        status: int = answer.status_code
        return status

    other = TestClient(client.app, follow_redirects=False)  # alice on another device
    sign_in(other, "alice")
    assert other.get("/account", follow_redirects=False).status_code == 200
    assert change("wrong password", new) == 401
    assert change(PASSWORD, "something else") == 422
    assert change(PASSWORD, new) == 303
    # Whoever signed in with the old password is signed out; this sign-in stays.
    assert client.get("/account", follow_redirects=False).status_code == 200
    assert other.get("/account", follow_redirects=False).status_code == 303
    client.cookies.clear()
    sign_in(client, "alice", new)


def _database(tmp_path: Path) -> Database:
    return Database(f"sqlite:///{tmp_path / 'regward.db'}")


def test_activity_pages_through_many_events(client: TestClient, tmp_path: Path) -> None:
    database = _database(tmp_path)
    key = load_or_create(tmp_path / "signing-key.pem")
    with database.session(write=True) as session:
        acme = orgs.get(session, "acme")
        alice = auth.get_user(session, "alice")
        assert acme is not None and alice is not None
        for number in range(30):
            registry_access.add_entry(session, acme, alice, {"address": f"r{number}.example.com"})
        registry_access.apply(session, acme, alice, key)
    database.dispose()
    sign_in(client, "alice")
    first = client.get("/orgs/acme/activity", params={"action": "registry_access.registry_added"})
    assert first.text.count('<li class="card event">') == 25
    assert "r29.example.com" in first.text
    assert "page=2" in first.text
    second = client.get(
        "/orgs/acme/activity", params={"action": "registry_access.registry_added", "page": "2"}
    )
    assert second.text.count('<li class="card event">') == 5
    assert "r0.example.com" in second.text
    assert "Older" not in second.text
    by_actor = client.get("/orgs/acme/activity", params={"actor": "nobody"})
    assert "No activity matches these filters." in by_actor.text


def test_switcher_lists_only_my_organizations(client: TestClient, tmp_path: Path) -> None:
    database = _database(tmp_path)
    with database.session(write=True) as session:
        evilcorp = orgs.get(session, "evilcorp")
        eve = auth.get_user(session, "eve")
        assert evilcorp is not None and eve is not None
        orgs.add_member(session, evilcorp, eve, "alice", Role.MEMBER)
    database.dispose()
    sign_in(client, "alice")
    page = client.get("/orgs/acme/devices").text
    switcher = page[page.index('id="org-switch"') : page.index("</select>")]
    assert re.findall(r'<option value="([^"]+)"', switcher) == ["acme", "evilcorp"]
    answer = client.get("/switch", params={"org": "evilcorp", "tab": "activity"})
    assert answer.headers["location"] == "/orgs/evilcorp/activity"
    evil = client.get("/orgs/evilcorp/registry-access").text
    assert "member of evilcorp" in evil
    assert 'action="/orgs/evilcorp/registry-access/add"' not in evil


def test_user_without_organization_is_told_what_to_do(client: TestClient, tmp_path: Path) -> None:
    database = _database(tmp_path)
    with database.session(write=True) as session:
        auth.create_user(session, "dave", PASSWORD)
    database.dispose()
    sign_in(client, "dave")
    page = client.get("/")
    assert page.status_code == 200
    assert "No organization yet" in page.text
    assert "regward server init --org ORG --owner dave" in page.text


def test_token_name_with_markup_is_escaped_in_notices(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/tokens").text)
    name = "<b onmouseover=alert(1)>ci</b>"
    created = client.post(
        "/tokens/create", data={"csrf_token": token, "name": name, "scope": "read"}
    )
    assert name not in created.text
    assert "&lt;b onmouseover=alert(1)&gt;ci&lt;/b&gt;" in created.text
    token_id = re.search(r'name="token_id" value="(\d+)"', created.text)
    assert token_id
    confirmed = {"csrf_token": token, "token_id": token_id.group(1), "confirmed": "yes"}
    client.post("/tokens/revoke", data=confirmed)
    notice = client.get("/tokens").text
    assert "Revoked &lt;b onmouseover=alert(1)&gt;ci&lt;/b&gt;" in notice
    assert name not in notice


def test_owner_who_leaves_lands_outside(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/members").text)
    promoted = client.post(
        "/orgs/acme/members/role", data={"csrf_token": token, "username": "bob", "role": "owner"}
    )
    assert promoted.status_code == 303
    leave = {"csrf_token": token, "username": "alice"}
    asked = client.post("/orgs/acme/members/remove", data=leave)
    assert asked.status_code == 200 and "Remove alice from acme?" in asked.text
    left = client.post("/orgs/acme/members/remove", data={**leave, "confirmed": "yes"})
    assert left.headers["location"] == "/"
    home = client.get("/")
    assert "You left acme." in home.text
    assert "No organization yet" in home.text
    assert client.get("/orgs/acme/registry-access").status_code == 404


def test_discard_puts_the_draft_back_to_the_applied_revision(client: TestClient) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    client.post("/orgs/acme/registry-access/toggle", data={"csrf_token": token, "enabled": "true"})
    client.post(
        "/orgs/acme/registry-access/add",
        data={"csrf_token": token, "address": "quay.io", "allowed": "true", "actions": "pull"},
    )
    page = client.get("/orgs/acme/registry-access").text
    assert "Pending changes." in page
    version = re.search(r'name="version" value="(\d+)"', page)
    assert version
    answer = client.post(
        "/orgs/acme/registry-access/discard",
        data={"csrf_token": token, "version": version.group(1)},
    )
    assert answer.status_code == 303
    page = client.get("/orgs/acme/registry-access").text
    assert "Pending changes discarded" in page
    assert "Pending changes." not in page
    assert "Registry Access Management is off" in page
    assert draft(client) == ["docker.io"]


def test_a_lint_warning_shows_on_its_own_entry_not_on_others_of_the_address(
    client: TestClient,
) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    add = {"csrf_token": token, "address": "ghcr.io", "allowed": "true"}
    for extra in ({"actions": ["pull", "push"]}, {"repositories": "acme/*", "actions": "pull"}):
        assert (
            client.post("/orgs/acme/registry-access/add", data={**add, **extra}).status_code == 303
        )
    page = client.get("/orgs/acme/registry-access").text
    rows = {  # each entry's row with the warnings row under it
        match.group(1): match.group(0)
        for match in re.finditer(
            r'<tr data-address="ghcr.io" data-repositories="([^"]*)"'
            r".*?(?=<tr data-address|</tbody>)",
            page,
            re.S,
        )
    }
    assert set(rows) == {"", "acme/*"}
    assert "push there is refused" in rows["acme/*"]
    assert "lint-warning" not in rows[""]


def test_second_entry_for_an_address_is_added_edited_switched_and_removed_by_key(
    client: TestClient,
) -> None:
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    add = {"csrf_token": token, "address": "ghcr.io", "allowed": "true"}
    assert (
        client.post("/orgs/acme/registry-access/add", data={**add, "actions": "pull"}).status_code
        == 303
    )
    second = client.post(
        "/orgs/acme/registry-access/add",
        data={**add, "nickname": "Ours", "repositories": "acme/*", "actions": ["pull", "push"]},
    )
    assert second.status_code == 303
    assert draft(client) == ["docker.io", "ghcr.io", "ghcr.io"]
    again = shown_after(
        client,
        client.post(
            "/orgs/acme/registry-access/add",
            data={**add, "repositories": "acme/*", "actions": "pull"},
        ),
    )
    assert again.status_code == 409
    assert "&#39;ghcr.io&#39; for repositories acme/*" in again.text

    page = client.get("/orgs/acme/registry-access").text
    assert '<tr data-address="ghcr.io" data-repositories=""' in page
    assert '<tr data-address="ghcr.io" data-repositories="acme/*"' in page
    assert 'aria-label="Edit ghcr.io (acme/*)"' in page
    assert "edit?address=ghcr.io&amp;repositories=acme%2F%2A" in page
    assert "Add ghcr.io (acme/*) (by alice)" in page  # the banner tells them apart, and who
    version = re.search(r'name="version" value="(\d+)"', page)
    assert version

    # Edit the acme/* entry: the form carries its key; the other ghcr.io entry is untouched.
    form = client.get("/orgs/acme/registry-access/edit?address=ghcr.io&repositories=acme/*")
    assert form.status_code == 200
    assert 'name="original_repositories" value="acme/*"' in form.text
    assert 'value="Ours"' in form.text
    edited = client.post(
        "/orgs/acme/registry-access/edit",
        data={
            "csrf_token": token,
            "version": re.findall(r'name="version" value="(\d+)"', form.text)[0],
            "original_address": "ghcr.io",
            "original_repositories": "acme/*",
            "address": "ghcr.io",
            "nickname": "Acme images",
            "allowed": "true",
            "repositories": "acme/*",
            "actions": ["pull", "push"],
        },
    )
    assert edited.status_code == 303, edited.text
    # By address alone the edit page cannot choose.
    assert client.get("/orgs/acme/registry-access/edit?address=ghcr.io").status_code == 409

    # The Allowed switch of the entry for every repository.
    page = client.get("/orgs/acme/registry-access").text
    switched = client.post(
        "/orgs/acme/registry-access/allowed",
        data={
            "csrf_token": token,
            "version": re.findall(r'name="version" value="(\d+)"', page)[0],
            "address": "ghcr.io",
            "repositories": "",
            "allowed": "false",
        },
    )
    assert switched.status_code == 303, switched.text
    entries = _entries(client)
    assert [(e["nickname"], e["allowed"], e["repositories"]) for e in entries[1:]] == [
        ("", False, []),
        ("Acme images", True, ["acme/*"]),
    ]

    # Remove the acme/* entry; a stale version is still refused first.
    stale = client.post(
        "/orgs/acme/registry-access/remove",
        data={
            "csrf_token": token,
            "version": version.group(1),
            "address": "ghcr.io",
            "repositories": "acme/*",
        },
    )
    assert stale.status_code == 409
    removed = client.post(
        "/orgs/acme/registry-access/remove",
        data={"csrf_token": token, "address": "ghcr.io", "repositories": "acme/*"},
    )
    assert removed.status_code == 303
    assert [(e["address"], e["repositories"]) for e in _entries(client)] == [
        ("docker.io", []),
        ("ghcr.io", []),
    ]


def _entries(client: TestClient) -> list[dict[str, Any]]:
    token = client.cookies.get("regward_session")
    answer = client.get(
        "/api/v1/orgs/acme/registry-access", headers={"Authorization": f"Bearer {token}"}
    )
    entries: list[dict[str, Any]] = answer.json()["registries"]
    return entries


def add_entry_form(client: TestClient, **fields: str) -> Any:
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    sent = client.post("/orgs/acme/registry-access/add", data={"csrf_token": token, **fields})
    return shown_after(client, sent)


def field_error(html: str, field: str) -> str:
    """The error shown beside the Add form's `field`, or "" when there is none."""
    match = re.search(rf'id="add-{field}-error">([^<]*)</small>', html)
    return match.group(1) if match else ""


def test_errors_sit_beside_their_field_without_internal_prefixes(client: TestClient) -> None:
    sign_in(client, "alice")
    scheme = add_entry_form(client, address="http://ghcr.io/", actions="pull")
    assert scheme.status_code == 422
    beside = field_error(scheme.text, "address")
    assert beside.startswith("Registry address &#39;http://ghcr.io/&#39; has a scheme"), beside
    assert "entry." not in scheme.text and "address: " not in scheme.text
    # A path in the address: the hint names the host and the repository as the form wants them.
    path = add_entry_form(client, address="ghcr.io/acme/app", actions="pull")
    hint = field_error(path.text, "address")
    assert "&#39;ghcr.io&#39;" in hint and "&#39;acme/app&#39; under repositories" in hint, hint
    assert "[&#39;" not in path.text  # no list syntax of a policy file
    # The error comes from the service as data: a nickname's error goes beside the nickname.
    nickname = add_entry_form(client, address="ghcr.io", nickname="n" * 300, actions="pull")
    assert nickname.status_code == 422
    assert field_error(nickname.text, "nickname").startswith("&#39;nnnn")
    assert field_error(nickname.text, "address") == ""


def test_errors_quote_only_a_short_prefix_of_a_long_value(client: TestClient) -> None:
    sign_in(client, "alice")
    long = "x" * 290 + ".invalid/"
    answer = add_entry_form(client, address=long, actions="pull")
    assert answer.status_code == 422
    beside = field_error(answer.text, "address")
    assert "x" * 50 in beside and "x" * 100 not in beside, beside
    assert f"({len(long)} characters)" in beside
    nickname = add_entry_form(client, address="ghcr.io", nickname="n" * 4000, actions="pull")
    assert "n" * 100 not in field_error(nickname.text, "nickname")
    assert 'value="' + "n" * 4000 + '"' in nickname.text  # the input is kept whole


def test_image_tester_cites_the_applied_revision_and_the_deciding_entry(
    client: TestClient,
) -> None:
    sign_in(client, "alice")
    answer = add_entry_form(client, address="ghcr.io", repositories="acme/*", actions="pull")
    assert answer.status_code == 303
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    client.post("/orgs/acme/registry-access/toggle", data={"csrf_token": token, "enabled": "true"})
    token = csrf_of(client.get("/orgs/acme/registry-access").text)
    applied = client.post("/orgs/acme/registry-access/apply", data={"csrf_token": token})
    assert applied.status_code == 303
    page = client.get("/orgs/acme/test", params={"image": "ghcr.io/other/app"})
    assert "Applied revision 2 (the draft is the same)" in page.text
    assert "Draft, with pending changes" not in page.text
    assert "(policy revision 2)" in page.text and "policy revision 3" not in page.text
    assert "Decided by the entry <code>ghcr.io (acme/*)</code>" in page.text


def test_blocked_pull_offers_its_repository_not_the_whole_registry(client: TestClient) -> None:
    sign_in(client, "alice")
    token = client.cookies.get("regward_session")
    reason = (
        "Pull of ghcr.io/other/app is restricted by your organization 'acme' "
        "(policy revision 1). Ask an owner of 'acme' to allow this repository."
    )
    reported = client.post(
        "/api/v1/orgs/acme/denials",
        json={
            "agent_id": "m1",
            "reference": "ghcr.io/other/app:1",
            "action": "pull",
            "revision": 1,
            "reason": reason,
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert reported.status_code == 201, reported.text
    page = client.get("/orgs/acme/blocked")
    link = re.search(r'href="([^"]*registry-access\?add=[^"]*)"', page.text)
    assert link, page.text
    assert "repositories=other/app" in link.group(1).replace("%2F", "/")
    assert "Add ghcr.io/other/app to the list" in page.text
    assert page.text.count("revision 1") == 1  # the reason names it; no second copy
    form = client.get(link.group(1).replace("&amp;", "&"))
    assert 'id="add-address" name="address" type="text" value="ghcr.io"' in form.text
    assert ">other/app</textarea>" in form.text
    assert re.search(r'<details class="advanced" open', form.text)


def test_error_pages_keep_the_navigation_and_sign_out(client: TestClient) -> None:
    sign_in(client, "eve")
    answer = client.get("/orgs/acme/members")
    assert answer.status_code == 404
    assert "Sign out" in answer.text and "Signed in as" in answer.text
    assert '<option value="evilcorp"' in answer.text and '<option value="acme"' not in answer.text
    own = client.get("/orgs/evilcorp/registry-access/edit", params={"address": "nowhere.io"})
    assert own.status_code == 404
    assert 'aria-label="Organization evilcorp"' in own.text  # its tabs


def test_head_of_the_home_page_and_a_reloaded_add_are_not_405(client: TestClient) -> None:
    sign_in(client, "alice")
    assert client.head("/").status_code == 303
    reloaded = client.get("/orgs/acme/registry-access/add")
    assert reloaded.status_code == 303
    assert reloaded.headers["location"] == "/orgs/acme/registry-access#add"


def test_save_and_apply_with_nothing_pending_publishes_nothing(client: TestClient) -> None:
    sign_in(client, "alice")
    page = client.get("/orgs/acme/registry-access")
    version = re.search(r'name="version" value="(\d+)"', page.text)
    assert version
    answer = client.post(
        "/orgs/acme/registry-access/apply",
        data={"csrf_token": csrf_of(page.text), "version": version.group(1)},
    )
    assert answer.status_code == 303
    after = client.get("/orgs/acme/registry-access")
    assert "Nothing to apply: the draft is the same as revision 1" in after.text
    assert "All changes are applied" not in after.text  # one green banner, not two
    token = client.cookies.get("regward_session")
    feed = client.get("/api/v1/orgs/acme/policy", headers={"Authorization": f"Bearer {token}"})
    assert feed.json()["policy"]["revision"] == 1


def test_devices_show_the_signing_key_machines_pin(client: TestClient) -> None:
    sign_in(client, "alice")
    key = client.get("/api/v1/signing-key").json()["public_key"]
    page = client.get("/orgs/acme/devices")
    assert f'<code id="signing-key-value">{key}</code>' in page.text


def test_a_stale_edit_says_what_happened_once(client: TestClient) -> None:
    sign_in(client, "alice")
    form = client.get("/orgs/acme/registry-access/edit", params={"address": "docker.io"})
    token = client.cookies.get("regward_session")
    client.put(
        "/api/v1/orgs/acme/registry-access/registries/docker.io",
        json={"entry": {"address": "docker.io", "nickname": "Elsewhere"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    version = re.search(r'name="version" value="(\d+)"', form.text)
    assert version
    answer = client.post(
        "/orgs/acme/registry-access/edit",
        data={
            "csrf_token": csrf_of(form.text),
            "version": version.group(1),
            "original_address": "docker.io",
            "original_repositories": "",
            "address": "docker.io",
            "nickname": "Mine",
            "actions": "pull",
        },
    )
    assert answer.status_code == 409
    assert "someone changed the Registry Access settings since you opened this form." in answer.text
    assert "reload them and make your change again" not in answer.text


def test_token_names_are_unique_and_tokens_show_a_prefix_and_last_use(
    client: TestClient,
) -> None:
    sign_in(client, "alice")

    def create(name: str) -> Any:
        page = client.get("/tokens")
        return client.post(
            "/tokens/create", data={"csrf_token": csrf_of(page.text), "name": name, "scope": "read"}
        )

    first = create("laptop-agent")
    value = TOKEN_SHOWN.search(first.text)
    assert value, first.text
    twice = create("Laptop-Agent ")
    assert twice.status_code == 409
    assert "You already have a token named &#39;Laptop-Agent&#39;" in twice.text
    page = client.get("/tokens")
    assert page.text.count('data-token="laptop-agent"') == 1
    assert f"{value.group(1)[:8]}…" in page.text  # its first characters, not just rwp_
    assert value.group(1)[:12] not in page.text
    row = page.text[page.text.index('data-token="laptop-agent"') :]
    assert '<td data-label="Last used">never</td>' in row[: row.index("</tr>")]
    used = client.get(
        "/api/v1/orgs/acme/policy", headers={"Authorization": f"Bearer {value.group(1)}"}
    )
    assert used.status_code == 200
    row = client.get("/tokens").text
    row = row[row.index('data-token="laptop-agent"') :]
    assert re.search(r'<td data-label="Last used">\d{4}-\d\d-\d\d \d\d:\d\d UTC</td>', row)


def test_sign_in_lands_on_the_organization_used_last_in_any_browser(
    client: TestClient,
) -> None:
    sign_in(client, "alice")
    assert client.get("/orgs/acme/members").status_code == 200
    token = client.cookies.get("regward_session")
    created = client.post(
        "/api/v1/orgs", json={"name": "aaa-new"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert created.status_code == 201  # as `regward server init --org` would
    client.cookies.clear()  # another browser: no cookie remembers anything
    sign_in(client, "alice")
    assert client.get("/").headers["location"] == "/orgs/acme/overview"
    client.get("/orgs/aaa-new/activity")
    client.cookies.clear()
    sign_in(client, "alice")
    assert client.get("/").headers["location"] == "/orgs/aaa-new/overview"


def test_an_owner_resets_a_members_password(client: TestClient) -> None:
    """Add 4: after a confirmation, a one-time password shown once; the member's sign-ins end
    and they choose their own at the next one; an account shared with an organization the
    owner does not own is the administrator's to reset."""
    bob_api = {
        "Authorization": "Bearer "
        + client.post("/api/v1/auth/token", json={"username": "bob", "password": PASSWORD}).json()[
            "token"
        ]
    }
    sign_in(client, "alice")
    token = csrf_of(client.get("/orgs/acme/members").text)
    asked = client.post(
        "/orgs/acme/members/reset-password", data={"csrf_token": token, "username": "bob"}
    )
    assert asked.status_code == 200 and "Reset the password of bob?" in asked.text
    assert client.get("/api/v1/user", headers=bob_api).status_code == 200  # nothing yet
    answer = client.post(
        "/orgs/acme/members/reset-password",
        data={"csrf_token": token, "username": "bob", "confirmed": "yes"},
    )
    assert answer.status_code == 200
    shown = re.search(r'id="reset-password" type="text" readonly value="([^"]+)"', answer.text)
    assert shown and "it is not shown again" in answer.text
    assert client.get("/api/v1/user", headers=bob_api).status_code == 401  # signed out
    assert shown.group(1) not in client.get("/orgs/acme/members").text  # shown once
    signed = client.post("/api/v1/auth/token", json={"username": "bob", "password": shown[1]})
    assert signed.json()["password_change_required"] is True
    activity = client.get("/orgs/acme/activity").text
    assert "Member&#39;s password reset" in activity or "Member's password reset" in activity
    # Yourself: the Account page; an outsider: not found; a shared account: the administrator.
    for username, status, said in (
        ("alice", 409, "change your own password on the Account page"),
        ("eve", 404, "not a member of"),
    ):
        refused = client.post(
            "/orgs/acme/members/reset-password",
            data={"csrf_token": token, "username": username, "confirmed": "yes"},
        )
        assert refused.status_code == status and said in refused.text, refused.text
    eve = client.post("/api/v1/auth/token", json={"username": "eve", "password": PASSWORD})
    eve_api = {"Authorization": f"Bearer {eve.json()['token']}"}
    added = client.post(
        "/api/v1/orgs/evilcorp/members", json={"username": "bob", "role": "member"}, headers=eve_api
    )
    assert added.status_code == 201, added.text
    shared = client.post(
        "/orgs/acme/members/reset-password",
        data={"csrf_token": token, "username": "bob", "confirmed": "yes"},
    )
    assert shared.status_code == 403
    assert "also a member of &#39;evilcorp&#39;" in shared.text
    assert "regward server reset-password bob" in shared.text


def test_owners_remove_devices_not_seen_for_long(client: TestClient) -> None:
    """Add 4: the chosen age, a confirmation that says how many, then the devices are gone,
    their device tokens revoked, and Activity names them; recent machines stay."""
    bob = client.post("/api/v1/auth/token", json={"username": "bob", "password": PASSWORD})
    bob_api = {"Authorization": f"Bearer {bob.json()['token']}"}
    for agent in ("old-1", "old-2", "recent"):
        checked = client.post(
            "/api/v1/orgs/acme/devices/check-in",
            json={"agent_id": agent, "revision": 1},
            headers=bob_api,
        )
        assert checked.status_code == 200, checked.text
    database: Database = client.app.state.server.database  # type: ignore[attr-defined]
    with database.session(write=True) as session:
        for device in session.scalars(select(Device).where(Device.agent_id.like("old-%"))):
            device.last_seen = datetime.now(UTC) - timedelta(days=100)
            _, digest = auth.new_token_value(TokenKind.DEVICE)  # its machine's own token
            session.add(
                Token(
                    user_id=device.user_id,
                    kind=TokenKind.DEVICE,
                    scope=Scope.READ,
                    token_hash=digest,
                    organization_id=device.organization_id,
                    agent_id=device.agent_id,
                )
            )
    sign_in(client, "alice")
    page = client.get("/orgs/acme/devices").text
    assert 'id="stale-days"' in page
    token = csrf_of(page)
    none = client.post("/orgs/acme/devices/remove-stale", data={"csrf_token": token, "days": "180"})
    assert none.status_code == 303
    asked = client.post("/orgs/acme/devices/remove-stale", data={"csrf_token": token, "days": "90"})
    assert "Remove 2 devices not seen for 90 days?" in asked.text
    done = client.post(
        "/orgs/acme/devices/remove-stale",
        data={"csrf_token": token, "days": "90", "confirmed": "yes"},
    )
    assert done.status_code == 303
    assert "Removed 2 devices not seen for 90 days" in client.get("/orgs/acme/devices").text
    with database.session() as session:
        tokens = session.scalars(select(Token).where(Token.kind == TokenKind.DEVICE)).all()
        assert len(tokens) == 2 and all(token.revoked_at is not None for token in tokens)
    alice_api = {"Authorization": f"Bearer {client.cookies.get('regward_session')}"}
    answer = client.get("/api/v1/orgs/acme/devices", headers=alice_api)
    assert answer.status_code == 200, answer.text
    listed = answer.json()["devices"]
    assert [d["agent_id"] for d in listed] == ["recent"]
    event = client.get(
        "/api/v1/orgs/acme/activity?action=device.removed_stale", headers=alice_api
    ).json()["logs"][0]
    assert (event["actor"], event["data"]["count"], sorted(event["data"]["agent_ids"])) == (
        "alice",
        2,
        ["old-1", "old-2"],
    )
    odd = client.post(
        "/orgs/acme/devices/remove-stale",
        data={"csrf_token": token, "days": "1", "confirmed": "yes"},
    )
    assert odd.status_code == 422 and "choose one of 30, 90, 180, 365" in odd.text
    sign_in(client, "bob")
    member = client.post(
        "/orgs/acme/devices/remove-stale",
        data={
            "csrf_token": csrf_of(client.get("/orgs/acme/devices").text),
            "days": "30",
            "confirmed": "yes",
        },
    )
    assert member.status_code == 403


def test_a_signed_in_user_creates_an_organization(client: TestClient) -> None:
    sign_in(client, "bob")
    token = csrf_of(client.get("/account").text)
    made = client.post("/orgs/create", data={"csrf_token": token, "name": "beta"})
    assert (made.status_code, made.headers["location"]) == (303, "/orgs/beta/registry-access")
    page = client.get("/orgs/beta/registry-access").text
    assert "Created beta; you are its owner." in page and "owner of beta" in page
    bearer = {"Authorization": f"Bearer {client.cookies.get('regward_session')}"}
    logs = client.get("/api/v1/orgs/beta/activity", headers=bearer).json()["logs"]
    assert [(e["action"], e["actor"]) for e in logs] == [("organization.created", "bob")]
    policy = client.get("/api/v1/orgs/beta/policy", headers=bearer).json()["policy"]
    assert (policy["revision"], policy["enabled"]) == (1, False)
    for name, status, said in (
        ("acme", 409, "Organization &#39;acme&#39; already exists"),
        ("Not Valid!", 422, "name"),
    ):
        refused = client.post("/orgs/create", data={"csrf_token": token, "name": name})
        assert refused.status_code == status, refused.text
        assert 'id="new-org-error"' in refused.text and said in refused.text
        assert f'value="{name}"' in refused.text  # what was typed stays
