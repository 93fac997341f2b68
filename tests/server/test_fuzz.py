"""The API fuzzer (issue 13): schemathesis generates requests from the live server's own OpenAPI
schema and sends them over HTTP with an owner's, a member's and no token.

Checks: no server error (5xx), every status code is one the schema documents for the route, and
every documented response body matches its schema. `make test` runs a few examples per route
and caller (about half a minute); `make fuzz` sets REGWARD_FUZZ_EXAMPLES higher.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
