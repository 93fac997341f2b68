"""The Docker Engine authorization plugin: which registry a request names, and the answer.

dockerd POSTs each API call it receives to the plugin (`/AuthZPlugin.AuthZReq`) as JSON:

    {"RequestMethod": "POST",
     "RequestUri": "/v1.41/images/create?fromImage=ghcr.io%2Facme%2Fapi&tag=1.2",
     "RequestHeaders": {"Content-Type": "application/json"},
     "RequestBody": "<base64, only for small application/json bodies>"}

`AuthZRequest.parse` reads it as Go would (`regward.agent.gojson`), and `registry_checks` lists
what the request asks of a registry:

    POST /images/create?fromImage=X&tag=T      pull X:T (T may be a digest; none means all tags)
    POST /images/create?fromSrc=URL            connect to URL's host (import downloads it)
    POST /images/{name}/push?tag=T             push name:T
    POST /plugins/pull|privileges?remote=R     pull R
    POST /plugins/{name}/upgrade?remote=R      pull R
    POST /plugins/{name}/push                  push name
    GET  /distribution/{name}/json             pull name
    GET  /images/search?term=T                 connect to T's index (index.docker.io by default)
    POST /build?remote=URL&cachefrom=[..]      connect to the context's host; pull each cache image
    POST /services/create, /services/{id}/update   pull TaskTemplate.ContainerSpec.Image
    POST /containers/create                    pull Image (it may already be on the machine)

The target is read as dockerd's Go server reads it (`regward.agent.gourl`: `#` belongs to the
query, `+` is a space there, a pair with `;` or a bad escape is dropped by Go and so refuses the
request here). dockerd reads one value of each query parameter (the first); a parameter it
reads given twice is refused. Every string a duplicated JSON key carries is checked; one
refusal refuses the request. A registry endpoint whose request cannot be read (no
body where one is needed, a form-encoded body the plugin cannot see, a bad reference) is refused.
Other endpoints are allowed without decoding their bodies. Bodies are never logged.

Request targets in absolute form (`http://d/v1.41/images/create?..`) are routed by dockerd on
their path, and so are they here. A query-driven call (pull, push, plugin pull) must come with
`Content-Length: 0` or a body the plugin was shown: Go's form parsing would otherwise let a
hidden body replace `fromImage` (see `_query_only`). `POST /auth` (`docker login`) reaches a
registry too, but dockerd never shows its body to plugins; the egress proxy covers it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import posixpath
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from regward.agent import gojson, gourl
from regward.agent.guard import Guard
from regward.policy import Action, Decision

log = logging.getLogger("regward.agent.authz")

MEDIA_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_REQUEST_BYTES = 16 * 1024 * 1024  # dockerd caps forwarded bodies at 4 MiB (base64: ~5.4 MiB)
MAX_HEADER_BYTES = 64 * 1024
# The work one request may ask of the plugin: dockerd waits for each answer and never times the
# plugin out, so one huge request must not hold the others up. The docker CLI names one image
# or host per call; a build's cachefrom list or a service spec names a few.
MAX_CHECKS = 64
MAX_QUERY_BYTES = 256 * 1024  # of a registry endpoint's query (dockerd accepts 1 MiB lines)

_VERSION = re.compile(r"^/v[0-9.]+(?=/)", re.IGNORECASE)  # moby's /v{version:[0-9.]+}
_IMAGE_ID = re.compile(r"^(?:sha256:)?[a-f0-9]{64}$")


class Unreadable(Exception):
    """A registry endpoint whose request does not say clearly what it would fetch."""


class AuthZRequest:
    """One AuthZReq envelope. The query and body are decoded on first use, so requests to
    endpoints that name no registry cost one JSON parse and a path check."""

    __slots__ = ("_body", "_body_text", "_query", "_raw_query", "headers", "method", "path", "uri")

    def __init__(
        self, method: str, uri: str, headers: dict[str, str], body_text: str | None
    ) -> None:
        self.method = method
        self.uri = uri
        self.headers = headers  # keys lower-cased, last duplicate wins
        self._body_text = body_text
        self._body: bytes | None = None
        self._query: tuple[tuple[str, str], ...] | None = None
        # The plugin is given the target as the client wrote it (absolute form included); it
        # is read the way dockerd's Go server reads it.
        try:
            target = gourl.parse_request_uri(uri)
        except gourl.GoURLError as error:
            raise Unreadable(f"{error}, as dockerd would read it") from error
        if not target.path.startswith("/"):  # `*` or `scheme:opaque`: dockerd routes neither
            raise Unreadable(f"the request target {uri[:80]!r} names no path")
        self._raw_query = target.raw_query
        self.path = _clean_path(target.path)  # decoded, without the /vX.Y prefix

    @classmethod
    def parse(cls, data: bytes) -> AuthZRequest:
        """Read dockerd's request as Go would; raise Unreadable when it is not one."""
        try:
            obj = gojson.loads(data)
            if not gojson.is_object(obj):
                raise Unreadable("the AuthZ request is not a JSON object")
            fields: dict[str, str] = {}
            headers: dict[str, str] = {}
            for key, value in obj:
                name = gojson.fold(key)
                if name in _STRING_FIELDS:
                    if value is None:
                        continue  # null leaves a Go string as it was
                    if not isinstance(value, str):
                        raise gojson.GoJSONError(f"field {key} must be a string")
                    fields[name] = value
                elif name == "REQUESTHEADERS" and value is not None:
                    if not gojson.is_object(value):
                        raise gojson.GoJSONError("RequestHeaders must be an object")
                    for header, item in value:
                        if isinstance(item, str):
                            headers[header.lower()] = item
        except gojson.GoJSONError as error:
            raise Unreadable(f"the AuthZ request is unreadable: {error}") from error
        return cls(
            fields.get("REQUESTMETHOD", "").upper(),
            fields.get("REQUESTURI", ""),
            headers,
            fields.get("REQUESTBODY") or None,
        )

    @property
    def query(self) -> tuple[tuple[str, str], ...]:
        """The query's pairs as dockerd reads them; Unreadable where Go would drop a pair."""
        if self._query is None:
            if len(self._raw_query) > MAX_QUERY_BYTES:
                raise Unreadable(
                    f"its query is {len(self._raw_query)} bytes, more than the "
                    f"{MAX_QUERY_BYTES} Regward reads for a registry request"
                )
            pairs, error = gourl.parse_query(self._raw_query)
            if error is not None:
                raise Unreadable(
                    f"dockerd would skip part of its query ({error}); percent-encode ';' as "
                    "%3B and '%' as %25"
                )
            self._query = tuple(pairs)
        return self._query

    @property
    def body(self) -> bytes | None:
        """The forwarded body, or None; Unreadable when it is not base64 (Go's []byte form)."""
        if self._body is None and self._body_text:
            try:
                self._body = base64.b64decode(
                    self._body_text.replace("\r", "").replace("\n", ""), validate=True
                )
            except (binascii.Error, ValueError) as error:
                raise Unreadable("the request body is not valid base64") from error
        return self._body

    def param(self, name: str) -> str:
        """The value dockerd acts on (`r.Form.Get`: the first, "" when absent). A parameter
        given twice is refused: only one value can be checked, and it must be the one used."""
        values = [value for key, value in self.query if key == name]
        if len(values) > 1:
            raise Unreadable(
                f"its query gives {name} {len(values)} times; dockerd reads only the first, "
                "so give it once"
            )
        value = values[0] if values else ""
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise Unreadable(f"its query parameter {name} is not UTF-8 text") from error
        return value

    def media_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


