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
import re
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from regward.agent import http1
from regward.agent.authz.checks import (
    HostCheck,
    ImageCheck,
    LocalImageCheck,
    local_images,
    registry_checks,
)
from regward.agent.authz.framing import MAX_HEADER_BYTES, MAX_REQUEST_BYTES, response
from regward.agent.authz.images import ImageOrigin, ImageOrigins
from regward.agent.authz.request import AuthZRequest, Unreadable
from regward.agent.guard import Guard
from regward.policy import Action, Decision

log = logging.getLogger("regward.agent.authz")

_IMAGE_ID = re.compile(r"^(?:sha256:)?[a-f0-9]{64}$")


Reply = tuple[int, bytes]  # HTTP status, JSON body
Verdict = tuple[Decision | None, str]  # (the refusing decision or None, the message for dockerd)
Origins = Mapping[LocalImageCheck, ImageOrigin | None]  # what the engine said of each image used


def authorize(guard: Guard, data: bytes, origins: Origins | None = None) -> Verdict:
    """Answer one AuthZReq body; `origins` says where images already on the machine came from
    (an image missing from it is decided by its name, as a pull)."""
    try:
        request = AuthZRequest.parse(data)
    except Unreadable as error:
        return _unreadable(guard, error)
    return authorize_request(guard, request, origins or {})


def authorize_request(guard: Guard, request: AuthZRequest, origins: Origins) -> Verdict:
    """Answer one parsed request: its checks one at a time, the first refusal answering."""
    try:
        for check in registry_checks(request):
            if isinstance(check, ImageCheck):
                decision = guard.decide(check.action, check.reference, source="authz")
            elif isinstance(check, HostCheck):
                decision = guard.decide_host(check.host, check.port, source="authz")
            elif check.container:
                decision = _decide_container(guard, check.reference, origins.get(check))
            else:
                decision = _decide_local(guard, check.reference, origins.get(check))
            if not decision.allowed:
                log.info("refused %s %s: %s", request.method, request.path, decision.reason)
                return decision, guard.message(decision)
    except Unreadable as error:
        return _unreadable(guard, error)
    return None, ""


def _decide_local(guard: Guard, image: str, origin: ImageOrigin | None) -> Decision:
    """An image dockerd would take from the machine: one built or loaded here passes; one that
    registries gave is checked as a pull from each of them (all must still be allowed)."""
    if origin is not None and origin.found:
        if not origin.repo_digests:
            return guard.decide_local(image)
        decision = guard.decide(Action.PULL, origin.repo_digests[0], source="authz")
        for digest in origin.repo_digests[1:]:
            if not decision.allowed:
                break
            decision = guard.decide(Action.PULL, digest, source="authz")
        return decision
    if origin is None and _IMAGE_ID.match(image):
        raise Unreadable(f"the Docker Engine did not say where the image {image} came from")
    # Not on the machine: dockerd will answer "No such image" and the client pulls (a request
    # checked on its own); or the engine did not answer: the name is read as a pull.
    return guard.decide(Action.PULL, image, source="authz")


def _decide_container(guard: Guard, container: str, origin: ImageOrigin | None) -> Decision:
    """Start a container: the image it holds, decided as `_decide_local` decides an image on
    the machine. No such container: dockerd says so, nothing runs. The engine silent: refused."""
    if origin is None:
        raise Unreadable(f"the Docker Engine did not say which image container {container} runs")
    if not origin.found:
        return guard.decide_local(container)
    return _decide_local(guard, container, origin)


