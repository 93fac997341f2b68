"""The API fuzzer (issue 13): schemathesis generates requests from the live server's own OpenAPI
schema and sends them over HTTP with an owner's, a member's and no token.

Checks: no server error (5xx), every status code is one the schema documents for the route, and
every documented response body matches its schema. `make test` runs a few examples per route
and caller (about half a minute); `make fuzz` sets REGWARD_FUZZ_EXAMPLES higher.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from regward.server.app import create_app
from regward.server.db import Database
from regward.server.models import MAX_REVISION
from regward.server.services import auth
from regward.server.settings import Settings
from tests.server.accounts import PASSWORD, make_users
from tests.server.live import ThreadServer

EXAMPLES = int(os.environ.get("REGWARD_FUZZ_EXAMPLES", "5"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
CALLERS = {"owner": "alice", "member": "bob", "anonymous": None}
# Requests that end the credential they are sent with get a fresh one, so the rest of the run
# keeps its caller.
SELF_ENDING = {("DELETE", "/api/v1/auth/token"), ("DELETE", "/api/v1/tokens/{token_id}")}


@dataclass
class Live:
    url: str
    database: Database

    def token(self, username: str) -> str:
        """A new sign-in token (from the service: the fuzzer's own failed sign-ins as alice
        and bob make the API's sign-in wait)."""
        with self.database.session(write=True) as session:
            return auth.sign_in(session, username, PASSWORD, 3600)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    settings_ = Settings(
        data_dir=directory / "data",
        database_url=f"sqlite:///{directory}/regward.db",
        max_wait=1,  # long-polls the fuzzer opens answer 304 soon
    )
    database = Database(settings_.database_url)
    database.upgrade()
    make_users(database, settings_)
    with ThreadServer(create_app(settings_, database=database)) as server:
        yield Live(server.url, database)
    database.dispose()


@pytest.fixture(scope="module")
def tokens(live: Live) -> dict[str, str]:
    return {who: live.token(name) for who, name in CALLERS.items() if name}


@pytest.fixture(scope="module")
def api_schema(live: Live) -> Any:
    return schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")


def test_api(live: Live, tokens: dict[str, str]) -> None:
    """Every operation of the schema, each generated request sent as each caller."""
    api = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")
    statuses: Counter[int] = Counter()

    def send(case: Any) -> None:
        if "org" in (case.path_parameters or {}):
            case.path_parameters["org"] = "acme"  # where the callers have their roles
        for who, name in CALLERS.items():
            headers: dict[str, str] = {}
            if name is not None:
                own = (case.method.upper(), case.path) in SELF_ENDING
                headers["Authorization"] = f"Bearer {live.token(name) if own else tokens[who]}"
            response = case.call_and_validate(base_url=live.url, headers=headers, checks=CHECKS)
            statuses[response.status_code] += 1

    operations = []
    for result in api.get_all_operations():
        if isinstance(result, Err):
            raise result.err()  # the server's own schema must be valid
        operations.append(result.ok())
    spent: dict[str, float] = {}
    for operation in operations:
        started = time.perf_counter()
        fuzz = settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(given(case=operation.as_strategy())(send))
        fuzz()
        spent[operation.label] = time.perf_counter() - started
    slowest = sorted(spent.items(), key=lambda item: -item[1])[:5]
    print("slowest operations:", ", ".join(f"{label} {s:.1f} s" for label, s in slowest))
    print(f"fuzzed {len(operations)} operations, {sum(statuses.values())} requests: {statuses}")
    assert len(operations) >= 20 and statuses[200] and statuses[422] and statuses[401]


def _parameters(api_schema: Any) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(method, path, parameter) for every parameter the served schema declares."""
    for path, methods in api_schema.raw_schema["paths"].items():
        for method, operation in methods.items():
            for parameter in operation.get("parameters", []):
                yield method.upper(), path, parameter


def _alternatives(parameter: dict[str, Any]) -> list[dict[str, Any]]:
    schema = parameter["schema"]
    return list(schema.get("anyOf", [schema]))


def _url(live: Live, path: str, **values: str) -> str:
    for name in re.findall(r"{(\w+)}", path):
        path = path.replace(f"{{{name}}}", values.get(name, "acme" if name == "org" else "1"))
    return live.url + path


def _refused_as_documented(answer: httpx.Response) -> None:
    assert 400 <= answer.status_code < 500, (answer.status_code, answer.text[:200])
    if answer.request.method == "HEAD":
        return  # the same answer as GET's, without the body
    assert answer.headers["content-type"].startswith("application/json"), answer.text[:200]
    assert answer.json()["detail"], answer.text[:200]


def test_ids_past_the_database_integers_are_refused(live: Live, tokens: dict[str, str]) -> None:
    """Every integer in a path declares the largest value the database holds, and a larger
    one (or a digit that is not ASCII) is a 4xx JSON error, never a 500."""
    owner = {"Authorization": f"Bearer {tokens['owner']}"}
    api = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")
    checked = 0
    for method, path, parameter in _parameters(api):
        if parameter["in"] != "path" or parameter["schema"].get("type") != "integer":
            continue
        assert parameter["schema"].get("maximum", 2**63) <= MAX_REVISION, (method, path)
        for value in (str(2**31), "9" * 30, "²"):
            url = _url(live, path, **{parameter["name"]: value})
            _refused_as_documented(httpx.request(method, url, headers=owner, timeout=30))
            checked += 1
    assert checked >= 9  # tokens and webhooks


def test_text_parameters_past_their_length_get_a_json_422(
    live: Live, tokens: dict[str, str]
) -> None:
    """A query or path value one past its declared maxLength reaches the app (the schema's
    limits fit the request line the server reads) and is refused with the documented shape."""
    owner = {"Authorization": f"Bearer {tokens['owner']}"}
    api = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")
    checked = 0
    for method, path, parameter in _parameters(api):
        limits = [alt["maxLength"] for alt in _alternatives(parameter) if "maxLength" in alt]
        if parameter["in"] not in ("path", "query") or not limits:
            continue
        value = "a" * (max(limits) + 1)
        if parameter["in"] == "path":
            url, params = _url(live, path, **{parameter["name"]: value}), {}
        else:
            url, params = _url(live, path), {parameter["name"]: value}
        answer = httpx.request(method, url, params=params, headers=owner, timeout=30)
        _refused_as_documented(answer)
        checked += 1
    assert checked >= 10


def test_empty_form_fields_are_declared_and_named(live: Live) -> None:
    """The sign-in forms' fields declare minLength 1 (an empty form field is no value to
    FastAPI), and an empty one is a 422 that names it."""
    api = schemathesis.openapi.from_url(f"{live.url}/api/v1/openapi.json")
    forms = 0
    for path, methods in api.raw_schema["paths"].items():
        for method, operation in methods.items():
            content = operation.get("requestBody", {}).get("content", {})
            form = content.get("application/x-www-form-urlencoded")
            if form is None:
                continue
            reference = form["schema"]["$ref"].rsplit("/", 1)[-1]
            body = api.raw_schema["components"]["schemas"][reference]
            for name in body["required"]:
                field = body["properties"][name]
                empty_matches = re.search(field.get("pattern", ""), "") is not None
                assert field.get("minLength", 0) >= 1 or not empty_matches, (path, name)
                data = {other: "x" for other in body["required"] if other != name}
                answer = httpx.request(method, live.url + path, data={**data, name: ""})
                assert answer.status_code == 422, answer.text
                assert f"{name}: required, and missing or empty" in answer.json()["detail"]
            forms += 1
    assert forms == 2  # the device sign-in's start and token
