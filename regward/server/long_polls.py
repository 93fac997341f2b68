"""The policy feed's answers, and its long-polls held as data rather than as waiting requests.

    poll = Poll("acme", token, after=7, wait=30.0, if_none_match=None, sink=sink)
    answer = await server.long_polls.open(poll)  # an Answer now, or None: `sink` gets it later

Opening checks the token (batched with other polls' checks: `FeedAccess`) and answers at once
when the client is behind, names an older ETag, or asked not to wait. Otherwise the poll is
parked: a small object in the notifier's set for its organization, with a timer; no task, no
coroutine. It ends in one of three ways, each with a fresh check of its token (a credential
revoked meanwhile gets 401, never the policy):

- an apply wakes its organization: the newest document is read once for all its parked polls,
  and each gets 200 with it (or stays parked, should the document not be newer than its own);
- its wait runs out: 304;
- its client goes away (`drop`): the answer goes nowhere, but is logged like the others.

Errors reach the sink as the exceptions they are (`Sink.failed`), as a route would raise them.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from typing import TYPE_CHECKING, Protocol

from regward.server.errors import ServiceError
from regward.server.feed import FeedDocument, Grants
from regward.server.observe import held
from regward.server.services.auth import FeedGrant

if TYPE_CHECKING:
    from regward.server.runtime import Server

TICK = 0.25
"""Seconds: a wait ends within this long after its time (one timer for every poll)."""
Answer = tuple[int, dict[str, str], bytes]
"""Status, headers (lower-case names) and body of a feed answer."""


class Sink(Protocol):
    """Where a poll's answer goes: exactly one of these is called, once."""

    def answered(self, poll: Poll, answer: Answer) -> None: ...

    def failed(self, poll: Poll, error: Exception) -> None: ...


class Poll:
    """One feed request: what it asked for, and while it waits, what it holds."""

    __slots__ = (
        "after",
        "document",
        "expiring",
        "if_none_match",
        "organization",
        "sink",
        "token",
        "token_id",
        "wait",
    )

    def __init__(
        self,
        organization: str,
        token: str | None,
        after: int | None,
        wait: float,
        if_none_match: str | None,
        sink: Sink,
    ) -> None:
        self.organization = organization
        self.token = token
        self.after = after
        self.wait = wait
        self.if_none_match = if_none_match
        self.sink = sink
        self.token_id: int | None = None  # the caller, for the access log
        self.document: FeedDocument | None = None  # the newest one it has seen
        self.expiring: set[Poll] | None = None  # while it waits: those ending when it does


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return etag in tags or "*" in tags


