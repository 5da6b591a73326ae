"""Removing garbage until the stores confirm it is gone.

Garbage rows are written by `Repository` in the same transaction as the change that made something
garbage (see `lifecycle.documents`). Removing it is idempotent — delete a parse version's chunks by
filter, drop a collection, delete a blob — so a row is simply retried until a pass finds nothing left:

- every pass removes what it finds and records how much (`removed`);
- a row is dropped only when a pass at least `settle_s` after the row was written found nothing to
  remove: a straggler (a worker fenced out mid-index, a collection re-created by a task that had not
  seen the delete yet) has had that long to write, and what it wrote was removed by the passes before;
- a store that is down fails the pass; the row is retried with backoff, across restarts (it is in the
  database), and search never showed it meanwhile.

The janitor runs `collect` (one worker at a time, under its lease); a worker that just failed or
cancelled a task also runs it for that one document, so its chunks go at once rather than at the next
janitor round.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from common.db import GarbageKind, GarbageRecord
from common.dependencies import dependency_of
from common.errors import DocvecError, InvalidRequest
from common.runtime import Core
from vectordb.chunkstore import ChunkStore

log = logging.getLogger(__name__)

MAX_RETRY_S = 300.0
RECHECK_S = 5.0  # a row that removed something, or is not settled yet, is looked at again this soon
BATCH = 200


@dataclass(frozen=True, slots=True)
class CollectReport:
    """One `collect` call: rows looked at, rows confirmed and dropped, things removed, passes that failed."""

    looked_at: int = 0
    confirmed: int = 0
    removed: int = 0
    failed: int = 0


class GarbageCollector:
    """Removes recorded garbage from the vector store and the object store."""

    def __init__(self, core: Core, chunks: ChunkStore, *, settle_s: float | None = None) -> None:
        self._core = core
        self._chunks = chunks
        self._settle_s = core.settings.worker.garbage_settle_s if settle_s is None else settle_s

    async def collect(self, *, document_id: str | None = None, limit: int = BATCH) -> CollectReport:
        """One pass over the garbage that is due (or over one document's, due or not)."""
        repo = self._core.repo
        if document_id is None:
            rows = await asyncio.to_thread(repo.garbage.due, limit)
        else:
            rows = await asyncio.to_thread(repo.garbage.due, limit, document_id=document_id, any_time=True)
        confirmed = removed = failed = 0
        for row in rows:
            outcome = await self._pass(row)
            if outcome is None:
                failed += 1
                continue
            removed += outcome
            now = time.time()
            if outcome == 0 and now - row.created_at >= self._settle_s:
                await asyncio.to_thread(repo.garbage.drop, row.id)
                confirmed += 1
            else:
                retry_at = max(now + RECHECK_S, row.created_at + self._settle_s)
                await asyncio.to_thread(repo.garbage.tried, row.id, removed=outcome, error=None, retry_at=retry_at)
        if removed or failed:
            log.info("garbage: removed %d things in %d rows (%d confirmed, %d failed)", removed, len(rows),
                     confirmed, failed)
        return CollectReport(len(rows), confirmed, removed, failed)

    async def _pass(self, row: GarbageRecord) -> int | None:
        """Remove what `row` names; how many things went (None: the store failed, retried later)."""
        try:
            return await self._remove(row)
        except DocvecError as exc:
            if dependency_of(exc) is None:
                log.error("garbage %s (%s %s) cannot be removed: %s", row.id, row.kind, row.reason, exc.message)
            backoff_s = min(MAX_RETRY_S, RECHECK_S * 2 ** min(row.attempts, 8))
            await asyncio.to_thread(self._core.repo.garbage.tried, row.id, removed=0, error=exc.message[:2000],
                                    retry_at=time.time() + backoff_s)
            return None

    async def _remove(self, row: GarbageRecord) -> int:
        if row.kind is GarbageKind.CHUNKS:
            if not row.collection or not row.document_id:
                raise InvalidRequest(f"chunk garbage {row.id} names no collection or document")
            return await self._chunks.delete_document(row.collection, row.document_id, only_version=row.parse_version)
        if row.kind is GarbageKind.COLLECTION:
            if not row.collection:
                raise InvalidRequest(f"collection garbage {row.id} names no collection")
            existed = await self._chunks.has_collection(row.collection)
            if existed:
                await self._chunks.drop_collection(row.collection)
            return int(existed)
        if not row.blob_key:
            raise InvalidRequest(f"blob garbage {row.id} names no blob")
        existed = await self._core.store.exists(row.blob_key)
        if existed:
            await self._core.store.delete(row.blob_key)
        return int(existed)
