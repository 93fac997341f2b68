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