_STRING_FIELDS = frozenset({"REQUESTMETHOD", "REQUESTURI", "REQUESTBODY"})
_PLAIN_PATH = re.compile(r"^(?:/[A-Za-z0-9_.:@+-]+)+$")


def _clean_path(path: str) -> str:
    """What the Engine's router would match, from Go's decoded path: `//`, `.` and `..`
    resolved (gorilla/mux redirects such a path; resolving it checks at least as much)."""
    if (
        not _PLAIN_PATH.match(path)
        or "/./" in path
        or "/../" in path
        or path.endswith(("/.", "/.."))
    ):
        path = "/" + posixpath.normpath("/" + re.sub(r"/+", "/", path)).lstrip("/")
    return _VERSION.sub("", path)


@dataclass(frozen=True)
class ImageCheck:
    action: Action
    reference: str


@dataclass(frozen=True)
class HostCheck:
    host: str
    port: int
    what: str


Check = ImageCheck | HostCheck

_ROUTES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^/images/create$", re.I), "pull"),
    (re.compile(r"^/images/(?P<name>.+)/push$", re.I), "push"),
    (re.compile(r"^/plugins/(?:pull|privileges)$", re.I), "plugin-pull"),
    (re.compile(r"^/plugins/(?P<name>.+)/upgrade$", re.I), "plugin-pull"),
    (re.compile(r"^/plugins/(?P<name>.+)/push$", re.I), "plugin-push"),
    (re.compile(r"^/distribution/(?P<name>.+)/json$", re.I), "distribution"),
    (re.compile(r"^/images/search$", re.I), "search"),
    (re.compile(r"^/build$", re.I), "build"),
    (re.compile(r"^/services/(?:create|[^/]+/update)$", re.I), "service"),
    (re.compile(r"^/containers/create$", re.I), "container"),
]
_FIRST_SEGMENTS = frozenset(
    {"images", "plugins", "distribution", "build", "services", "containers"}
)


