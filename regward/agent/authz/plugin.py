"""The plugin: the answer to one AuthZReq, and its HTTP/1.1 server on a unix socket.

    decision, message = authorize(guard, envelope_bytes)   # None: allowed
    plugin = AuthZPlugin(guard, Path("/run/docker/plugins/regward.sock")); await plugin.start()

Every check a request yields goes to the one `Guard`; the first refusal answers. A bug refuses
the request, never crashes the plugin or lets a pull through. Bodies are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from regward.agent.authz.checks import ImageCheck, registry_checks
from regward.agent.authz.framing import (
    MAX_HEADER_BYTES,
    MAX_REQUEST_BYTES,
    BadRequest,
    parse_chunked,
    parse_head,
    response,
)
from regward.agent.authz.request import AuthZRequest, Unreadable
from regward.agent.guard import Guard
from regward.policy import Decision

log = logging.getLogger("regward.agent.authz")


def authorize(guard: Guard, data: bytes) -> tuple[Decision | None, str]:
    """Answer one AuthZReq body: (the refusing decision or None, the message for dockerd)."""
    try:
        request = AuthZRequest.parse(data)
        for check in registry_checks(request):  # lazily: the first refusal ends the work
            if isinstance(check, ImageCheck):
                decision = guard.decide(check.action, check.reference, source="authz")
            else:
                decision = guard.decide_host(check.host, check.port, source="authz")
            if not decision.allowed:
                log.info("refused %s %s: %s", request.method, request.path, decision.reason)
                return decision, guard.message(decision)
    except Unreadable as error:
        decision = guard.unreadable(str(error))
        if decision.allowed:  # nothing is restricted here
            return None, ""
        return decision, guard.message(decision)
    return None, ""


@dataclass
class PluginStats:
    requests: int = 0
    refused: int = 0
    errors: int = 0


class AuthZPlugin:
    """The plugin's HTTP/1.1 server on a unix socket: small, keep-alive, no framework.

    An asyncio Protocol rather than streams: a request that arrives whole (nearly all of them)
    is parsed, decided and answered inside one `data_received` call, with no task switch.
    """

    def __init__(self, guard: Guard, socket_path: Path) -> None:
        self.guard = guard
        self.socket_path = socket_path
        self.stats = PluginStats()
        self._server: asyncio.base_events.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(
            lambda: _PluginConnection(self), path=str(self.socket_path), backlog=1024
        )
        self.socket_path.chmod(0o600)

    async def close(self) -> None:
        """Stop listening, end keep-alive connections, and remove the socket."""
        if self._server is not None:
            self._server.close()
            for transport in list(self._transports):
                transport.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def handle(self, target: str, body: bytes) -> tuple[int, bytes]:
        """One plugin call: (HTTP status, JSON reply)."""
        path = target.split("?", 1)[0]
        if path == "/AuthZPlugin.AuthZReq":
            self.stats.requests += 1
            try:
                decision, message = authorize(self.guard, body)
            except Exception:  # a bug must refuse, never crash the plugin or let a pull through
                log.exception("AuthZ check failed; refusing the request")
                self.stats.errors += 1
                return 200, _REFUSE_ON_ERROR
            if decision is None:
                return 200, _ALLOW
            self.stats.refused += 1
            return 200, json.dumps({"Allow": False, "Msg": message}).encode()
        if path == "/AuthZPlugin.AuthZRes":
            return 200, _ALLOW
        if path == "/Plugin.Activate":
            return 200, _ACTIVATE
        return 404, json.dumps({"Err": f"unknown plugin method {path[:100]}"}).encode()


class _PluginConnection(asyncio.Protocol):
    """One keep-alive connection: buffer bytes, answer each complete request in order."""

    def __init__(self, plugin: AuthZPlugin) -> None:
        self.plugin = plugin
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.head: tuple[str, int, bool, bool] | None = None  # the parsed head awaiting its body
        self.head_end = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's transport
        self.plugin._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.plugin._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            while self.transport is not None and not self.transport.is_closing():
                if not self._one_request():
                    return
        except (BadRequest, ValueError):
            self._finish(400, b'{"Err":"bad request"}')

    def _one_request(self) -> bool:
        """Answer the request at the front of the buffer; False when it is not complete yet."""
        transport = self.transport
        if transport is None:
            return False
        if self.head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    raise BadRequest("request head too large")
                return False
            self.head = parse_head(bytes(self.buffer[: end + 4]))
            self.head_end = end + 4
        target, length, chunked, keep_alive = self.head
        if chunked:
            parsed = parse_chunked(self.buffer, self.head_end)
            if parsed is None:
                return False
            body, consumed = parsed
        else:
            if length > MAX_REQUEST_BYTES:
                self._finish(200, _REFUSE_TOO_LARGE)
                return False
            consumed = self.head_end + length
            if len(self.buffer) < consumed:
                return False
            body = bytes(self.buffer[self.head_end : consumed])
        del self.buffer[:consumed]
        self.head = None
        status, reply = self.plugin.handle(target, body)
        transport.write(response(status, reply, keep_alive))
        if not keep_alive:
            transport.close()
            return False
        return True

    def _finish(self, status: int, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response(status, body, False))
            self.transport.close()


_ALLOW = b'{"Allow":true}'
_ACTIVATE = b'{"Implements":["authz"]}'
_REFUSE_ON_ERROR = json.dumps(
    {"Allow": False, "Msg": "Regward could not check this request, so it is refused."}
).encode()
_REFUSE_TOO_LARGE = json.dumps(
    {"Allow": False, "Msg": "Regward refused a request too large to check."}
).encode()
