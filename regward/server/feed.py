"""The policy feed: the newest signed revision of each organization, cached per process.

Revisions are immutable, so a cached document stays right until a newer revision exists; when a
long-poll is woken for revision N, only the first waiter reads the database, the rest share it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from regward.server.db import Database
from regward.server.errors import NotFound
from regward.server.services import auth, orgs, registry_access
from regward.server.services.tokens import UsageClock


@dataclass(frozen=True)
class FeedDocument:
    organization: str
    revision: int
    body: bytes  # SignedPolicy JSON, exactly as signed and stored

    @functools.cached_property  # every answer names it: hashed once per document
    def etag(self) -> str:
        return f'"{self.revision}-{hashlib.sha256(self.body).hexdigest()[:16]}"'


def load(database: Database, organization: str) -> FeedDocument:
    """Read the newest revision of `organization` (no access check: callers did it)."""
    with database.session() as session:
        org = orgs.get(session, organization)
        revision = registry_access.current(session, org) if org else None
        if org is None or revision is None:
            raise NotFound(f"organization {organization!r} has no applied policy")
        return FeedDocument(organization, revision.revision, revision.signed_json.encode())


class FeedCache:
    def __init__(self, database: Database) -> None:
        self._database = database
        self._documents: dict[str, FeedDocument] = {}
        self._loading: dict[str, asyncio.Future[FeedDocument]] = {}

    def get(self, organization: str, revision: int) -> FeedDocument | None:
        """The cached document of exactly `revision`, if it is the one cached."""
        cached = self._documents.get(organization)
        return cached if cached is not None and cached.revision == revision else None

    def remember(self, document: FeedDocument) -> None:
        cached = self._documents.get(document.organization)
        if cached is None or cached.revision < document.revision:
            self._documents[document.organization] = document

    async def at_least(self, organization: str, revision: int) -> FeedDocument:
        """The newest document, read from the database unless the cache holds `revision`+.

        Waiters woken together share one read, and all resume in the same loop iteration."""
        cached = self._documents.get(organization)
        if cached is not None and cached.revision >= revision:
            return cached
        loading = self._loading.get(organization)
        if loading is None:
            loading = asyncio.create_task(
                run_in_threadpool(load, self._database, organization),
                name=f"regward-feed-load-{organization}",
            )
            self._loading[organization] = loading
            loading.add_done_callback(lambda _f: self._loading.pop(organization, None))
        document = await asyncio.shield(loading)
        self.remember(document)
        return self._documents[organization]


Key = tuple[str, str | None]
"""An organization and a bearer token (None: none given)."""
Grants = dict[Key, auth.FeedGrant]


class FeedAccess:
    """The feed's access checks, batched: checks asked for while a batch runs go into the
    next one, one thread hop and one query per `auth.FEED_BATCH` tokens of an organization.

    An apply wakes every long-poll at once, and each must check its token again before it
    answers (a credential revoked meanwhile gets 401), then polls again and is checked again:
    10,000 agents mean 20,000 checks within a second. One at a time, each is a thread hop and
    a session of its own; batched, the same checks run against the database as they are now,
    never from a cache, so a revocation still counts from the next check on."""

    def __init__(self, database: Database, usage: UsageClock) -> None:
        self._database = database
        self._usage = usage
        self._pending: dict[Key, list[asyncio.Future[auth.FeedGrant]]] = {}
        self._groups: list[asyncio.Future[Grants]] = []  # `submit_all`'s, for the same batch
        self._running: asyncio.Task[None] | None = None

    async def check(self, organization: str, token: str | None) -> auth.FeedGrant:
        return await self.submit(organization, token)

    def submit(self, organization: str, token: str | None) -> asyncio.Future[auth.FeedGrant]:
        """The check, as a future (for callers that are callbacks, not coroutines)."""
        waiter: asyncio.Future[auth.FeedGrant] = asyncio.get_running_loop().create_future()
        self._pending.setdefault((organization, token), []).append(waiter)
        self._start()
        return waiter

    def submit_all(self, keys: Iterable[Key]) -> asyncio.Future[Grants]:
        """Many checks, as one future of their grants by (organization, token): what an apply
        wakes is answered together when the whole batch is checked."""
        waiter: asyncio.Future[Grants] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._pending.setdefault(key, [])
        self._groups.append(waiter)
        self._start()
        return waiter

    def _start(self) -> None:
        if self._running is None:
            self._running = asyncio.create_task(self._drain(), name="regward-feed-access")

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, {}
                groups, self._groups = self._groups, []
                try:
                    grants = await run_in_threadpool(self._check_all, list(batch))
                except BaseException as error:
                    waiting: list[asyncio.Future[Any]] = [*groups]
                    waiting += [waiter for waiters in batch.values() for waiter in waiters]
                    for waiter in waiting:
                        if not waiter.done():
                            waiter.set_exception(error)
                    if not isinstance(error, Exception):
                        raise
                    continue
                for group in groups:
                    if not group.done():
                        group.set_result(grants)
                for key, waiters in batch.items():
                    for waiter in waiters:
                        if not waiter.done():
                            waiter.set_result(grants[key])
        finally:
            self._running = None

    def _check_all(self, keys: list[Key]) -> Grants:
        by_organization: dict[str, list[str | None]] = {}
        for organization, token in keys:
            by_organization.setdefault(organization, []).append(token)
        grants: Grants = {}
        with self._database.session() as session:
            for organization, tokens in by_organization.items():
                found = auth.feed_access_many(session, organization, tokens)
                grants.update({(organization, t): grant for t, grant in found.items()})
        self._usage.used_many(
            grant.token_id for grant in grants.values() if grant.token_id is not None
        )
        return grants
