"""Where an image already on the machine came from, as the Docker Engine itself knows it.

`docker run IMAGE` creates a container from an image on the machine; dockerd resolves IMAGE
(a name, a short or full ID, a digest) the same way for `GET /images/{IMAGE}/json`, so the plugin
asks that, on the engine's own socket:

    origin = await ImageOrigins(Path("/var/run/docker.sock")).look_up("rt/app:v1")
    ImageOrigin(found=True, repo_digests=())                    built or loaded here
    ImageOrigin(found=True, repo_digests=("ghcr.io/a/b@sha256:..",))   pulled (or pushed) there
    ImageOrigin(found=False, repo_digests=())                   not on the machine
    None                                                        the engine did not answer
    origin = await ImageOrigins(...).of_container("web")        the image container web holds

An image pulled from a registry carries that repository's digest in `RepoDigests`; one built,
loaded or imported on the machine carries none. The engine's answer to this request passes
through the plugin too (an image inspect names no registry, so it is allowed at once).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx

from regward.agent.protection import engine_transport

log = logging.getLogger("regward.agent.authz")

_IMAGE_ID = re.compile(r"sha256:[a-f0-9]{64}")

TIMEOUT = 5.0


@dataclass(frozen=True)
class ImageOrigin:
    found: bool
    repo_digests: tuple[str, ...] = ()
    auto_remove: str = ""  # of_container: the ID of a container that goes when it stops (--rm)


class ImageOrigins:
    """Image inspect on the engine's unix socket; one client, opened on first use."""

    def __init__(self, socket: Path, timeout: float = TIMEOUT) -> None:
        self.socket = socket
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def look_up(self, name: str) -> ImageOrigin | None:
        """Where the image dockerd would use for `name` came from; None when it cannot say."""
        found = await self._inspect("images", name)
        if not isinstance(found, dict):
            return found
        info = found.get("info")
        digests = info.get("RepoDigests", []) if isinstance(info, dict) else None
        if digests is None and isinstance(info, dict):
            digests = []  # "RepoDigests": null
        if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
            log.warning("the Docker Engine answered %s for image %r", found["status"], name[:200])
            return None
        return ImageOrigin(found=True, repo_digests=tuple(digests))

    async def of_container(self, name: str) -> ImageOrigin | None:
        """Where the image container `name` holds came from (found=False: no such container,
        dockerd will say so); None when the engine cannot say."""
        found = await self._inspect("containers", name)
        if not isinstance(found, dict):
            return found
        info = found.get("info")
        image = info.get("Image") if isinstance(info, dict) else None
        if not isinstance(image, str) or not _IMAGE_ID.fullmatch(image):
            log.warning("the Docker Engine answered %s for container %r", found["status"], name)
            return None
        origin = await self.look_up(image)
        host = info.get("HostConfig") if isinstance(info, dict) else None
        ident = info.get("Id") if isinstance(info, dict) else None
        if origin is None or not isinstance(host, dict) or host.get("AutoRemove") is not True:
            return origin
        if not isinstance(ident, str) or not ident:
            return origin
        return dataclasses.replace(origin, auto_remove=ident)

    async def remove(self, container: str) -> None:
        """Remove a container that never ran (`docker run --rm` waits for that, and dockerd
        removes an auto-remove container only when it stops)."""
        path = urllib.parse.quote(container, safe="")
        try:
            response = await self._engine().delete(f"http://docker/containers/{path}?force=1")
        except httpx.HTTPError as error:
            log.warning("cannot remove the refused container %r: %s", container[:200], error)
            return
        if response.status_code not in (204, 404, 409):
            log.warning("removing the refused container %r: %s", container, response.status_code)

    async def _inspect(self, kind: str, name: str) -> ImageOrigin | dict[str, object] | None:
        """`GET /{kind}/{name}/json`: {"status", "info"}, ImageOrigin(found=False) on 404, None
        when the engine did not answer."""
        path = urllib.parse.quote(name, safe="/:@")
        try:
            response = await self._engine().get(f"http://docker/{kind}/{path}/json")
        except httpx.HTTPError as error:
            log.warning("cannot ask the Docker Engine about %s %r: %s", kind, name[:200], error)
            return None
        if response.status_code == 404:
            return ImageOrigin(found=False)
        try:
            info = response.json() if response.status_code == 200 else None
        except ValueError:
            info = None
        return {"status": response.status_code, "info": info}

    def _engine(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=engine_transport(self.socket),
                timeout=self.timeout,
                trust_env=False,
            )
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
