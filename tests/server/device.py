"""Device sign-in from the machine's side, over the API, for server tests: ask for a code,
have a person decide it (the service the dashboard's page calls), poll for the token."""

from __future__ import annotations

from typing import Any

from regward.server.services import auth, device_auth
from tests.server.conftest import World

GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def ask(world: World, machine: str = "build-7", agent_id: str = "agent-7") -> dict[str, Any]:
    answer = world.client.post(
        "/api/v1/auth/device",
        data={"organization": "acme", "machine": machine, "agent_id": agent_id},
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def poll(world: World, device_code: str) -> tuple[int, dict[str, Any]]:
    answer = world.client.post(
        "/api/v1/auth/device/token", data={"grant_type": GRANT, "device_code": device_code}
    )
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def decide(world: World, who: str, user_code: str, *, approve: bool = True) -> None:
    with world.database.session(write=True) as session:
        caller = auth.resolve_token(session, world.tokens[who])
        device_auth.decide(session, caller, user_code, approve=approve)


def signed_in_machine(
    world: World, who: str = "bob", machine: str = "build-7", agent_id: str = "agent-7"
) -> str:
    """A device token for `machine`, approved by `who`."""
    grant = ask(world, machine, agent_id)
    decide(world, who, grant["user_code"])
    status, body = poll(world, grant["device_code"])
    assert status == 200, body
    return str(body["access_token"])
