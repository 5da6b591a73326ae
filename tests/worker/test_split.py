"""Large PDFs become page-range tasks that several workers share (real redis-server, real PDFs)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np

from common.runtime import open_core
from common.settings import Settings
from lifecycle import documents as ingest
from tests.common.docgen import make_pdf
from tests.conftest import make_settings
from tests.fakes import HashEmbedder
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from vectordb.chunkstore import ChunkStore

PAGES = 23
PER_TASK = 6  # -> 4 parts: 1-6, 7-12, 13-18, 19-23


def _pages(n: int, words: int = 40) -> list[str]:
    return [
        f"Page {p} marker{p} " + " ".join(f"topic{p} word{w}" for w in range(words))
        for p in range(1, n + 1)
    ]


def _settings(tmp_path: Path, redis_url: str, **limits: int) -> Settings:
    base = make_settings(tmp_path / "data", redis_url)
    chunking = base.chunking.model_copy(update={"pdf_pages_per_task": PER_TASK})
    return base.model_copy(update={"chunking": chunking, "limits": base.limits.model_copy(update=limits)})


class GateEmbedder(HashEmbedder):
    """Holds the first part's embedding until another part is being embedded: proves two workers
    ran parts of one document at the same time (each worker runs one task at a time)."""

    def __init__(self) -> None:
        super().__init__()
        self.other_part_started = threading.Event()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if any("marker1 " in t for t in texts):
            self.other_part_started.wait(timeout=20)
        elif any("marker" in t for t in texts):
            self.other_part_started.set()
        return super().encode(texts, batch_size)


async def _part_tasks(core: Any, document_id: str) -> list[Any]:
    return await asyncio.to_thread(core.repo.tasks.of_document, document_id)


async def test_large_pdf_is_shared_by_two_workers(tmp_path: Path, redis_url: str, vectors: Any) -> None:
    embedder = GateEmbedder()
    async with open_core(_settings(tmp_path, redis_url), embedder=embedder) as core:
        kb = await ingest.create_kb(core, "big", tenant="default")
        document, task = await submit_document(core, kb, "big.pdf", make_pdf(_pages(PAGES)))
        async with running_worker(core, vectors, consumer="w-a", concurrency=1), \
                running_worker(core, vectors, consumer="w-b", concurrency=1):
            first = await wait_for_status(core, task.id)
            parts = await _part_tasks(core, document.id)
            for part in parts:
                await wait_for_status(core, part.id)
        parts = await _part_tasks(core, document.id)
        assert embedder.other_part_started.is_set(), "no second worker embedded a part while the first was busy"
        assert first.status == "done", first.error
        assert sorted((p.part, p.page_from, p.page_to) for p in parts) == [
            (0, 1, 6), (1, 7, 12), (2, 13, 18), (3, 19, 23)
        ]
        assert {p.status for p in parts} == {"done"}
        assert {p.worker for p in parts} == {"w-a", "w-b"}
        doc = await asyncio.to_thread(core.repo.documents.get, document.id)
        assert doc.status == "done" and doc.parse_version == task.parse_version
        assert doc.chunk_count == sum(p.chunk_count for p in parts) > 0
        chunks = ChunkStore(vectors)
        assert await chunks.count_document(kb.collection, document.id) == doc.chunk_count
        hits = await chunks.search(kb.collection, embedder.encode(["marker23 topic23"], 1)[0], 3)
        assert "topic23" in hits[0].text and 19 <= (hits[0].page or 0) <= PAGES  # the last part's pages


async def test_a_failing_part_fails_the_document_and_leaves_no_chunks(
    tmp_path: Path, redis_url: str, vectors: Any
) -> None:
    pages = _pages(PAGES, words=8)
    pages[14] = " ".join(f"filler{w} text{w}" for w in range(3000))  # part 3 (pages 13-18) gets too many chunks
    settings = _settings(tmp_path, redis_url, max_chunks_per_document=30)
    async with open_core(settings, embedder=HashEmbedder()) as core:
        kb = await ingest.create_kb(core, "big", tenant="default")
        document, task = await submit_document(core, kb, "big.pdf", make_pdf(pages))
        async with running_worker(core, vectors, concurrency=2):
            await wait_for_status(core, task.id)
            for part in await _part_tasks(core, document.id):
                await wait_for_status(core, part.id)
            parts = await _part_tasks(core, document.id)
            failed = [p for p in parts if p.status == "failed"]
            assert len(failed) == 1 and failed[0].page_from == 13
            assert "max_chunks_per_document" in (failed[0].error or "")
            assert {p.status for p in parts} <= {"failed", "cancelled", "done"}
            doc = await asyncio.to_thread(core.repo.documents.get, document.id)
            assert doc.status == "failed" and doc.parse_version == 0
            chunks = ChunkStore(vectors)
            # Cancelled parts clean up when their entries are settled; an entry is acked in a later round
            # than the write it follows, so the stream may empty a moment after the chunks are gone (seen
            # under full-suite load).
            async with asyncio.timeout(20):
                while (await chunks.count_document(kb.collection, document.id)
                       or await core.redis.xlen(core.keys.stream_normal)):
                    await asyncio.sleep(0.05)

            # Retrying the failed part re-runs the whole document under a new parse version: it
            # splits again, and the same pages fail again.
            retried = await ingest.retry(core, failed[0].id)
            assert (retried.parts, retried.page_from) == (1, None)
            await wait_for_status(core, retried.id)
            current = [p for p in await _part_tasks(core, document.id) if p.parse_version == retried.parse_version]
            assert len(current) == 4
            settled = [await wait_for_status(core, p.id) for p in current]
            assert [p.page_from for p in settled if p.status == "failed"] == [13]
            async with asyncio.timeout(20):
                while await chunks.count_document(kb.collection, document.id):
                    await asyncio.sleep(0.05)


async def test_cancelling_one_part_cancels_the_document(tmp_path: Path, redis_url: str, vectors: Any) -> None:
    async with open_core(_settings(tmp_path, redis_url), embedder=HashEmbedder()) as core:
        kb = await ingest.create_kb(core, "big", tenant="default")
        document, task = await submit_document(core, kb, "big.pdf", make_pdf(_pages(PAGES)))
        async with running_worker(core, vectors, concurrency=1):
            # The first part runs alone: once it finished, the other parts are queued.
            await wait_for_status(core, task.id)
            queued = [p for p in await _part_tasks(core, document.id) if p.status == "queued"]
            assert queued, "expected parts still queued behind a one-slot worker"
            await ingest.cancel(core, queued[-1].id)
            parts = await _part_tasks(core, document.id)
            for part in parts:
                await wait_for_status(core, part.id)
            parts = await _part_tasks(core, document.id)
            assert "cancelled" in {p.status for p in parts}
            assert {p.status for p in parts} <= {"cancelled", "done"}
            chunks = ChunkStore(vectors)
            async with asyncio.timeout(20):
                while await chunks.count_document(kb.collection, document.id):
                    await asyncio.sleep(0.05)
            doc = await asyncio.to_thread(core.repo.documents.get, document.id)
            assert doc.parse_version == 0 and doc.status == "cancelled"
