"""`regward login` without a token: the device sign-in of RFC 8628, from the machine's side.

The machine asks the server for a code (`POST /api/v1/auth/device`), prints where a person
approves it, and polls (`POST /api/v1/auth/device/token`) at the interval the server asked for,
5 seconds longer after each `slow_down`, until the person approves (a token of the machine's
own), denies, or the code expires.
"""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import httpx

from regward.errors import ConfigError

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
SLOW_DOWN_STEP = 5


def client_for(token: str | None = None) -> httpx.Client:
    """A client for the Regward server, as `sync.server_client`: no proxy from the environment
    (HTTPS_PROXY may be the agent's own egress proxy), certificates from the system's store."""
    headers = {"User-Agent": "regward-agent"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(
        headers=headers, timeout=15, trust_env=False, verify=ssl.create_default_context()
    )


def device_sign_in(
    server: str,
    organization: str,
    machine: str,
    agent_id: str,
    *,
    out: TextIO = sys.stdout,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The machine's own token once a person approves; ConfigError when denied or expired."""
    try:
        with client_for() as client:
            answer = client.post(
                f"{server}/api/v1/auth/device",
                data={"organization": organization, "machine": machine, "agent_id": agent_id},
            )
            if answer.status_code != 200:
                raise ConfigError(
                    f"the server refused to start a sign-in ({answer.status_code}): "
                    f"{_detail(answer)}"
                )
            grant = answer.json()
            minutes = max(1, int(grant["expires_in"]) // 60)
            print(
                f"To sign this machine in to '{organization}', open\n\n"
                f"    {grant['verification_uri']}\n\n"
                f"and enter the code  {grant['user_code']}\n\n"
                f"or open {grant['verification_uri_complete']}\n"
                f"Waiting for approval (the code expires in {minutes} minutes)...",
                file=out,
                flush=True,
            )
            return _poll(client, server, str(grant["device_code"]), int(grant["interval"]), sleep)
    except httpx.HTTPError as error:
        raise ConfigError(f"cannot reach {server}: {error}") from error
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{server} answered the sign-in oddly: {error}") from error


def _poll(
    client: httpx.Client,
    server: str,
    device_code: str,
    interval: int,
    sleep: Callable[[float], None],
) -> str:
    while True:
        sleep(interval)
        answer = client.post(
            f"{server}/api/v1/auth/device/token",
            data={"grant_type": GRANT_TYPE, "device_code": device_code},
        )
        body: dict[str, Any] = answer.json() if _is_json(answer) else {}
        if answer.status_code == 200:
            return str(body["access_token"])
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += SLOW_DOWN_STEP
            continue
        if error == "access_denied":
            raise ConfigError("the sign-in was denied in the dashboard; nothing was saved")
        if error == "expired_token":
            raise ConfigError("the code expired before anyone approved it; run `regward login`")
        raise ConfigError(
            f"the server refused the sign-in ({answer.status_code}): {_detail(answer)}"
        )


def _is_json(answer: httpx.Response) -> bool:
    return str(answer.headers.get("content-type", "")).startswith("application/json")


def _detail(answer: httpx.Response) -> str:
    if _is_json(answer):
        body = answer.json()
        if isinstance(body, dict):
            return str(body.get("error_description") or body.get("detail") or body)
    return answer.text[:200]