def registry_checks(request: AuthZRequest) -> Iterator[Check]:
    """What the request asks of registries, one check at a time (nothing for endpoints that
    name none); Unreadable while iterating when the request cannot be read, or names more than
    MAX_CHECKS images and hosts."""
    first = request.path[1:].split("/", 1)[0].lower()
    if first not in _FIRST_SEGMENTS:
        return
    for pattern, kind in _ROUTES:
        match = pattern.match(request.path)
        if match:
            checks = _CHECKERS[kind](request, match.groupdict().get("name") or "")
            for count, check in enumerate(checks, 1):
                if count > MAX_CHECKS:
                    raise Unreadable(
                        f"it names more than {MAX_CHECKS} images or hosts, more than Regward "
                        "checks in one request"
                    )
                yield check
            return


def _no_form_body(request: AuthZRequest) -> None:
    if request.media_type() == "application/x-www-form-urlencoded":
        raise Unreadable("a form-encoded body on this endpoint is not visible to the plugin")


def _query_only(request: AuthZRequest) -> None:
    """Refuse a request whose parameters could come from a body the plugin was not shown.

    Go's `ParseForm` takes form values from a POST body before the query when the *first*
    Content-Type is form-encoded, while dockerd forwards a body only when that first one is
    JSON and reports the *last* value among the headers. So a body that did not reach the
    plugin may hold a different `fromImage`. The docker CLI sends these calls with
    `Content-Length: 0`; a forwarded (JSON) body is never parsed as a form.
    """
    _no_form_body(request)
    if request.method in ("GET", "HEAD") or request.body is not None:
        return
    if request.headers.get("content-length", "").strip() != "0":
        raise Unreadable(
            "its request body was not shown to authorization plugins and could change what "
            "is fetched (docker import from standard input is one such request)"
        )


def _with_tag(image: str, tag: str) -> str:
    if not tag:
        return image
    separator = "@" if ":" in tag else ":"
    base = image.split("@", 1)[0] if separator == "@" else image
    if separator == ":" and "@" in image:  # a digest in fromImage wins over the tag
        return image
    if separator == ":":
        last = base.rsplit("/", 1)[-1]
        if ":" in last:
            base = base[: len(base) - len(last)] + last.split(":", 1)[0]
    return f"{base}{separator}{tag}"


def _pull(request: AuthZRequest, _name: str) -> Iterator[Check]:
    _query_only(request)
    image, tag, source = request.param("fromImage"), request.param("tag"), request.param("fromSrc")
    if image:
        yield ImageCheck(Action.PULL, _with_tag(image, tag))
    if source and source != "-":  # dockerd imports only without fromImage: checking is safe
        yield _url_check(source, "import from")


def _push(request: AuthZRequest, name: str) -> Iterator[Check]:
    _query_only(request)
    yield ImageCheck(Action.PUSH, _with_tag(name, request.param("tag")))


def _plugin_pull(request: AuthZRequest, _name: str) -> Iterator[Check]:
    _query_only(request)
    remote = request.param("remote")
    if not remote:
        raise Unreadable("the plugin request names no remote image")
    yield ImageCheck(Action.PULL, remote)


def _search(request: AuthZRequest, _name: str) -> Iterator[Check]:
    """`docker search`: dockerd asks the index named by the term's first component."""
    first, slash, _ = request.param("term").partition("/")
    if slash and (first == "localhost" or any(c in first for c in ".:")):
        yield _url_check(f"https://{first}", "search")
    else:
        yield HostCheck("index.docker.io", 443, "search")


def _plugin_push(request: AuthZRequest, name: str) -> Iterator[Check]:
    yield ImageCheck(Action.PUSH, name)


def _distribution(request: AuthZRequest, name: str) -> Iterator[Check]:
    yield ImageCheck(Action.PULL, name)


def _build(request: AuthZRequest, _name: str) -> Iterator[Check]:
    # The build context is a tar body the plugin never sees, and the Dockerfile's FROM lines are
    # in it: the egress proxy is what holds builds to the policy.
    _no_form_body(request)
    remote = request.param("remote")
    if remote and remote != "client-session":
        yield _git_or_url_check(remote)
    cache_from = request.param("cachefrom")
    if not cache_from:
        return
    try:
        images = gojson.loads(cache_from)
    except gojson.GoJSONError as error:
        raise Unreadable("cachefrom is not a JSON list of images") from error
    if images is None:
        return
    if not isinstance(images, list) or gojson.is_object(images):
        raise Unreadable("cachefrom is not a JSON list of images")
    for image in images:
        if not isinstance(image, str):
            raise Unreadable("cachefrom is not a JSON list of images")
        yield ImageCheck(Action.PULL, image)


def _json_body(request: AuthZRequest) -> Any:
    if not request.body:
        raise Unreadable(
            "its JSON body did not reach the plugin (missing, not application/json, or too large)"
        )
    try:
        return gojson.loads(request.body)
    except gojson.GoJSONError as error:
        raise Unreadable(f"its body is {error}") from error


