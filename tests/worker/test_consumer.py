"""The worker against a real redis-server: the pipeline end to end, errors, cancel, retry, replay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import vectordb
from common.errors import TransientError
from common.runtime import Core, EmbedderLoader
from lifecycle import documents as ingest
from tests.fakes import FaultyTokenizer, HashEmbedder, HashTokenizer
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from vectordb.chunkstore import ChunkStore

PROSE = "\n\n".join(
    f"# Part {i}\n\n" + " ".join(
        f"Sentence {j} of part {i} talks about {topic} and why it matters for the reader."
        for j in range(12)
    )
    for i, topic in enumerate(["rivers", "glaciers", "volcanoes", "deserts", "forests"])
)


async def _kb(core: Core) -> Any:
    return await ingest.create_kb(core, "kb1", tenant="default")


async def test_document_goes_through_every_stage(core: Core, vectors: Any) -> None:
    kb = await _kb(core)
    document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id)
    assert done.status == "done", done.error
    assert done.progress == 1.0
    assert set(done.stage_timings) >= {"fetch", "parse", "chunk", "embed", "index"}
    assert "embedded" in done.progress_msg
    doc = await asyncio.to_thread(core.repo.documents.get, document.id)
    assert doc.chunk_count > 5 and doc.format == "markdown"
    chunks = ChunkStore(vectors)
    assert await chunks.count_document(kb.collection, document.id) == doc.chunk_count
    # the stream entry is acked and deleted: nothing pending, nothing left
    pending = await core.redis.xpending(core.keys.stream_normal, core.keys.group)
    assert pending["pending"] == 0
    assert await core.redis.xlen(core.keys.stream_normal) == 0


async def test_bad_input_fails_fast_and_worker_keeps_going(core: Core, vectors: Any) -> None:
    kb = await _kb(core)
    _, bad = await submit_document(core, kb, "notes.txt", bytes(range(256)) * 40)
    _, good = await submit_document(core, kb, "good.txt", PROSE.encode())
    async with running_worker(core, vectors):
        failed = await wait_for_status(core, bad.id)
        done = await wait_for_status(core, good.id)
    assert failed.status == "failed"
    assert failed.attempts == 1, "a PermanentError must not be retried"
    assert "notes.txt" in (failed.error or "")
    assert done.status == "done"


async def test_cancelled_before_pickup_is_acked_without_running(core: Core, vectors: Any) -> None:
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    await ingest.cancel(core, task.id)
    async with running_worker(core, vectors):
        async with asyncio.timeout(10):
            while await core.redis.xlen(core.keys.stream_normal):
                await asyncio.sleep(0.05)
    final = await asyncio.to_thread(core.repo.tasks.get, task.id)
    assert final.status == "cancelled" and final.attempts == 0


class _FlakyStore:
    """Wraps the real store; the first `failures` reads raise a TransientError."""

    def __init__(self, inner: Any, failures: int) -> None:
        self._inner = inner
        self.failures = failures

    async def get(self, key: str) -> bytes:
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("object store unavailable (test)")
        return await self._inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_transient_error_is_retried_then_succeeds(core: Core, vectors: Any) -> None:
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    core.store = _FlakyStore(core.store, failures=1)
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id, ("done", "failed"))
    assert done.status == "done"
    assert done.attempts == 2
    assert "will retry" in done.progress_msg


async def test_gives_up_after_max_attempts_and_dead_letters(core: Core, vectors: Any) -> None:
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    core.store = _FlakyStore(core.store, failures=100)
    async with running_worker(core, vectors):
        failed = await wait_for_status(core, task.id, ("failed",))
    attempts = core.settings.worker.max_attempts
    assert failed.attempts == attempts
    assert failed.error is not None and failed.error.startswith(f"gave up after {attempts} attempts")
    dead = await core.redis.xrange(core.keys.dead_letter)
    assert [fields["task_id"] for _, fields in dead] == [task.id]
    assert await core.redis.xlen(core.keys.stream_normal) == 0


async def test_own_pending_entries_are_replayed_first(core: Core, vectors: Any) -> None:
    """An entry read but never acked (a crash) is run by the same consumer when it comes back."""
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    read = await core.queue.read_new("w-fixed", 1, block_ms=100)
    assert [m.task_id for m in read] == [task.id]
    async with running_worker(core, vectors, consumer="w-fixed"):
        done = await wait_for_status(core, task.id)
    assert done.status == "done"
    assert done.worker == "w-fixed"


async def test_reparse_replaces_chunk_set(core: Core, vectors: Any) -> None:
    kb = await _kb(core)
    document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    chunks = ChunkStore(vectors)
    async with running_worker(core, vectors):
        await wait_for_status(core, task.id)
        first = await chunks.count_document(kb.collection, document.id)
        again = await ingest.enqueue(core, await asyncio.to_thread(core.repo.documents.reparse, document.id))
        done = await wait_for_status(core, again.id)
    assert done.status == "done" and done.parse_version == 2
    assert await chunks.count_document(kb.collection, document.id) == first


async def test_heartbeat_registers_and_deregisters(core: Core, vectors: Any) -> None:
    async with running_worker(core, vectors, consumer="hb-1"):
        async with asyncio.timeout(5):
            while await core.redis.zscore(core.keys.workers, "hb-1") is None:
                await asyncio.sleep(0.05)
        assert await core.redis.get(core.keys.worker("hb-1"))
    assert await core.redis.zscore(core.keys.workers, "hb-1") is None
    assert await core.redis.get(core.keys.worker("hb-1")) is None


async def test_replays_more_pending_entries_than_it_has_slots(core: Core, vectors: Any) -> None:
    kb = await _kb(core)
    tasks = [(await submit_document(core, kb, f"d{i}.md", PROSE.encode()))[1] for i in range(5)]
    assert len(await core.queue.read_new("w-small", 5, block_ms=100)) == 5
    async with running_worker(core, vectors, consumer="w-small", concurrency=2):
        finished = [await wait_for_status(core, t.id) for t in tasks]
    assert [t.status for t in finished] == ["done"] * 5
    pending = await core.redis.xpending(core.keys.stream_normal, core.keys.group)
    assert pending["pending"] == 0


class _SlowCountingEmbedder(HashEmbedder):
    """Sleeps per encode call and counts calls (weighted vectors make <= 2 calls per batch:
    the batch's distinct titles, then its contents)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.calls = 0

    def encode(self, texts: list[str], batch_size: int) -> Any:
        import time

        time.sleep(self.delay_s)
        self.calls += 1
        return super().encode(texts, batch_size)


@pytest.mark.parametrize("parallel", [1, 2])
async def test_cancel_stops_a_running_task_within_one_batch_and_leaves_no_chunks(
        core: Core, vectors: Any, parallel: int) -> None:
    from common.runtime import EmbedderLoader

    embedder = _SlowCountingEmbedder(delay_s=0.25)  # long next to the cancel-flag latency, so a bound holds
    core.embedders = EmbedderLoader(core.settings.embedding, embedder)
    core.settings.embedding.batch_size = 2
    core.settings.embedding.parallel_batches = parallel
    kb = await _kb(core)
    document, task = await submit_document(core, kb, "geo.md", (PROSE * 3).encode())
    async with running_worker(core, vectors):
        async with asyncio.timeout(30):
            while embedder.calls < 4:
                await asyncio.sleep(0.01)
        calls_at_cancel = embedder.calls
        await ingest.cancel(core, task.id)
        async with asyncio.timeout(30):
            while await core.redis.xlen(core.keys.stream_normal):
                await asyncio.sleep(0.02)
        calls_after = embedder.calls
    final = await asyncio.to_thread(core.repo.tasks.get, task.id)
    assert final.status == "cancelled"
    # The batches running when the cancel lands finish; at most one more starts per model slot.
    assert calls_after - calls_at_cancel <= 2 * parallel, "stopped within one embedding batch per slot"
    assert await ChunkStore(vectors).count_document(kb.collection, document.id) == 0
    assert (await asyncio.to_thread(core.repo.documents.get, document.id)).chunk_count == 0


async def test_cancel_after_chunks_were_indexed_removes_them(core: Core, vectors: Any) -> None:
    """The fence catches a cancel that lands after indexing, before completion."""
    kb = await _kb(core)
    document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    chunks = ChunkStore(vectors)
    original_upsert = chunks.upsert

    class CancellingChunks(ChunkStore):
        async def upsert(self, collection: str, rows: Any, vecs: Any) -> int:
            written = await original_upsert(collection, rows, vecs)
            await ingest.cancel(core, task.id)
            return written

    async with running_worker(core, vectors, chunks=CancellingChunks(vectors)):
        final = await wait_for_status(core, task.id, ("cancelled",))
        async with asyncio.timeout(10):
            while await core.redis.xlen(core.keys.stream_normal):
                await asyncio.sleep(0.02)
    assert final.status == "cancelled"
    assert await chunks.count_document(kb.collection, document.id) == 0


async def test_a_stage_over_its_timeout_fails_the_attempt_with_a_clear_message(core: Core, vectors: Any) -> None:
    from common.runtime import EmbedderLoader

    embedder = _SlowCountingEmbedder(delay_s=0.3)
    core.embedders = EmbedderLoader(core.settings.embedding, embedder)
    core.settings.worker.embed_timeout_s = 0.1
    core.settings.worker.max_attempts = 2
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    async with running_worker(core, vectors):
        failed = await wait_for_status(core, task.id, ("failed",), timeout_s=30)
    assert failed.attempts == 2
    assert failed.error == "gave up after 2 attempts; last error: stage embed exceeded its timeout of 0.1s"


class _ConcurrencyProbe(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        import threading

        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def encode(self, texts: list[str], batch_size: int) -> Any:
        import time

        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            time.sleep(0.02)
            return super().encode(texts, batch_size)
        finally:
            with self._lock:
                self.active -= 1


async def test_per_stage_semaphore_bounds_concurrent_embeds(core: Core, vectors: Any) -> None:
    from common.runtime import EmbedderLoader

    probe = _ConcurrencyProbe()
    core.embedders = EmbedderLoader(core.settings.embedding, probe)
    core.settings.embedding.batch_size = 4
    core.settings.embedding.parallel_batches = 1  # one model batch at a time within a window too
    assert core.settings.worker.max_concurrent_embeds == 1
    kb = await _kb(core)
    tasks = [(await submit_document(core, kb, f"d{i}.md", PROSE.encode()))[1] for i in range(4)]
    async with running_worker(core, vectors, concurrency=4):
        done = [await wait_for_status(core, t.id) for t in tasks]
    assert [t.status for t in done] == ["done"] * 4
    assert probe.peak == 1


async def test_the_pipeline_writes_through_milvus_lite(core: Core, tmp_path: Path) -> None:
    """`vectordb.uri: milvus:///...`: the worker and the chunk store work unchanged on Milvus Lite."""
    pytest.importorskip("milvus_lite", reason="pymilvus + milvus-lite come with the dev extras")
    milvus = vectordb.connect(f"milvus://{tmp_path / 'milvus.db'}")
    try:
        kb = await _kb(core)
        document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
        _, second = await submit_document(core, kb, "again.md", PROSE.encode())
        async with running_worker(core, milvus, concurrency=1):  # each task re-ensures the collection
            done = await wait_for_status(core, task.id)
            again = await wait_for_status(core, second.id)
        assert done.status == "done", done.error
        assert again.status == "done", again.error
        doc = await asyncio.to_thread(core.repo.documents.get, document.id)
        assert await ChunkStore(milvus).count_document(kb.collection, document.id) == doc.chunk_count > 0
        hits = await ChunkStore(milvus).search(kb.collection, HashEmbedder().encode(["glaciers"], 1)[0], 3)
        assert hits and "glaciers" in hits[0].text
    finally:
        await milvus.close()


# ---------------------------------------------------------------------------- parsing in child processes


def _parse_in_processes(core: Core, tokenizer: HashTokenizer, **worker: Any) -> None:
    core.embedders = EmbedderLoader(core.settings.embedding, HashEmbedder(chunk_tokenizer=tokenizer))
    core.settings.worker.parse_processes = 1
    for name, value in worker.items():
        setattr(core.settings.worker, name, value)


async def test_a_worker_parses_in_its_child_processes_and_stops_them(core: Core, vectors: Any) -> None:
    _parse_in_processes(core, HashTokenizer())
    kb = await _kb(core)
    document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    async with running_worker(core, vectors) as worker:
        done = await wait_for_status(core, task.id)
        pool = worker._executor._parse_runner.pool
        assert pool is not None
        pids = pool.pids()
    assert done.status == "done", done.error
    assert done.stage_timings["chunk"] > 0, "the chunking seconds measured in the child are the chunk stage's"
    doc = await asyncio.to_thread(core.repo.documents.get, document.id)
    assert await ChunkStore(vectors).count_document(kb.collection, document.id) == doc.chunk_count > 5
    assert len(pids) == 1 and not pool.pids(), "a stopped worker leaves no parse process behind"


async def test_a_parse_process_that_dies_mid_parse_costs_an_attempt_not_the_document(
        core: Core, vectors: Any, tmp_path: Path) -> None:
    _parse_in_processes(core, FaultyTokenizer("exit", trigger="glaciers", marker=str(tmp_path / "died")))
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id)
    assert (tmp_path / "died").exists(), "the child died while it parsed the document"
    assert done.status == "done", done.error
    assert done.attempts == 2


async def test_a_parse_timeout_stops_the_parse_and_the_worker_goes_on(core: Core, vectors: Any) -> None:
    _parse_in_processes(core, FaultyTokenizer("hang", trigger="glaciers"), parse_timeout_s=1.0)
    kb = await _kb(core)
    _, hung = await submit_document(core, kb, "geo.md", PROSE.encode())
    _, fine = await submit_document(core, kb, "other.md", b"# Other\n\nNothing that hangs the parser here.")
    async with running_worker(core, vectors) as worker:
        failed = await wait_for_status(core, hung.id)
        done = await wait_for_status(core, fine.id)
        pool = worker._executor._parse_runner.pool
        assert pool is not None and len(pool.pids()) <= 1
    assert failed.status == "failed" and failed.attempts == 1
    assert "stage parse exceeded its timeout of 1s" in (failed.error or "")
    assert done.status == "done", done.error
