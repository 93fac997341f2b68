"""A real OpenID provider on loopback for single sign-on tests, and a relay in front of it.

`OidcProvider` runs `python -m oidc_provider_mock` (PyPI's oidc-provider-mock: discovery,
keys, the authorization code flow, RS256-signed ID tokens) as a child process on a free port,
stopped by its PID. It accepts any client id and secret; a person "signs in" on its
authorization form by typing a subject. `set_user` gives a subject its claims (email, groups).

`Relay` passes every request through to the provider with the Host header kept, so the
provider names the relay as its issuer, and can spoil the answers for the refusal tests:

    TAMPER     one character of the ID token's signature changed
    AUDIENCE   the client id rewritten on the way to the provider, so the (validly signed)
               ID token is for another client
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.harness.server import free_port
from tests.harness.wait import wait_for

PASS, TAMPER, AUDIENCE = "pass", "tamper", "audience"
OTHER_CLIENT = "another-app"


class OidcProvider:
    def __init__(self, log: Path, *, token_max_age: int = 3600) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.token_max_age = token_max_age
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OidcProvider:
        env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
        command = [sys.executable, "-m", "oidc_provider_mock", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), f"--token-max-age={self.token_max_age}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._up, 90, f"the OpenID provider on port {self.port} (log {self.log})")
        return self

    def _up(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"the OpenID provider exited: {self.log.read_text()[-2000:]}")
        try:
            url = f"{self.issuer}/.well-known/openid-configuration"
            return httpx.get(url, timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def set_user(self, sub: str, claims: dict[str, Any]) -> None:
        answer = httpx.put(f"{self.issuer}/users/{sub}", json=claims, trust_env=False)
        assert answer.status_code == 204, answer.text

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Relay:
    """An HTTP relay on loopback in front of `upstream`; `mode` says what it spoils."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = PASS
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                relay._forward(self)

            def do_POST(self) -> None:
                relay._forward(self)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="oidc-relay", daemon=True
        )

    def __enter__(self) -> Relay:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _forward(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length) if length else b""
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in {"content-length", "connection", "accept-encoding"}
        }
        if self.mode == AUDIENCE:
            path, body, headers = _other_client(path, body, headers)
        answer = httpx.request(
            request.command,
            self.upstream + path,
            content=body,
            headers=headers,
            follow_redirects=False,
            trust_env=False,
            timeout=10,
        )
        content = answer.content
        if self.mode == TAMPER and path.startswith("/oauth2/token") and answer.status_code == 200:
            content = _tampered(content)
        request.send_response(answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in {
                "content-length",
                "transfer-encoding",
                "connection",
                "content-encoding",
            }:
                request.send_header(key, value)
        request.send_header("Content-Length", str(len(content)))
        request.end_headers()
        request.wfile.write(content)


def _other_client(
    path: str, body: bytes, headers: dict[str, str]
) -> tuple[str, bytes, dict[str, str]]:
    """The same request from the client OTHER_CLIENT: in the query, the form and Basic auth."""
    parts = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "client_id" for key, _ in query):
        query = [(k, OTHER_CLIENT if k == "client_id" else v) for k, v in query]
        path = urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
    if parts.path.startswith("/oauth2/token"):
        form = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
        form = [(k, OTHER_CLIENT if k == "client_id" else v) for k, v in form]
        body = urllib.parse.urlencode(form).encode()
        for key in list(headers):
            if key.lower() == "authorization":
                _, _, secret = base64.b64decode(headers[key].split()[1]).decode().partition(":")
                credentials = base64.b64encode(f"{OTHER_CLIENT}:{secret}".encode()).decode()
                headers[key] = f"Basic {credentials}"
    return path, body, headers


def _tampered(content: bytes) -> bytes:
    tokens = json.loads(content)
    header, payload, signature = tokens["id_token"].split(".")
    middle = len(signature) // 2
    flipped = "A" if signature[middle] != "A" else "B"
    tokens["id_token"] = ".".join(
        (header, payload, signature[:middle] + flipped + signature[middle + 1 :])
    )
    return json.dumps(tokens).encode()
