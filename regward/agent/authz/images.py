"""Where an image already on the machine came from, as the Docker Engine itself knows it.

`docker run IMAGE` creates a container from an image on the machine; dockerd resolves IMAGE
(a name, a short or full ID, a digest) the same way for `GET /images/{IMAGE}/json`, so the plugin
asks that, on the engine's own socket:

    origin = await ImageOrigins(Path("/var/run/docker.sock")).look_up("rt/app:v1")
    ImageOrigin(found=True, repo_digests=())                    built or loaded here
    ImageOrigin(found=True, repo_digests=("ghcr.io/a/b@sha256:..",))   pulled (or pushed) there
    ImageOrigin(found=False, repo_digests=())                   not on the machine
    None                                                        the engine did not answer

An image pulled from a registry carries that repository's digest in `RepoDigests`; one built,
loaded or imported on the machine carries none. The engine's answer to this request passes
through the plugin too (an image inspect names no registry, so it is allowed at once).
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx

log = logging.getLogger("regward.agent.authz")

TIMEOUT = 5.0


@dataclass(frozen=True)
class ImageOrigin:
    found: bool
    repo_digests: tuple[str, ...] = ()


class ImageOrigins:
    """Image inspect on the engine's unix socket; one client, opened on first use."""

    def __init__(self, socket: Path, timeout: float = TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def look_up(self, name: str) -> ImageOrigin | None:
        """Where the image dockerd would use for `name` came from; None when it cannot say."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(self.socket)),
                timeout=self.timeout,
                trust_env=False,
            )
        path = urllib.parse.quote(name, safe="/:@")
        try:
            response = await self._client.get(f"http://docker/images/{path}/json")
        except httpx.HTTPError as error:
            log.warning("cannot ask the Docker Engine about image %r: %s", name[:200], error)
            return None
        if response.status_code == 404:
            return ImageOrigin(found=False)
        try:
            info = response.json() if response.status_code == 200 else None
        except ValueError:
            info = None
        digests = info.get("RepoDigests", []) if isinstance(info, dict) else None
        if digests is None and isinstance(info, dict):
            digests = []  # "RepoDigests": null
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            log.warning("the Docker Engine answered %s for image %r", response.status_code, name)
            return None
        return ImageOrigin(found=True, repo_digests=tuple(digests))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