class LongPolls:
    """Opens, parks and answers the feed's polls for one server process."""

    def __init__(self, server: Server) -> None:
        self._server = server
        self._releases: set[asyncio.Task[None]] = set()
        # Waits end in quarter seconds: one timer for all, not one each (about 700 bytes).
        self._expiring: dict[int, set[Poll]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._answers: dict[tuple[FeedDocument, bool, str], Answer] = {}
        server.notifier.on_release(self._release)

    async def open(self, poll: Poll) -> Answer | None:
        """Check the token and answer now, or park `poll` (None) and answer its sink later.

        Raises ServiceError (401/404) and database errors like every other route."""
        server = self._server
        org = poll.organization
        grant = await server.feed_access.check(org, poll.token)
        _organization_id, revision, poll.token_id = grant.unwrap()
        document = server.feed.get(org, revision)
        if document is None:
            document = await server.feed.at_least(org, revision)
        if poll.after is None:
            if not matches(poll.if_none_match, document.etag):
                return self._answer(document, modified=True)
            poll.after = document.revision
        if document.revision > poll.after:
            return self._answer(document, modified=True)
        wait = min(poll.wait, server.settings.max_wait)
        if wait <= 0:
            return self._answer(document, modified=False)
        # The organization's name as the document holds it: one string for all its polls.
        poll.organization, poll.document, poll.if_none_match = document.organization, document, None
        self._expire_at(poll, time.monotonic() + wait)
        if server.notifier.latest(org) > poll.after:
            self._release(org, [poll])  # applied while this poll was being opened
        else:
            server.notifier.park(org, poll)
        return None

    def _expire_at(self, poll: Poll, deadline: float) -> None:
        poll.expiring = self._expiring.setdefault(math.ceil(deadline / TICK), set())
        poll.expiring.add(poll)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(TICK, self._sweep)

    def _sweep(self) -> None:
        """End the waits whose time has come; again in a `TICK` while any poll waits."""
        now = time.monotonic() / TICK
        ended: list[Poll] = []
        for tick in [tick for tick in self._expiring if tick <= now]:
            for poll in self._expiring.pop(tick):
                poll.expiring = None
                ended.append(poll)
        if ended:
            self._finish(ended, modified=False)
        self._sweeper = (
            asyncio.get_running_loop().call_later(TICK, self._sweep) if self._expiring else None
        )

    def drop(self, poll: Poll) -> None:
        """The client went away: end the wait now (no-op unless `poll` is waiting)."""
        if self._stop(poll):
            self._finish([poll], modified=False)

    def _release(self, organization: str, polls: list[Poll]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._reread(organization, polls), name=f"regward-feed-release-{organization}"
        )
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _reread(self, organization: str, polls: list[Poll]) -> None:
        """One read of the newest document for all the polls an announcement woke."""
        server = self._server
        oldest = min(poll.after or 0 for poll in polls)
        wanted = max(server.notifier.latest(organization), oldest + 1)
        try:
            document = await server.feed.at_least(organization, wanted)
        except Exception as error:
            for poll in polls:
                if self._stop(poll):
                    poll.sink.failed(poll, error)
            return
        ended: list[Poll] = []
        for poll in polls:
            if poll.expiring is None:
                continue  # its wait ended meanwhile
            if document.revision > (poll.after or 0):
                poll.document = document
                self._stop(poll)
                ended.append(poll)
            else:  # woken to re-read (e.g. after a reconnect) and nothing newer: wait on
                server.notifier.park(organization, poll)
        if ended:
            self._finish(ended, modified=True)

    def _stop(self, poll: Poll) -> bool:
        """Take `poll` off its deadline; False when it was not waiting."""
        if poll.expiring is None:
            return False
        poll.expiring.discard(poll)  # an empty set goes at its sweep
        poll.expiring = None
        return True

    def _finish(self, polls: list[Poll], *, modified: bool) -> None:
        """Check the tokens of `polls` (no longer waiting) again, in one batch; then answer
        them all together."""
        notifier = self._server.notifier
        for poll in polls:
            notifier.unpark(poll.organization, poll)
        checked = self._server.feed_access.submit_all(
            [(poll.organization, poll.token) for poll in polls]
        )
        checked.add_done_callback(functools.partial(self._checked, polls, modified))

    def _checked(self, polls: list[Poll], modified: bool, checked: asyncio.Future[Grants]) -> None:
        if checked.cancelled():
            return  # shutting down
        error = checked.exception()
        with held():  # thousands of answers: their bookkeeping once, after the writes
            if isinstance(error, Exception):
                for poll in polls:
                    poll.sink.failed(poll, error)
                return
            grants = checked.result()
            for poll in polls:
                self._deliver(poll, modified, grants[poll.organization, poll.token])

    def _deliver(self, poll: Poll, modified: bool, grant: FeedGrant) -> None:
        if grant.token_id is not None:
            poll.token_id = grant.token_id
        try:
            grant.unwrap()
        except ServiceError as refused:
            poll.sink.failed(poll, refused)
            return
        if poll.document is None:
            raise RuntimeError("a poll waited without the document it has")  # open() sets it
        poll.sink.answered(poll, self._answer(poll.document, modified=modified))

    def _answer(self, document: FeedDocument, *, modified: bool) -> Answer:
        """Every answer names the key that signs (`X-Regward-Signing-Key`), so agents notice a
        rotation even while the revision stays the same. One answer object per document, kind
        and key, shared by every poll given it (sinks never change it)."""
        key = (document, modified, self._server.public_key)
        answer = self._answers.get(key)
        if answer is None:
            if len(self._answers) >= 8:
                self._answers.clear()
            answer = self._answers[key] = self._build(document, modified=modified)
        return answer

    def _build(self, document: FeedDocument, *, modified: bool) -> Answer:
        headers = {
            "etag": document.etag,
            "cache-control": "no-cache",
            "x-regward-revision": str(document.revision),
        }
        if modified:
            headers["content-type"] = "application/json"
        headers["x-regward-signing-key"] = self._server.public_key
        return (200, headers, document.body) if modified else (304, headers, b"")
