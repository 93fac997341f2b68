"""The policy feed: the newest signed revision of each organization, cached per process.

Revisions are immutable, so a cached document stays right until a newer revision exists; when a
long-poll is woken for revision N, only the first waiter reads the database, the rest share it.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool

from regward.server.db import Database
from regward.server.errors import NotFound
from regward.server.services import orgs, registry_access


@dataclass(frozen=True)
class FeedDocument:
    organization: str
    revision: int
    body: bytes  # SignedPolicy JSON, exactly as signed and stored

    @property
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
        self._locks: dict[str, asyncio.Lock] = {}

    def remember(self, document: FeedDocument) -> None:
        cached = self._documents.get(document.organization)
        if cached is None or cached.revision < document.revision:
            self._documents[document.organization] = document

    async def at_least(self, organization: str, revision: int) -> FeedDocument:
        """The newest document, read from the database unless the cache holds `revision`+."""
        cached = self._documents.get(organization)
        if cached is not None and cached.revision >= revision:
            return cached
        lock = self._locks.setdefault(organization, asyncio.Lock())
        async with lock:
            cached = self._documents.get(organization)
            if cached is not None and cached.revision >= revision:
                return cached
            document = await run_in_threadpool(load, self._database, organization)
            self.remember(document)
            return self._documents[organization]
