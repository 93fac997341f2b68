"""Policy sync: the signed feed of the signed-in organization, kept verified and cached.

One loop per agent:

    GET {server}/api/v1/orgs/{org}/policy?wait=S&after=N   (If-None-Match: the last ETag)
      200  a signed revision: verify against the key pinned at login; refuse anything unsigned,
           badly signed, of another organization or older than the one enforced (and check in
           the refusal at once, for owners to see); else hand the policy to the guard, write
           the cache atomically, check in the applied revision. A cache that cannot be written
           (read-only or full disk) does not hold a verified revision back: it is enforced from
           memory, `regward status` says the cache is behind, and each answer retries the write
           A revision that ends a long-poll reached every waiting agent at the same moment, so
           its check-in waits a random part of CHECK_IN_SPREAD (enforcement does not wait)
      304  nothing newer within the wait; ask again at once (checking in first when the server
           has not been told the current state: a check-in failed while it was away)
      else the server is unreachable or refuses: keep enforcing the last verified revision and
           retry with exponential backoff and jitter (0.5 s doubling to 60 s)

Each answer names the key that signs (`X-Regward-Signing-Key`). When it is not the pinned key
(the server ran `regward server rotate-key`), the agent reads the server's key chain and pins
the new key only if endorsements lead to it from the pinned one, each signed by the key before;
a revision signed by any other key is refused as before, and the pinned key stays.

Every check-in also says whether the Docker Engine uses the agent's plugin and proxy
(`engine`, from regward.agent.protection; null when no engine answered).

A second loop sends denial reports in batches from the guard's bounded queue every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from regward.agent.guard import DenialReport, Enforcement, Guard
from regward.agent.protection import EngineReport
from regward.agent.server_transport import server_transport
from regward.agent.state import AgentState, Credentials
from regward.defaults import LONG_POLL_SECONDS
from regward.errors import ConfigError, InvalidPolicy, SignatureError
from regward.policy import Policy, SignedPolicy, follow_chain, public_key_from_text, verify

log = logging.getLogger("regward.agent.sync")

KEY_HEADER = "X-Regward-Signing-Key"  # the key that signs the feed's documents
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 60.0
REPORT_INTERVAL = 2.0
REFUSAL_LIMIT = 500  # the server's bound on a checked-in refusal
# Seconds over which the agents released by one Save & Apply spread their check-ins, so the
# server takes thousands of device writes as a stream instead of all in one instant.
CHECK_IN_SPREAD = 5.0


@dataclass
class SyncStatus:
    last_sync: float | None = None  # last successful answer from the server
    last_error: str | None = None
    revision: int | None = None
    refused_revisions: list[str] = field(default_factory=list)
    # The newest refusal, until a fetched revision verifies; checked in with the revision.
    refusal: str | None = None
    # Why the verified revision enforced from memory is not in the cache file (None: it is).
    cache_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_sync": self.last_sync,
            "last_error": self.last_error,
            "revision": self.revision,
            "refused_revisions": self.refused_revisions[-5:],
            "refusal": self.refusal,
            "cache_error": self.cache_error,
        }


def server_client(
    token: str, read_timeout: float = 15.0, mark: int | None = None
) -> httpx.AsyncClient:
    """An HTTP client for the Regward server.

    trust_env is off: HTTPS_PROXY on this machine may point at the agent's own egress proxy,
    which need not allow the server. Certificates are checked against the system's store (where
    a self-hosted server's private CA is installed), not a bundled one. `mark` (the transparent
    rules' mark) tags every socket, so the agent's own rules never take its way to its server:
    a policy refusing the server's host would otherwise cut the agent off from any newer one.
    """
    return httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}", "User-Agent": "regward-agent"},
        timeout=httpx.Timeout(10.0, read=read_timeout),
        trust_env=False,
        transport=server_transport(ssl.create_default_context(), mark),
    )


def api_url(server: str, path: str) -> str:
    return server.rstrip("/") + path


class Syncer:
    """Keeps the guard's policy equal to the newest verified revision of the organization."""

    def __init__(
        self,
        state: AgentState,
        guard: Guard,
        credentials: Credentials,
        agent_id: str,
        *,
        wait: int = LONG_POLL_SECONDS,
        on_change: Any = None,
        engine: Callable[[], EngineReport | None] | None = None,
        check_in_spread: float = CHECK_IN_SPREAD,
        mark: int | None = None,
    ) -> None:
        self.state = state
        self.guard = guard
        self.credentials = credentials
        self.agent_id = agent_id
        self.wait = wait
        self.status = SyncStatus()
        self.on_change = on_change
        # Whether the Docker Engine uses the plugin and proxy, as last checked (runner.Agent).
        self.engine = engine or (lambda: None)
        self._public_key = public_key_from_text(credentials.public_key)
        self._etag: str | None = None
        self._refused_revision = -1  # the newest revision number refused, to wait past it
        self._check_in_lock = asyncio.Lock()
        self._delivered: dict[str, Any] | None = None  # the last check-in the server took
        self.check_in_spread = check_in_spread
        self._spread_check_in: asyncio.Task[None] | None = None  # a new revision's, waiting
        self._unsaved: bytes | None = None  # the enforced revision, when the cache lacks it
        self.report_failures = 0  # denial batches that went back in the queue
        self._client = server_client(credentials.token, read_timeout=wait + 15.0, mark=mark)
        current = guard.enforcement.policy
        self.status.revision = current.revision if current else None

    async def aclose(self) -> None:
        if self._spread_check_in is not None:
            self._spread_check_in.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._spread_check_in
        await self._client.aclose()

    async def run(self) -> None:
        """Long-poll until cancelled; never raises for a server problem."""
        failures = 0
        first = True
        while True:
            try:
                await self.poll_once(wait=0 if first else self.wait)
                first = False
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:  # every failure keeps the last verified revision
                failures += 1
                self.status.last_error = _describe(error)
                self._changed()
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** min(failures - 1, 10))
                delay *= random.uniform(0.5, 1.5)  # noqa: S311 (jitter, not a secret)
                log.warning("policy sync failed (%s); retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)

    async def poll_once(self, wait: int) -> bool:
        """One feed request; True when a new revision was applied."""
        current = self.guard.enforcement.policy
        known = max(current.revision if current else -1, self._refused_revision)
        params: dict[str, Any] = {}
        if wait and known >= 0:
            # After a refused revision, wait for a newer one instead of fetching it again.
            params = {"wait": wait, "after": known}
        headers = {"If-None-Match": self._etag} if self._etag and current is not None else {}
        url = api_url(
            self.credentials.server, f"/api/v1/orgs/{self.credentials.organization}/policy"
        )
        response = await self._client.get(url, params=params, headers=headers)
        presented = response.headers.get(KEY_HEADER)
        if response.status_code in (200, 304) and presented not in (
            None,
            self.credentials.public_key,
        ):
            return await self._follow_rotation(str(presented))
        if response.status_code == 304:
            self._reached()
            await self._check_in_if_stale()
            return False
        if response.status_code != 200:
            raise SyncError(f"the server answered {response.status_code}: {_detail(response)}")
        self._reached()
        refused = len(self.status.refused_revisions)
        applied = self.accept(response.content)
        if len(self.status.refused_revisions) > refused:
            await self.check_in()  # owners see the refusal now, not with the next good revision
            raise SyncError(self.status.refused_revisions[-1])  # back off; never a hot loop
        if applied:
            self._etag = response.headers.get("ETag")
        if applied and params:  # the long-poll of every waiting agent ended with this revision
            self._check_in_later(random.uniform(0, self.check_in_spread))  # noqa: S311 (jitter)
        else:
            await self._check_in_if_stale()  # a cleared refusal, the first answer
        return applied

    async def _follow_rotation(self, presented: str) -> bool:
        """The server signs with another key: pin it if endorsements lead to it from the pinned
        key, with its current revision; otherwise refuse and keep the pinned key.

        The cache is written before the credentials: the agent re-reads both when the
        credentials change, and the cached revision must verify against the new pin."""
        server = self.credentials.server
        answer = await self._client.get(api_url(server, "/api/v1/signing-key"))
        if answer.status_code != 200:
            raise SyncError(f"reading the server's signing key: {answer.status_code}")
        try:
            chain = answer.json().get("chain") if isinstance(answer.json(), dict) else None
            follow_chain(self.credentials.public_key, chain, presented)
            key = public_key_from_text(presented)
        except (ValueError, SignatureError) as error:
            self._refused(
                f"the server's signing key {presented[:12]}..., which does not verify against "
                f"the pinned key: {error}"
            )
            raise SyncError(self.status.refused_revisions[-1]) from None
        feed = f"/api/v1/orgs/{self.credentials.organization}/policy"
        response = await self._client.get(api_url(server, feed))
        if response.status_code != 200:
            raise SyncError(f"the server answered {response.status_code}: {_detail(response)}")
        pinned, pinned_key = self.credentials.public_key, self._public_key
        self._public_key = key
        applied = self.accept(response.content, save_same=True)
        if not applied and self.status.refusal is not None:
            self._public_key = pinned_key
            raise SyncError(self.status.refused_revisions[-1])
        self.credentials = dataclasses.replace(self.credentials, public_key=presented)
        self.state.save_credentials(self.credentials)
        log.warning(
            "the server rotated its signing key: %s... endorsed by the pinned %s..., now pinned",
            presented[:12],
            pinned[:12],
        )
        return applied

    def accept(self, raw: bytes, save_same: bool = False) -> bool:
        """Verify and apply one signed revision; refuse (and keep the old one) when it is bad."""
        try:
            signed = SignedPolicy.from_json(raw)
        except InvalidPolicy as error:
            self._refused(f"a document that is not a signed policy: {error}")
            return False
        try:
            policy = verify(signed, self._public_key)
        except SignatureError as error:
            self._refused(
                f"revision {signed.policy.revision}, which does not verify against the pinned "
                f"key: {error}",
                signed.policy.revision,
            )
            return False
        if policy.organization != self.credentials.organization:
            self._refused(f"a policy of organization '{policy.organization}'", policy.revision)
            return False
        current = self.guard.enforcement.policy
        if current is not None and policy.revision < current.revision:
            self._refused(f"revision {policy.revision}, older than {current.revision}")
            return False
        self.status.refusal = None  # verified, current or newer: nothing refused any more
        if current is not None and policy.revision == current.revision:
            if save_same:  # the same revision signed by a rotated key
                self.state.save_policy(raw)
            return False
        self._apply(policy)
        self._cache(raw)
        log.info("enforcing revision %d of '%s'", policy.revision, policy.organization)
        return True

    def _apply(self, policy: Policy) -> None:
        previous = self.guard.enforcement
        self.guard.update(
            Enforcement(
                mode="signed-in",
                policy=policy,
                organization=previous.organization,
                required_orgs=previous.required_orgs,
                dashboard_url=previous.dashboard_url,
                source=previous.source,
            )
        )
        self.status.revision = policy.revision
        self._changed()

    def _refused(self, what: str, revision: int | None = None) -> None:
        if revision is not None:
            self._refused_revision = max(self._refused_revision, revision)
        message = f"refused {what}; still enforcing revision {self.status.revision}"
        log.error("policy sync %s", message)
        self.status.refused_revisions.append(message)
        self.status.refusal = message
        self.status.last_error = message
        self._changed()

    def _reached(self) -> None:
        self.status.last_sync = time.time()
        self.status.last_error = None
        if self._unsaved is not None:
            self._cache(self._unsaved)
        self._changed()

    def _cache(self, raw: bytes) -> None:
        """Write the enforced revision to the cache; on failure keep it to retry, and say so."""
        try:
            self.state.save_policy(raw)
        except (ConfigError, OSError) as error:
            reason = error.strerror if isinstance(error, OSError) else str(error)
            cached = self._cached_revision()
            self._unsaved = raw
            self.status.cache_error = (
                f"cannot write the policy cache {self.state.policy_path}: {reason}; enforcing "
                f"revision {self.status.revision} from memory, a restart would enforce "
                + (f"revision {cached}" if cached is not None else "nothing cached (fail closed)")
            )
            log.error("%s", self.status.cache_error)
        else:
            if self._unsaved is not None:
                log.info("the policy cache is written again (revision %s)", self.status.revision)
            self._unsaved = None
            self.status.cache_error = None
        self._changed()

    def _cached_revision(self) -> int | None:
        cached = self.state.cached_policy(self.credentials)
        return cached.revision if cached else None

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _check_in_body(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "revision": self.status.revision or 0,  # 0: nothing verified yet
            "hostname": socket.gethostname(),
            "refusal": self.status.refusal[:REFUSAL_LIMIT] if self.status.refusal else None,
            "engine": self.engine(),  # None: no Docker Engine answered
        }

    async def _check_in_if_stale(self) -> None:
        """Check in when the server has not yet been told what is true now (nothing sent yet,
        or a check-in that failed while the server was away), unless one is on its way."""
        if self._check_in_body() != self._delivered and not self.check_in_pending:
            await self.check_in()

    @property
    def check_in_pending(self) -> bool:
        """Whether a new revision's check-in is waiting for its turn (CHECK_IN_SPREAD)."""
        return self._spread_check_in is not None and not self._spread_check_in.done()

    def _check_in_later(self, delay: float) -> None:
        """Check in after `delay` seconds (what is true then); one waits at a time."""
        if self.check_in_pending:
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            await self.check_in()

        self._spread_check_in = asyncio.create_task(later(), name="regward-agent-check-in")

    async def check_in(self) -> None:
        """Tell the server what this machine enforces now. One at a time, each body read when
        its turn comes, so an older state never lands after a newer one."""
        url = api_url(
            self.credentials.server,
            f"/api/v1/orgs/{self.credentials.organization}/devices/check-in",
        )
        async with self._check_in_lock:
            body = self._check_in_body()
            try:
                response = await self._client.post(url, json=body)
                if response.status_code >= 400:
                    log.warning("check-in refused: %s %s", response.status_code, _detail(response))
                else:
                    self._delivered = body
            except httpx.HTTPError as error:
                log.warning("check-in failed: %s", error)

    async def report_denials(self, interval: float = REPORT_INTERVAL) -> None:
        """Send queued denials in batches until cancelled; a failed batch goes back in the queue."""
        url = api_url(
            self.credentials.server, f"/api/v1/orgs/{self.credentials.organization}/denials"
        )
        while True:
            await asyncio.sleep(interval)
            batch = self.guard.denials.drain()
            if not batch:
                continue
            body = {"denials": [self._denial(report) for report in batch]}
            try:
                response = await self._client.post(url, json=body)
                if response.status_code >= 500:
                    raise SyncError(f"the server answered {response.status_code}")
                if response.status_code >= 400:
                    log.warning("denial report refused: %s", _detail(response))
            except (httpx.HTTPError, SyncError) as error:
                log.warning("denial report failed (%s); keeping %d reports", error, len(batch))
                self.guard.denials.requeue(batch)
                self.report_failures += 1
            except asyncio.CancelledError:
                self.guard.denials.requeue(batch)  # stopping mid-report loses nothing
                raise

    def _denial(self, report: DenialReport) -> dict[str, Any]:
        """The server's denial shape: it knows pull and push; a refused proxy connection is
        an attempt to pull from that host, an unreadable request is named as such."""
        action = report.action if report.action in ("pull", "push") else "pull"
        reference = report.target or "(unreadable request)"
        reason = report.reason
        if report.source != "authz":  # say which enforcement point refused, and for whom
            reason += f" ({', '.join(filter(None, (report.source, report.origin)))})"
        return {
            "agent_id": self.agent_id,
            "reference": reference[:512],
            "action": action,
            "revision": report.revision,
            "reason": reason[:1000],
            "occurred_at": datetime.fromtimestamp(report.time, UTC).isoformat(),
        }


class SyncError(Exception):
    pass


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])[:200]
    return str(body)[:200]


def _describe(error: Exception) -> str:
    if isinstance(error, httpx.HTTPError):
        return f"cannot reach the server: {error!s}" or type(error).__name__
    return str(error) or type(error).__name__
