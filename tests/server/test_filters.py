"""The lists' query parameters (Devices, Blocked pulls): whatever is typed or sent, a filter
or a clear InvalidInput naming the field, and pages answer 200 or 422, never 500."""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regward.server.app import create_app
from regward.server.dashboard import forms
from regward.server.db import Database
from regward.server.errors import InvalidInput
from regward.server.models import MAX_REVISION
from regward.server.services import names
from regward.server.services.denials import DenialFilter
from regward.server.services.devices import STATES, DeviceFilter
from regward.server.settings import Settings
from tests.server.accounts import make_users

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

# Text as it arrives in a query string: anything but NUL (the server refuses %00 before routes).
typed = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=80
)
numbers = st.integers(min_value=-(10**12), max_value=10**12).map(str)
maybe = st.one_of(
    typed, numbers, st.sampled_from(["", " 7 ", "current", "stale", "pull", "2026-12-01T10:00"])
)


@given(state=maybe, revision=maybe, user=maybe, seen=maybe, search=maybe)
def test_device_filter_parses_or_names_the_field(
    state: str, revision: str, user: str, seen: str, search: str
) -> None:
    try:
        where = DeviceFilter.parse(
            state=state, revision=revision, user=user, seen=seen, search=search
        )
    except InvalidInput as invalid:
        assert invalid.field in {"state", "revision", "user", "seen", "search"}
        assert invalid.status == 422
        return
    assert where.state in ("", *STATES)
    assert where.seen in ("", "recent", "stale")
    assert where.revision is None or 0 <= where.revision <= MAX_REVISION
    assert where.user == user.strip() and where.search == search.strip()


@given(st.integers(min_value=0, max_value=MAX_REVISION), st.sampled_from(["", " ", "\t"]))
def test_a_revision_is_read_with_blanks_around_it(number: int, blank: str) -> None:
    assert DeviceFilter.parse(revision=f"{blank}{number}{blank}").revision == number
    assert DenialFilter.parse(revision=str(number)).revision == number


@given(
    registry=maybe, user=maybe, device=maybe, action=maybe, revision=maybe, since=maybe, until=maybe
)
def test_denial_filter_parses_or_names_the_field(
    registry: str, user: str, device: str, action: str, revision: str, since: str, until: str
) -> None:
    try:
        where = DenialFilter.parse(
            registry=registry,
            user=user,
            device=device,
            action=action,
            revision=revision,
            since=since,
            until=until,
            naive_is_utc=True,
        )
    except InvalidInput as invalid:
        field = invalid.field or invalid.message.split(":", 1)[0]
        assert field in {"registry", "user", "device", "action", "revision", "from", "to"}
        return
    assert where.action in ("", "pull", "push")
    assert where.registry == registry.strip().lower()
    for moment in (where.since, where.until):
        assert moment is None or moment.utcoffset() is not None


def test_a_time_without_zone_is_refused_from_scripts_and_utc_on_the_page() -> None:
    with pytest.raises(InvalidInput, match="needs a time zone"):
        DenialFilter.parse(since="2026-12-01T10:00")
    assert DenialFilter.parse(since="2026-12-01T10:00", naive_is_utc=True).since is not None
    with pytest.raises(InvalidInput, match="'yesterday' is not a date and time"):
        DenialFilter.parse(until="yesterday", naive_is_utc=True)


@given(typed)
def test_a_page_number_is_a_page_whatever_is_typed(text: str) -> None:
    number = forms.page_number(text)
    assert 1 <= number <= names.MAX_PAGE
    if text.isascii() and text.isdigit() and 0 < int(text) <= names.MAX_PAGE:
        assert number == int(text)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[TestClient]:
    directory = tmp_path_factory.mktemp("filters")
    shutil.copy(sqlite_template, directory / "regward.db")
    settings_ = Settings(data_dir=directory, database_url=f"sqlite:///{directory / 'regward.db'}")
    database = Database(settings_.database_url)
    make_users(database, settings_)
    app = create_app(settings_, database=database)
    with TestClient(app, follow_redirects=False) as test_client:
        answer = test_client.post(
            "/api/v1/auth/token", json={"username": "bob", "password": "correct horse battery"}
        )
        test_client.cookies.set("regward_session", answer.json()["token"])
        yield test_client
    database.dispose()


PARAMETERS = {
    "devices": ("state", "revision", "user", "seen", "search", "page"),
    "blocked": ("registry", "user", "device", "action", "revision", "from", "to", "page"),
}


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), tab=st.sampled_from(sorted(PARAMETERS)))
def test_list_pages_answer_200_or_422_never_500(
    client: TestClient, data: st.DataObject, tab: str
) -> None:
    query = data.draw(st.dictionaries(st.sampled_from(PARAMETERS[tab]), maybe, max_size=4))
    answer = client.get(f"/orgs/acme/{tab}", params=query)
    assert answer.status_code in (200, 422), (query, answer.status_code)
    if answer.status_code == 422:
        assert 'role="alert"' in answer.text


@pytest.mark.parametrize("tab", ["activity", "devices", "blocked"])
def test_a_page_number_in_other_digits_is_the_first_page(client: TestClient, tab: str) -> None:
    """`²` and `٣` pass str.isdigit but not int(): this was a 500 on Activity and Blocked pulls."""
    for page in ("²", "٣", "1" * 40):
        assert client.get(f"/orgs/acme/{tab}", params={"page": page}).status_code == 200


@given(st.text(max_size=24))
def test_a_whole_number_is_ascii_digits_within_the_databases_integers(text: str) -> None:
    number = forms.whole_number(text)
    if number is None:
        assert not (text.isascii() and text.isdigit()) or int(text) > forms.MAX_WHOLE
    else:
        assert 0 <= number <= forms.MAX_WHOLE and str(number) == text.lstrip("0").rjust(1, "0")


def test_an_id_past_the_databases_integers_is_no_number() -> None:
    assert forms.whole_number(str(2**31 - 1)) == 2**31 - 1
    assert forms.whole_number(str(2**31)) is None
    assert forms.whole_number("999999999999999999") is None
