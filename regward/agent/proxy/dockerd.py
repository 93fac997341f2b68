"""Point dockerd at the proxy: what `regward agent install` writes for it.

    Docker Engine < 23   systemd drop-in  /etc/systemd/system/docker.service.d/regward-proxy.conf
                           [Service]
                           Environment="HTTP_PROXY=http://127.0.0.1:3128" "HTTPS_PROXY=..." ...
    Docker Engine >= 23  daemon.json      "proxies": {"http-proxy": ..., "https-proxy": ...,
                                                      "no-proxy": ...}   (other keys kept)

Engine 20.10 refuses a daemon.json with `proxies`, so the key is written only where it exists.
`NO_PROXY` names loopback only, which Go never proxies anyway: every registry goes through.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

from regward.errors import ConfigError
from regward.policy.address import join_host_port

from .settings import parse_listen

DROPIN = Path("/etc/systemd/system/docker.service.d/regward-proxy.conf")
DAEMON_JSON = Path("/etc/docker/daemon.json")
NO_PROXY = "localhost,127.0.0.1,::1"
PROXIES_SINCE = 23


def proxy_url(listen: str) -> str:
    """The URL clients use for a proxy listening on `listen` (a wildcard means loopback)."""
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", ""):  # noqa: S104 - mapping a wildcard to loopback, not binding
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://{join_host_port(host, port)}"


def proxy_environment(listen: str) -> dict[str, str]:
    """The environment a client (dockerd, skopeo) needs to use the proxy."""
    url = proxy_url(listen)
    return {"HTTP_PROXY": url, "HTTPS_PROXY": url, "NO_PROXY": NO_PROXY}


def dropin_text(listen: str) -> str:
    pairs = " ".join(f'"{name}={value}"' for name, value in proxy_environment(listen).items())
    return (
        "# Written by `regward agent install`: registry traffic goes through Regward's proxy.\n"
        f"[Service]\nEnvironment={pairs}\n"
    )


def engine_major(version_text: str) -> int | None:
    """The major version in `dockerd --version` output ("Docker version 20.10.24+dfsg1, ...")."""
    match = re.search(r"version v?(\d+)\.", version_text)
    return int(match.group(1)) if match else None


def detect_engine_major(dockerd: str = "dockerd") -> int | None:
    try:
        result = subprocess.run(  # noqa: S603 - fixed argument list, no shell
            [dockerd, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return engine_major(result.stdout)


def configure_dockerd(
    listen: str,
    *,
    engine: int | None = None,
    dropin: Path = DROPIN,
    daemon_json: Path = DAEMON_JSON,
) -> list[str]:
    """Write dockerd's proxy settings for a proxy on `listen`; return one line per change.

    `engine` is the Docker Engine major version (detected from `dockerd --version` if None).
    """
    if engine is None:
        engine = detect_engine_major()
    url = proxy_url(listen)
    if engine is not None and engine >= PROXIES_SINCE:
        config = _read_json(daemon_json)
        wanted = {"http-proxy": url, "https-proxy": url, "no-proxy": NO_PROXY}
        if config.get("proxies") == wanted:
            return [f"{daemon_json}: proxies already set to {url}"]
        config["proxies"] = wanted
        _write(daemon_json, json.dumps(config, indent=2) + "\n")
        return [
            f"{daemon_json}: set proxies to {url} (Docker Engine {engine})",
            "restart dockerd to apply: systemctl restart docker",
        ]
    text = dropin_text(listen)
    if dropin.exists() and dropin.read_text() == text:
        return [f"{dropin}: dockerd already uses the proxy {url}"]
    _write(dropin, text)
    return [
        f"{dropin}: dockerd's environment HTTP_PROXY/HTTPS_PROXY set to {url}",
        "restart dockerd to apply: systemctl daemon-reload && systemctl restart docker",
    ]


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} is not readable JSON ({error}); fix or remove it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object; fix or remove it")
    return data


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
