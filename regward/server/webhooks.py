"""The webhook delivery queue: one named background task per server process.

Deliveries are rows (services.webhooks), queued in the transaction of the change they tell
about, so the request that caused an event never waits for a receiver, and a restart loses
nothing: the queue starts by sending whatever is due. The task wakes when a session that
queued deliveries commits in this process, when the next retry is due, and at least every
`POLL_SECONDS` (deliveries queued by another process on the same PostgreSQL). Several
processes share one queue: a delivery is leased to one sender at a time (services.webhooks
`claim`), and a sender that outlived its lease records nothing (`finish`).

Each attempt is one POST of the stored body with

    Content-Type: application/json
    X-Regward-Event: revision.applied
    X-Regward-Delivery: 42
    X-Regward-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's secret>

A 2xx answer is delivered. Anything else (another status, a refused connection, no whole
answer within `TIMEOUT_SECONDS`, a name resolving to a link-local address) is retried after
`backoff` (base, 2*base, ... up to the cap) until the attempts run out. Redirects are not
followed and the receiver's body is never read into the log: an owner learns a status code
and an error class, not the contents of whatever the URL points at.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from regward import __version__
from regward.server.db import Database, WriteTurn
from regward.server.models import utcnow
from regward.server.services import webhooks
from regward.server.services.webhooks import Claimed, Outcome
from regward.server.settings import Settings

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
POLL_SECONDS = 5.0
TIMEOUT_SECONDS = 10.0
LEASE = timedelta(seconds=60)  # longer than one attempt can take
BATCH = 16


class DeliveryQueue:
    def __init__(self, database: Database, settings: Settings, turn: WriteTurn) -> None:
        self._database = database
        self._settings = settings
        self._turn = turn
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._in_flight: dict[int, Claimed] = {}
        self._sending: set[asyncio.Task[Outcome]] = set()
        self._stopping = False

    def install(self) -> None:
        """Wake the queue when a session that queued deliveries commits (call once)."""

        def after_commit(session: Session) -> None:
            if session.info.pop(webhooks.QUEUED, False):
                self.wake()

        def forget(session: Session, *_args: Any) -> None:
            session.info.pop(webhooks.QUEUED, None)

        for sessions in (self._database.write_sessions, self._database.read_sessions):
            event.listen(sessions, "after_commit", after_commit)
            event.listen(sessions, "after_rollback", forget)

    def wake(self) -> None:
        """Look for due deliveries now (any thread)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="regward-webhooks")

    async def stop(self) -> None:
        """Stop after the database step under way (never cut short: its connection would be
        left to the garbage collector); sends under way are cut short and given back."""
        self._stopping = True
        self._wake.set()
        for sending in list(self._sending):
            sending.cancel()
        if self._task is not None:
            await self._task
            self._task = None
        if self._in_flight:  # cut short: the next start (here or elsewhere) sends them
            await self._write(webhooks.release, list(self._in_flight.values()))
            self._in_flight.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._loop = None

    def _http(self) -> httpx.AsyncClient:
        """The client deliveries are sent with, made for the first one: httpx is 6 MB of
        memory that a server without webhooks never needs."""
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=TIMEOUT_SECONDS,
                follow_redirects=False,
                trust_env=False,  # a webhook goes where its owner said, not through a proxy
                headers={"User-Agent": f"regward-webhooks/{__version__}"},
            )
        return self._client

    def _in_session(self, write: bool, action: Callable[..., Any], *args: Any) -> Any:
        with self._database.session(write=write) as session:
            return action(session, *args)

    async def _read(self, action: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(self._in_session, False, action, *args)

    async def _write(self, action: Callable[..., Any], *args: Any) -> Any:
        """`action(session, *args)` in a write session, in this process's write turn (on
        SQLite, waiting for it among the routes' writers, not in SQLite's busy handler)."""
        return await self._turn.run(functools.partial(self._in_session, True, action, *args))

    async def _run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                # A read first: a server without due deliveries never writes for them.
                due = await self._read(webhooks.next_due)
                if due is not None and due <= utcnow():
                    claimed = await self._write(webhooks.claim, LEASE, BATCH)
                    await asyncio.gather(*(self._attempt(item) for item in claimed))
                    continue  # more may be due (or another process took these)
            except Exception:
                # Never let the queue die: the database may be back in a moment.
                log.exception("webhook deliveries: the queue failed; retrying")
                due = None
            pause = POLL_SECONDS
            if due is not None:
                pause = min(pause, max(0.0, (due - utcnow()).total_seconds()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=pause)

    async def _attempt(self, item: Claimed) -> None:
        self._in_flight[item.id] = item
        sending = asyncio.create_task(self._send(item), name=f"regward-webhook-{item.id}")
        self._sending.add(sending)
        try:
            outcome = await sending
        except asyncio.CancelledError:
            return  # stopping: stop() gives the delivery back
        finally:
            self._sending.discard(sending)
        settings = self._settings
        delivery = await self._write(
            lambda session: webhooks.finish(
                session,
                item,
                outcome,
                max_attempts=settings.webhook_attempts,
                base=settings.webhook_backoff,
                cap=settings.webhook_backoff_max,
            ),
        )
        self._in_flight.pop(item.id, None)
        if delivery is not None and not outcome.delivered:
            log.info(
                "webhook delivery %s (%s) attempt %s: %s",
                item.id,
                item.event,
                delivery.attempts,
                outcome.error or f"status {outcome.response_code}",
            )

    async def _send(self, item: Claimed) -> Outcome:
        if self._stopping:
            return Outcome(None, "the server is stopping")
        # One deadline for the whole attempt, well inside the lease: httpx's timeouts are per
        # read, and a receiver trickling its answer a byte at a time would outlive the lease.
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                return await self._post(item)
        except TimeoutError:
            return Outcome(None, f"no answer within {TIMEOUT_SECONDS:g} s")

    async def _post(self, item: Claimed) -> Outcome:
        import httpx

        client = self._http()
        refused = await _refused_destination(item.url)
        if refused:
            return Outcome(None, refused)
        headers = {
            "Content-Type": "application/json",
            "X-Regward-Event": item.event,
            "X-Regward-Delivery": str(item.id),
            "X-Regward-Signature": webhooks.signature(item.secret, item.body),
        }
        try:
            async with client.stream(
                "POST", item.url, content=item.body, headers=headers
            ) as answer:
                code = answer.status_code
        except httpx.TimeoutException:
            return Outcome(None, f"no answer within {TIMEOUT_SECONDS:g} s")
        except httpx.HTTPError as error:
            return Outcome(
                None, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            )
        if 200 <= code < 300:
            return Outcome(code, None)
        return Outcome(code, f"the receiver answered {code}")


async def _refused_destination(url: str) -> str | None:
    """Why the host of `url` may not be sent to (a name resolving to a link-local address),
    or None. A literal address was checked when the URL was set."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if not _is_name(host):
        return webhooks.refused_address(host)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(
            host, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except OSError as error:
        return f"cannot resolve {host!r}: {error.strerror or error}"
    for *_rest, address in found:
        why = webhooks.refused_address(str(address[0]))
        if why:
            return f"{host!r} resolves to {address[0]}, {why}"
    return None


def _is_name(host: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host.strip("[]"))
    except OSError:
        return True
    return False
