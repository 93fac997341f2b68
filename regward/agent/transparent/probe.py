"""Is the TLS server behind an address a container registry? Asked once, remembered a while.

    probe = RegistryProbe(settings)
    await probe.is_registry("10.77.0.3", 443, "web.example")   -> True | False

A TLS connection names a server the policy does not know: it may be a registry nobody allowed,
or any web site. The agent cannot look inside TLS, so it asks the server itself, the way a
registry client does first: the OCI distribution base endpoint `GET /v2/`, over TLS to the
very address the client chose, with the client's server name. A registry answers 200 or 401
with its `Docker-Distribution-API-Version` header, or 401 with a `Bearer` token challenge; a
web site does not. A server that refuses the connection or does not speak TLS is no registry
(its client cannot pull from it either); any other failure (no answer in time, a reset, an
error of the agent's own) is taken for a registry (fail closed) and not remembered, so the
next connection asks again. A definite answer is kept `settings.probe_ttl` seconds per
(address, port, name);
concurrent connections wait for one probe. A server that cannot be reached or does not speak
TLS is no registry (its client cannot pull from it either).

Limits, said plainly in docs/security.md: a registry that answers the agent's probe unlike a
client's (by source address, say) is taken for a web site; so is one behind TLS 1.3 Encrypted
Client Hello, whose real name the agent never sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import OrderedDict

from .settings import TransparentSettings

log = logging.getLogger("regward.agent.transparent")

MAX_PROBE_HEAD = 16 * 1024
# OpenSSL's reasons when the other end does not speak TLS at all (plain HTTP, say).
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "HTTP_REQUEST"})
Key = tuple[str, int, str]


def looks_like_registry(head: bytes) -> bool:
    """Does this response head to `GET /v2/` come from a registry?"""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or parts[1] not in (b"200", b"401"):
        return False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == b"docker-distribution-api-version":
            return True
        if name == b"www-authenticate" and parts[1] == b"401":
            if value[:7].lower() == b"bearer " and b"realm=" in value.lower():
                return True
    return False


class RegistryProbe:
    """Probes by (address, port, server name), with a bounded cache of the answers."""

    def __init__(self, settings: TransparentSettings) -> None:
        self.settings = settings
        self._answers: OrderedDict[Key, tuple[float, bool]] = OrderedDict()
        self._pending: dict[Key, asyncio.Future[bool]] = {}
        self._context = ssl.create_default_context()
        self._context.check_hostname = False
        self._context.verify_mode = ssl.CERT_NONE  # a question, not trust: nothing is sent
        self.probes = 0  # how many were made (for the bench and tests)

    def cached(self, address: str, port: int, name: str) -> bool | None:
        key = (address, port, name)
        found = self._answers.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    async def is_registry(self, address: str, port: int, name: str) -> bool:
        key = (address, port, name)
        answer = self.cached(*key)
        if answer is not None:
            return answer
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            found = await self._probe(address, port, name)
            answer = True if found is None else found  # undecided: fail closed
            future.set_result(answer)
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._pending[key]
        if found is None:
            return answer  # asked again next time: a passing fault must not stick
        self._answers[key] = (time.monotonic() + self.settings.probe_ttl, answer)
        self._answers.move_to_end(key)
        while len(self._answers) > self.settings.probe_cache:
            self._answers.popitem(last=False)
        log.info(
            "probed %s:%d (TLS name %s): %s",
            address,
            port,
            name or "none",
            "a registry" if answer else "not a registry",
        )
        return answer

    async def _probe(self, address: str, port: int, name: str) -> bool | None:
        """True: a registry; False: not one; None: no answer either way."""
        self.probes += 1
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.settings.mark)
        sock.setblocking(False)
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.settings.probe_timeout):
                await asyncio.get_running_loop().sock_connect(sock, (address, port))
                reader, writer = await asyncio.open_connection(
                    sock=sock,
                    ssl=self._context,
                    server_hostname=name,  # '': no SNI
                )
                host = name or (f"[{address}]" if ":" in address else address)
                writer.write(
                    f"GET /v2/ HTTP/1.1\r\nHost: {host}\r\nUser-Agent: regward-probe\r\n"
                    "Accept: */*\r\nConnection: close\r\n\r\n".encode()
                )
                head = await reader.readuntil(b"\r\n\r\n")
        except ConnectionRefusedError:
            return False  # nothing listens there: nothing to pull from either
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            # (TimeoutError and ssl.SSLError are OSErrors)
            if isinstance(error, ssl.SSLError) and error.reason in _NOT_TLS:
                return False  # no TLS server there: its clients' TLS fails as well
            log.info(
                "probe of %s:%d (TLS name %s) failed: %r", address, port, name or "none", error
            )
            return None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            else:
                sock.close()
        return looks_like_registry(head[:MAX_PROBE_HEAD])
