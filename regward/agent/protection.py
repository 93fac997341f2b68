"""Is this machine's Docker Engine protected? Its own answer to `GET /info`, read against the
agent's settings.

The agent only protects a dockerd that asks it: one started with its AuthZ plugin (daemon.json
`"authorization-plugins"` or `--authorization-plugin`) and, while the agent's egress proxy is on,
with `HTTPS_PROXY`/`HTTP_PROXY` pointing at that proxy (else pulls inside builds go past it).
A dockerd restarted with other flags or settings says so in `/info`:

    {"Plugins": {"Authorization": ["regward"], ...},        null when it uses none
     "HttpProxy": "http://127.0.0.1:3128", "HttpsProxy": "http://127.0.0.1:3128",
     "NoProxy": "localhost,127.0.0.1,::1", ...}               "" when unset

    checked = await check(docker_socket(os.environ), plugin_names(sock), ("127.0.0.1", 3128))
    checked.report()     {"authz": True, "proxy": True}; proxy None with the proxy off;
                         None when no Docker Engine answered (unknown, never "protected")
    checked.words()      "protected (AuthZ plugin regward, proxy 127.0.0.1:3128)"

The answer comes from the engine's API (the unix socket of `DOCKER_HOST=unix://...`, else
/var/run/docker.sock) with a short timeout; `interpret` is the pure part.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from regward.policy.address import join_host_port

PLUGIN_NAME = "regward"
DEFAULT_DOCKER_SOCKET = Path("/var/run/docker.sock")
TIMEOUT = 3.0
# Where dockerd finds a legacy plugin by its socket alone (moby pkg/plugins/discovery.go);
# /var/run is /run on every current distribution.
PLUGIN_SOCKET_DIRS = (Path("/run/docker/plugins"), Path("/var/run/docker/plugins"))
_WILDCARDS = ("0.0.0.0", "::", "")  # noqa: S104 - names of wildcard addresses, nothing binds
FIX = "run `regward agent install` and restart dockerd"

EngineReport = dict[str, bool | None]  # {"authz": bool, "proxy": bool | None}, as checked in


def docker_socket(environ: Mapping[str, str]) -> Path:
    """The Docker Engine's unix socket: `DOCKER_HOST` when it is `unix://PATH`, else the default
    (a `tcp://` engine is not this machine's to vouch for)."""
    host = environ.get("DOCKER_HOST", "")
    if host.startswith("unix://") and len(host) > len("unix://"):
        return Path(host[len("unix://") :])
    return DEFAULT_DOCKER_SOCKET


def plugin_names(authz_socket: Path | None) -> tuple[str, ...]:
    """The names dockerd may know the agent's AuthZ plugin by, the likeliest first; one of them
    must be in its `Plugins.Authorization`.

    dockerd names a legacy plugin after the file it finds it by: for a name NAME it looks for
    the socket NAME.sock (or NAME/NAME.sock) in /run/docker/plugins, then for a spec file
    NAME.spec or NAME.json in /etc/docker/plugins or /usr/lib/docker/plugins. So a socket the
    agent serves in /run/docker/plugins is found under its file's stem (the default,
    /run/docker/plugins/regward.sock, is `regward`), and any socket is found as `regward`
    through the spec file `regward agent install` writes, /etc/docker/plugins/regward.spec.
    """
    if authz_socket is None or authz_socket.suffix != ".sock":
        return (PLUGIN_NAME,)
    stem, parent = authz_socket.stem, authz_socket.parent
    if parent in PLUGIN_SOCKET_DIRS or (
        parent.name == stem and parent.parent in PLUGIN_SOCKET_DIRS
    ):
        return tuple(dict.fromkeys((stem, PLUGIN_NAME)))
    return (PLUGIN_NAME,)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def points_at(value: str, listen: tuple[str, int]) -> bool:
    """Whether a proxy setting as dockerd reports it (`http://127.0.0.1:3128`, or without a
    scheme as Go accepts it) reaches a proxy listening on `listen`.

    Hosts compare as addresses where both are IP literals (`::1` is `0:0:0:0:0:0:0:1`),
    `localhost` reaches a loopback listener, a wildcard listener is reached on loopback (or on
    the wildcard address itself, as Linux allows); names
    compare case-insensitively without a trailing dot. A missing port is http's 80. Only
    `http://` reaches the agent's plain-HTTP proxy (`https://` would start TLS with it).
    """
    text = value.strip()
    if not text:
        return False
    if "://" not in text:
        text = "http://" + text  # Go's httpproxy reads a bare host:port as http
    try:
        url = urllib.parse.urlsplit(text)
        port = url.port or 80
    except ValueError:
        return False
    host = (url.hostname or "").rstrip(".").lower()
    if url.scheme.lower() != "http" or not host:
        return False
    want_host, want_port = listen
    if port != want_port:
        return False
    want_host = want_host.strip("[]").rstrip(".").lower()
    want_ip, got_ip = _ip(want_host), _ip(host)
    if want_host in _WILDCARDS:
        return host == "localhost" or bool(got_ip and (got_ip.is_loopback or got_ip == want_ip))
    if want_ip is not None:
        if got_ip is not None:
            return got_ip == want_ip
        return host == "localhost" and want_ip.is_loopback
    return host == want_host


@dataclass(frozen=True)
class Protection:
    """What a Docker Engine's `/info` says about the agent's place in it."""

    names: tuple[str, ...]  # what dockerd may call the agent's plugin (plugin_names)
    plugins: tuple[str, ...]  # the AuthZ plugins dockerd uses
    proxy_listen: tuple[str, int] | None  # the agent's proxy, None when it is off
    http_proxy: str
    https_proxy: str
    no_proxy: str

    @property
    def plugin(self) -> str:
        """The agent's plugin as dockerd uses it, else the name it would most likely use."""
        return next((name for name in self.names if name in self.plugins), self.names[0])

    @property
    def authz(self) -> bool:
        return any(name in self.plugins for name in self.names)

    @property
    def _bypass_all(self) -> bool:
        return "*" in (part.strip() for part in self.no_proxy.split(","))

    @property
    def proxy(self) -> bool | None:
        """True when dockerd sends registry traffic through the agent's proxy; None when the
        proxy is off (nothing to check)."""
        if self.proxy_listen is None:
            return None
        return (
            not self._bypass_all
            and points_at(self.https_proxy, self.proxy_listen)
            and points_at(self.http_proxy, self.proxy_listen)
        )

    @property
    def protected(self) -> bool:
        return self.authz and self.proxy is not False

    def report(self) -> EngineReport:
        return {"authz": self.authz, "proxy": self.proxy}

    def problems(self) -> list[str]:
        problems = []
        if not self.authz:
            uses = ", ".join(repr(name) for name in self.plugins) or "none"
            problems.append(
                f"dockerd does not use the AuthZ plugin '{self.plugin}' (its AuthZ plugins: {uses})"
            )
        if self.proxy is False and self.proxy_listen is not None:
            if self._bypass_all:
                settings = f"NO_PROXY={self.no_proxy}"
            else:
                settings = (
                    f"HTTPS proxy {self.https_proxy or 'not set'}, "
                    f"HTTP proxy {self.http_proxy or 'not set'}"
                )
            problems.append(
                "dockerd does not send registry traffic through the agent's proxy "
                f"{join_host_port(*self.proxy_listen)} ({settings}), so pulls inside builds "
                "are not checked"
            )
        return problems

    def words(self) -> str:
        if self.protected:
            proxy = (
                f"proxy {join_host_port(*self.proxy_listen)}"
                if self.proxy_listen is not None
                else "the agent's proxy is off"
            )
            return f"protected (AuthZ plugin {self.plugin}, {proxy})"
        return f"NOT protected: {'; '.join(self.problems())}; {FIX}"


def interpret(
    info: Mapping[str, Any], names: tuple[str, ...], proxy_listen: tuple[str, int] | None
) -> Protection:
    """Read a `/info` answer; fields that are missing or of another type count as unset."""
    plugins = info.get("Plugins")
    listed = plugins.get("Authorization") if isinstance(plugins, Mapping) else None
    listed_names = (
        tuple(item for item in listed if isinstance(item, str)) if isinstance(listed, list) else ()
    )

    def text(key: str) -> str:
        value = info.get(key)
        return value if isinstance(value, str) else ""

    return Protection(
        names=names,
        plugins=listed_names,
        proxy_listen=proxy_listen,
        http_proxy=text("HttpProxy"),
        https_proxy=text("HttpsProxy"),
        no_proxy=text("NoProxy"),
    )


@dataclass(frozen=True)
class EngineCheck:
    """One look at the Docker Engine: its protection, or why no engine answered."""

    socket: Path
    protection: Protection | None
    error: str | None = None  # set when protection is None

    def report(self) -> EngineReport | None:
        """What the agent checks in: None when no engine answered (unknown)."""
        return self.protection.report() if self.protection else None

    def words(self) -> str:
        if self.protection is None:
            return f"unknown: no answer from a Docker Engine at {self.socket} ({self.error})"
        return self.protection.words()

    def to_dict(self) -> dict[str, Any]:
        protection = self.protection
        return {
            "socket": str(self.socket),
            "answered": protection is not None,
            "authz": protection.authz if protection else None,
            "proxy": protection.proxy if protection else None,
            "protected": protection.protected if protection else None,
            "plugin": protection.plugin if protection else None,
            "plugins": list(protection.plugins) if protection else None,
            "http_proxy": protection.http_proxy if protection else None,
            "https_proxy": protection.https_proxy if protection else None,
            "words": self.words(),
            "error": self.error,
        }


def engine_transport(socket: Path) -> httpx.AsyncHTTPTransport:
    """A transport to the engine's unix socket. Plain HTTP there: verify=False skips loading
    the CA bundle, which blocks the event loop (which also serves the proxy) 10-150 ms."""
    return httpx.AsyncHTTPTransport(uds=str(socket), verify=False)


async def check(
    socket: Path,
    names: tuple[str, ...],
    proxy_listen: tuple[str, int] | None,
    timeout: float = TIMEOUT,
) -> EngineCheck:
    """Ask the engine on `socket` for `/info`; never raises for an engine that is away, slow or
    answers something else (that is an EngineCheck without protection)."""
    transport = engine_transport(socket)
    try:
        async with httpx.AsyncClient(
            transport=transport, timeout=timeout, trust_env=False
        ) as client:
            response = await client.get("http://docker/info")
    except httpx.HTTPError as error:
        return EngineCheck(socket, None, _reason(error))
    if response.status_code != 200:
        detail = response.text.strip()[:200]
        return EngineCheck(socket, None, f"/info answered {response.status_code}: {detail}")
    try:
        info = response.json()
    except ValueError:
        return EngineCheck(socket, None, "/info did not answer JSON")
    if not isinstance(info, dict):
        return EngineCheck(socket, None, "/info did not answer a JSON object")
    return EngineCheck(socket, interpret(info, names, proxy_listen))


def _reason(error: httpx.HTTPError) -> str:
    cause: BaseException | None = error
    while cause is not None:  # the OSError underneath says it best ("No such file ...")
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror.lower()
        cause = cause.__cause__ or cause.__context__
    if isinstance(error, httpx.TimeoutException):
        return "no answer in time"
    return str(error) or type(error).__name__
