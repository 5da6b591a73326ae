"""Garbage is removed until the stores confirm: a straggler's late writes go too, a store that is down
is retried, and a row is forgotten only after a pass past the settle window found nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from common.errors import DependencyUnavailable
from common.runtime import Core
from lifecycle import documents as lifecycle
from lifecycle import garbage
from lifecycle.garbage import GarbageCollector
from tests.submit import submit_document
from vectordb.chunkstore import ChunkRow, ChunkStore


def _rows(document_id: str, version: int, n: int) -> list[ChunkRow]:
    return [ChunkRow(document_id=document_id, parse_version=version, ordinal=i, title="t", text=f"text {i}",
                     filename="f.md", page=None, start_char=0, end_char=6, token_count=2) for i in range(n)]


def _vectors(n: int) -> np.ndarray:
    return np.random.default_rng(n).normal(size=(n, 64)).astype(np.float32)


async def _cancelled_document(core: Core, chunks: ChunkStore) -> tuple[Any, Any]:
    kb = await lifecycle.create_kb(core, "kb", tenant="default", chunks=chunks)
    document, task = await submit_document(core, kb, "d.md", b"# x\n\nrivers")
    await lifecycle.cancel(core, task.id)
    return kb, document


async def test_a_straggler_writing_after_the_first_pass_is_removed_before_the_row_is_forgotten(
        core: Core, vectors: Any) -> None:
    chunks = ChunkStore(vectors)
    kb, document = await _cancelled_document(core, chunks)
    await chunks.upsert(kb.collection, _rows(document.id, 1, 3), _vectors(3))
    collector = GarbageCollector(core, chunks, settle_s=0.5)
    first = await collector.collect(document_id=document.id)
    assert (first.removed, first.confirmed) == (3, 0)
    await chunks.upsert(kb.collection, _rows(document.id, 1, 2), _vectors(2))  # a fenced-out worker's last batch
    await asyncio.sleep(0.6)
    second = await collector.collect(document_id=document.id)
    assert (second.removed, second.confirmed) == (2, 0), "removed, but not confirmed yet"
    third = await collector.collect(document_id=document.id)
    assert (third.removed, third.confirmed) == (0, 1)
    assert await chunks.count_document(kb.collection, document.id) == 0
    assert await asyncio.to_thread(core.repo.garbage.stats) == (0, None)


class DownStore(ChunkStore):
    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.down = True

    async def delete_document(self, collection: str, document_id: str, **kwargs: Any) -> int:
        if self.down:
            raise DependencyUnavailable("vector_store", "connection refused (injected)")
        return await super().delete_document(collection, document_id, **kwargs)


async def test_a_store_that_is_down_fails_the_pass_and_the_row_is_retried_with_backoff(
        core: Core, vectors: Any) -> None:
    chunks = DownStore(vectors)
    kb, document = await _cancelled_document(core, chunks)
    await ChunkStore(vectors).upsert(kb.collection, _rows(document.id, 1, 2), _vectors(2))
    collector = GarbageCollector(core, chunks, settle_s=0.0)
    report = await collector.collect()
    assert report.failed == 1 and report.confirmed == 0
    (row,) = await asyncio.to_thread(core.repo.garbage.due, 10, any_time=True)
    assert row.attempts == 1 and "connection refused" in (row.last_error or "")
    assert await collector.collect() == type(report)(), "not due again before its backoff"
    chunks.down = False
    assert (await collector.collect(document_id=document.id)).removed == 2
    assert (await collector.collect(document_id=document.id)).confirmed == 1
    assert await asyncio.to_thread(core.repo.garbage.stats) == (0, None)


async def test_a_deleted_knowledge_base_loses_its_collection_and_files_even_if_a_straggler_recreates_it(
        core: Core, vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(garbage, "RECHECK_S", 0.0)
    chunks = ChunkStore(vectors)
    kb = await lifecycle.create_kb(core, "kb", tenant="default", chunks=chunks)
    document, _ = await submit_document(core, kb, "d.md", b"# x\n\nrivers")
    assert await core.store.exists(document.blob_key)
    await lifecycle.delete_kb(core, kb)
    collector = GarbageCollector(core, chunks, settle_s=0.0)
    first = await collector.collect()
    assert (first.looked_at, first.removed, first.confirmed) == (2, 2, 0)  # the collection and the blob
    await chunks.ensure_collection(kb.collection, kb.dim)  # re-created by a task that missed the delete
    second = await collector.collect()
    assert (second.removed, second.confirmed) == (1, 1)  # dropped again; the blob's row confirmed
    third = await collector.collect()
    assert (third.removed, third.confirmed) == (0, 1)
    assert not await chunks.has_collection(kb.collection) and not await core.store.exists(document.blob_key)
    assert await asyncio.to_thread(core.repo.garbage.stats) == (0, None)


async def test_an_upload_whose_rows_never_came_loses_its_blob(core: Core, vectors: Any) -> None:
    kb = await lifecycle.create_kb(core, "kb", tenant="default")
    await asyncio.to_thread(core.repo.garbage.intend_blob, kb.id, "kb/orphan", commit_within_s=0.0)
    await core.store.put("kb/orphan", b"a crash came before the rows")
    report = await GarbageCollector(core, ChunkStore(vectors), settle_s=0.0).collect()
    assert report.removed == 1 and not await core.store.exists("kb/orphan")