def _unreadable(guard: Guard, error: Unreadable) -> Verdict:
    decision = guard.unreadable(str(error))
    if decision.allowed:  # nothing is restricted here
        return None, ""
    return decision, guard.message(decision)


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

    def __init__(self, guard: Guard, socket_path: Path, images: ImageOrigins | None = None) -> None:
        self.guard = guard
        self.socket_path = socket_path
        self.images = images  # the engine's image inspect; None: images decided by name
        self.stats = PluginStats()
        self._server: asyncio.base_events.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._background: set[asyncio.Future[None]] = set()

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
        if self.images is not None:
            await self.images.close()

    def handle(self, target: str, body: bytes) -> Reply | Awaitable[Reply]:
        """One plugin call: (HTTP status, JSON reply), or an awaitable of it when the engine
        must first say where the images a request uses came from (`docker run`)."""
        path = target.split("?", 1)[0]
        if path == "/AuthZPlugin.AuthZReq":
            self.stats.requests += 1
            try:
                request = AuthZRequest.parse(body)
                images = local_images(request) if self.images is not None else []
            except Unreadable as error:
                return self._reply(_unreadable(self.guard, error))
            except Exception:  # a bug must refuse, never crash the plugin or let a pull through
                return self._failed()
            if images and self.images is not None:
                return self._answer_after_asking(request, images, self.images)
            return self._answer(request, {})
        if path == "/AuthZPlugin.AuthZRes":
            return 200, _ALLOW
        if path == "/Plugin.Activate":
            return 200, _ACTIVATE
        return 404, json.dumps({"Err": f"unknown plugin method {path[:100]}"}).encode()

    async def _answer_after_asking(
        self, request: AuthZRequest, images: list[LocalImageCheck], engine: ImageOrigins
    ) -> Reply:
        origins = {
            check: await (
                engine.of_container(check.reference)
                if check.container
                else engine.look_up(check.reference)
            )
            for check in images
        }
        reply = self._answer(request, origins)
        if reply[1] != _ALLOW:
            for origin in origins.values():
                if origin is not None and origin.auto_remove:
                    self._spawn(engine.remove(origin.auto_remove))
        return reply

    def _spawn(self, work: Awaitable[None]) -> None:
        """Run `work` after the answer is written (dockerd handles the request it answers
        first), keeping a reference until it ends."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _answer(self, request: AuthZRequest, origins: Origins) -> Reply:
        try:
            verdict = authorize_request(self.guard, request, origins)
        except Exception:  # a bug must refuse, never crash the plugin or let a pull through
            return self._failed()
        return self._reply(verdict)

    def _reply(self, verdict: Verdict) -> Reply:
        decision, message = verdict
        if decision is None:
            return 200, _ALLOW
        self.stats.refused += 1
        return 200, json.dumps({"Allow": False, "Msg": message}).encode()

    def _failed(self) -> Reply:
        log.exception("AuthZ check failed; refusing the request")
        self.stats.errors += 1
        return 200, _REFUSE_ON_ERROR


class _PluginConnection(asyncio.Protocol):
    """One keep-alive connection: buffer bytes, answer each complete request in order.

    Requests are framed by the agent's one strict HTTP/1.1 reader (`regward.agent.http1`), as
    the egress proxy's are: framing two readers could read differently is a 400, never a guess.
    """

    def __init__(self, plugin: AuthZPlugin) -> None:
        self.plugin = plugin
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.head: http1.Head | None = None  # the parsed head awaiting its body
        self.body: http1.Body | None = None
        self.pending: asyncio.Task[Reply] | None = None  # an answer awaiting the engine

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream server's transport
        self.plugin._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.plugin._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.pending is not None:
            return  # answered in order: the next request waits for the one before it
        try:
            while self.transport is not None and not self.transport.is_closing():
                if not self._one_request():
                    return
        except http1.ProtocolError as error:
            self._finish(error.status, json.dumps({"Err": error.message}).encode())

    def _one_request(self) -> bool:
        """Answer the request at the front of the buffer; False when it is not complete yet."""
        if self.head is None or self.body is None:
            end = http1.head_end(self.buffer, MAX_HEADER_BYTES)
            if end < 0:
                return False
            self.head = http1.parse_head(self.buffer[:end])
            del self.buffer[:end]
            self.body = http1.Body.of(self.head, keep=MAX_REQUEST_BYTES)
            if self.body.length is not None and self.body.length > MAX_REQUEST_BYTES:
                self._finish(200, _REFUSE_TOO_LARGE)
                return False
        used = self.body.feed(self.buffer)
        del self.buffer[:used]
        if not self.body.done:
            return False
        head, body = self.head, bytes(self.body.content)
        self.head = self.body = None
        answer = self.plugin.handle(head.target, body)
        if not isinstance(answer, tuple):
            self.pending = asyncio.ensure_future(answer)
            self.pending.set_name("regward-authz-answer")
            self.pending.add_done_callback(lambda task: self._answered(task, head.keep_alive))
            return False
        return self._write(answer, head.keep_alive)

    def _write(self, answer: Reply, keep_alive: bool) -> bool:
        """Send one answer; False when the connection ends with it."""
        if self.transport is None or self.transport.is_closing():
            return False
        status, reply = answer
        self.transport.write(response(status, reply, keep_alive))
        if not keep_alive:
            self.transport.close()
            return False
        return True

    def _answered(self, task: asyncio.Task[Reply], keep_alive: bool) -> None:
        self.pending = None
        if task.cancelled():
            answer: Reply = (200, _REFUSE_ON_ERROR)
        elif task.exception() is not None:
            log.error("AuthZ check failed; refusing the request", exc_info=task.exception())
            self.plugin.stats.errors += 1
            answer = (200, _REFUSE_ON_ERROR)
        else:
            answer = task.result()
        if self._write(answer, keep_alive):
            self.data_received(b"")  # requests that arrived meanwhile

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