def _service(request: AuthZRequest, _name: str) -> Iterator[Check]:
    body = _json_body(request)
    try:
        images = gojson.strings_at(body, ("TaskTemplate", "ContainerSpec", "Image"))
        remotes = gojson.strings_at(body, ("TaskTemplate", "PluginSpec", "Remote"))
    except gojson.GoJSONError as error:
        raise Unreadable(f"its body does not follow the service spec: {error}") from error
    for image in images + remotes:
        if image and not _IMAGE_ID.match(image):
            yield ImageCheck(Action.PULL, image)


def _container(request: AuthZRequest, _name: str) -> Iterator[Check]:
    body = _json_body(request)
    try:
        images = gojson.strings_at(body, ("Image",))
    except gojson.GoJSONError as error:
        raise Unreadable(f"its body does not follow the container config: {error}") from error
    for image in images:
        if image and not _IMAGE_ID.match(image):
            yield ImageCheck(Action.PULL, image)


def _url_check(text: str, what: str) -> HostCheck:
    if "://" not in text:
        text = "http://" + text  # dockerd's import does the same
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port
    except ValueError as error:
        raise Unreadable(f"cannot read the URL {text!r}") from error
    if url.scheme not in ("http", "https") or not url.hostname:
        raise Unreadable(f"cannot read the URL {text!r}")
    return HostCheck(url.hostname, port or (443 if url.scheme == "https" else 80), what)


_SCP_GIT = re.compile(r"^[A-Za-z0-9._-]+@(?P<host>[^:/]+):")


def _git_or_url_check(remote: str) -> HostCheck:
    scp = _SCP_GIT.match(remote)
    if scp:
        return HostCheck(scp.group("host").lower(), 22, "build context from")
    if remote.startswith("git://"):
        url = urllib.parse.urlsplit(remote)
        if not url.hostname:
            raise Unreadable(f"cannot read the build context URL {remote!r}")
        return HostCheck(url.hostname, url.port or 9418, "build context from")
    if remote.startswith("github.com/"):
        return HostCheck("github.com", 443, "build context from")
    if remote.startswith(("http://", "https://")):
        return _url_check(remote, "build context from")
    raise Unreadable(f"the build context {remote!r} is not a URL dockerd would fetch")


_CHECKERS = {
    "pull": _pull,
    "push": _push,
    "plugin-pull": _plugin_pull,
    "plugin-push": _plugin_push,
    "search": _search,
    "distribution": _distribution,
    "build": _build,
    "service": _service,
    "container": _container,
}


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


class _BadRequest(Exception):
    pass


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
        except (_BadRequest, ValueError):
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
                    raise _BadRequest("request head too large")
                return False
            self.head = _parse_head(bytes(self.buffer[: end + 4]))
            self.head_end = end + 4
        target, length, chunked, keep_alive = self.head
        if chunked:
            parsed = _parse_chunked(self.buffer, self.head_end)
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
        transport.write(_response(status, reply, keep_alive))
        if not keep_alive:
            transport.close()
            return False
        return True

    def _finish(self, status: int, body: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_response(status, body, False))
            self.transport.close()


def _parse_head(head: bytes) -> tuple[str, int, bool, bool]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(lines[0][:100])
    length = 0
    chunked = False
    keep_alive = parts[2] == "HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
            if length < 0:
                raise _BadRequest("negative Content-Length")
        elif name == "transfer-encoding":
            chunked = "chunked" in value.lower()
        elif name == "connection":
            keep_alive = value.strip().lower() != "close"
    return parts[1], length, chunked, keep_alive


def _parse_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """(body, end offset) of a complete chunked body at `start`, or None while incomplete."""
    chunks: list[bytes] = []
    total = 0
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(bytes(buffer[position:line_end]).split(b";")[0].strip(), 16)
        position = line_end + 2
        if size == 0:
            while True:  # trailers, up to the empty line
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                if line_end == position:
                    return b"".join(chunks), position + 2
                position = line_end + 2
        total += size
        if total > MAX_REQUEST_BYTES:
            raise _BadRequest("chunked body too large")
        if len(buffer) < position + size + 2:
            return None
        chunks.append(bytes(buffer[position : position + size]))
        position += size + 2


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "Error")
    connection = "keep-alive" if keep_alive else "close"
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {MEDIA_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    ).encode() + body


_ALLOW = b'{"Allow":true}'
_ACTIVATE = b'{"Implements":["authz"]}'
_REFUSE_ON_ERROR = json.dumps(
    {"Allow": False, "Msg": "Regward could not check this request, so it is refused."}
).encode()
_REFUSE_TOO_LARGE = json.dumps(
    {"Allow": False, "Msg": "Regward refused a request too large to check."}
).encode()
