"""What each Engine API endpoint asks of registries: a table from route to check function.

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
    POST /containers/create                    use Image: by where the engine says it came from
    POST /containers/{id}/start|restart        run the container's image: by where the engine
                                               says the image it holds (by ID) came from

A registry endpoint whose request cannot be read (no body where one is needed, a form-encoded
body the plugin cannot see, a bad reference) raises `Unreadable`. Other endpoints yield nothing
and their bodies are never decoded. A query-driven call (pull, push, plugin pull) must come with
`Content-Length: 0` or a body the plugin was shown: Go's form parsing would otherwise let a
hidden body replace `fromImage` (see `_query_only`). `POST /auth` (`docker login`) reaches a
registry too, but dockerd never shows its body to plugins; the egress proxy covers it.

Checks are produced one at a time, so the caller stops at the first refusal; more than
MAX_CHECKS in one request is refused (dockerd waits for every answer and never times the plugin
out, so one huge request must not hold the others up).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from regward.agent.authz import gojson
from regward.agent.authz.request import AuthZRequest, Unreadable
from regward.policy import Action

# The docker CLI names one image or host per call; a build's cachefrom list or a service spec
# names a few.
MAX_CHECKS = 64

# Longer than any valid reference (a 255-character name, a tag, a digest): not worth asking the
# engine about; read as a pull, it is refused as invalid.
MAX_IMAGE_NAME = 512

_IMAGE_ID = re.compile(r"^(?:sha256:)?[a-f0-9]{64}$")


@dataclass(frozen=True)
class ImageCheck:
    action: Action
    reference: str


@dataclass(frozen=True)
class HostCheck:
    host: str
    port: int
    what: str


@dataclass(frozen=True)
class LocalImageCheck:
    """Use an image that may already be on the machine (`docker run`): decided by where the
    engine says it came from, not by how its name would read as a pull. With `container`, the
    reference names a container, and the image is the one it holds (by ID, so a tag moved
    after the container was created changes nothing)."""

    reference: str  # as the client gave it: a name, a short or full ID, name@digest
    container: bool = False


Check = ImageCheck | HostCheck | LocalImageCheck


def registry_checks(request: AuthZRequest) -> Iterator[Check]:
    """What the request asks of registries, one check at a time (nothing for endpoints that
    name none); Unreadable while iterating when the request cannot be read, or names more than
    MAX_CHECKS images and hosts."""
    route = _route(request)
    if route is None:
        return
    checker, name = route
    for count, check in enumerate(checker(request, name), 1):
        if count > MAX_CHECKS:
            raise Unreadable(
                f"it names more than {MAX_CHECKS} images or hosts, more than Regward checks "
                "in one request"
            )
        yield check


def local_images(request: AuthZRequest) -> list[LocalImageCheck]:
    """The images (or containers) a request would use from the machine (`docker run`, `docker
    start`), to ask the engine about before deciding; [] for other requests, and for one that
    cannot be read (it is refused)."""
    route = _route(request)
    if route is None or route[0] not in (_container, _container_start):
        return []
    try:
        return [
            check
            for check in registry_checks(request)
            if isinstance(check, LocalImageCheck) and len(check.reference) <= MAX_IMAGE_NAME
        ]
    except Unreadable:
        return []


def _route(request: AuthZRequest) -> tuple[Checker, str] | None:
    """The check function for the request's endpoint, and the name in its path."""
    first = request.path[1:].split("/", 1)[0].lower()
    if first not in _FIRST_SEGMENTS:
        return None
    for pattern, checker in _ROUTES:
        match = pattern.match(request.path)
        if match:
            return checker, match.groupdict().get("name") or ""
    return None


def _no_form_body(request: AuthZRequest) -> None:
    if request.media_type() == "application/x-www-form-urlencoded":
        raise Unreadable("a form-encoded body on this endpoint is not visible to the plugin")


_HIDDEN_BODY = (
    "its request body was not shown to authorization plugins and could change what is fetched"
)
_HIDDEN_IMPORT = (
    "docker import sends its archive (a file or standard input) as a request body "
    "authorization plugins are not shown, and such a body could change what is fetched; to "
    "make an image of a root filesystem archive, build it instead: a Dockerfile with "
    "'FROM scratch' and 'ADD rootfs.tar /' (docker build reads the archive from its context)"
)


def _query_only(request: AuthZRequest, hidden: str = _HIDDEN_BODY) -> None:
    """Refuse a request whose parameters could come from a body the plugin was not shown
    (`hidden` says why).

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
        raise Unreadable(hidden)


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
    image, tag, source = request.param("fromImage"), request.param("tag"), request.param("fromSrc")
    _query_only(request, _HIDDEN_IMPORT if source == "-" and not image else _HIDDEN_BODY)
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
        if image:
            yield LocalImageCheck(image)


def _container_start(_request: AuthZRequest, name: str) -> Iterator[Check]:
    yield LocalImageCheck(name, container=True)


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


Checker = Callable[[AuthZRequest, str], Iterator["Check"]]

_ROUTES: tuple[tuple[re.Pattern[str], Checker], ...] = (
    (re.compile(r"^/images/create$", re.I), _pull),
    (re.compile(r"^/images/(?P<name>.+)/push$", re.I), _push),
    (re.compile(r"^/plugins/(?:pull|privileges)$", re.I), _plugin_pull),
    (re.compile(r"^/plugins/(?P<name>.+)/upgrade$", re.I), _plugin_pull),
    (re.compile(r"^/plugins/(?P<name>.+)/push$", re.I), _plugin_push),
    (re.compile(r"^/distribution/(?P<name>.+)/json$", re.I), _distribution),
    (re.compile(r"^/images/search$", re.I), _search),
    (re.compile(r"^/build$", re.I), _build),
    (re.compile(r"^/services/(?:create|[^/]+/update)$", re.I), _service),
    (re.compile(r"^/containers/create$", re.I), _container),
    (re.compile(r"^/containers/(?P<name>[^/]+)/(?:start|restart)$", re.I), _container_start),
)
_FIRST_SEGMENTS = frozenset(
    {"images", "plugins", "distribution", "build", "services", "containers"}
)
