"""The pipeline stages' own logic (worker/pipeline.py), one stage at a time on small real inputs: a real
database, blob store and embedded vector store; a stub broker for cancel flags and events. Only the split
stage, which enqueues page-range tasks, needs the real redis-server.

The stages composed by the executor: tests/worker/test_executor.py (rules), test_consumer.py (end to end)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from redis import exceptions as redis_errors

from common.chunking import Chunk
from common.db import KbRecord
from common.dependencies import Dependency
from common.errors import Cancelled, CorruptDocument, DependencyUnavailable, LimitExceeded, NotFound, PermanentError
from common.runtime import Core, EmbedderLoader
from tests.common.docgen import make_pdf
from tests.dbcalls import create_document
from tests.fakes import HashEmbedder, StubSignals
from vectordb.chunkstore import ChunkStore
from worker import pipeline
from worker.ledger import TaskLedger
from worker.parsepool import ParseRunner
from worker.pipeline import (
    PART_ORDINAL_STRIDE,
    ChunkStage,
    EmbedStage,
    FetchStage,
    IndexStage,
    ParseStage,
    SplitStage,
    StageLimits,
    TaskContext,
)
from worker.progress import TaskProgress

PROSE = "\n\n".join(
    f"# Part {i}\n\n" + " ".join(f"Sentence {j} of part {i} is about {topic} and the reader." for j in range(8))
    for i, topic in enumerate(["rivers", "glaciers", "volcanoes"])
)


class Contexts:
    """Claimed tasks of one knowledge base, as the executor hands them to the stages."""

    def __init__(self, core: Core, broker: StubSignals) -> None:
        self._core = core
        self._broker = broker
        self._ledger = TaskLedger(core.repo, broker, "w1")
        self._kb: KbRecord | None = None
        self._made = 0

    async def kb(self) -> KbRecord:
        if self._kb is None:
            self._kb = await asyncio.to_thread(self._core.repo.kbs.create, "kb", tenant="default", chunk_tokens=64,
                                               overlap_tokens=8, embedding_model="hash-test", dim=64)
        return self._kb

    async def new(self, data: bytes = b"", *, filename: str = "a.md", stored: bool = True) -> TaskContext:
        """A running task of a new document holding `data` (in the blob store unless not `stored`)."""
        self._made += 1
        blob_key = f"kb/{self._made}/{filename}"
        if stored:
            await self._core.store.put(blob_key, data)
        _, task = await asyncio.to_thread(create_document, self._core.repo, await self.kb(), filename=filename,
                                          size_bytes=len(data), sha256=f"{self._made:064d}", blob_key=blob_key)
        claimed = await self._ledger.claim(task.id)
        assert claimed is not None
        progress = TaskProgress(claimed, ledger=self._ledger, signals=self._broker, consumer="w1")
        return TaskContext(task=claimed.task, document=claimed.document, kb=claimed.kb, progress=progress)

    async def messages(self, ctx: TaskContext) -> list[str]:
        """The task's progress log as stored, without timestamps."""
        await self._ledger.drain()
        task = await asyncio.to_thread(self._core.repo.tasks.get, ctx.task.id)
        return [line.split(" ", 1)[1] for line in task.progress_lines]

    async def close(self) -> None:
        await self._ledger.drain()


@pytest.fixture
def broker() -> StubSignals:
    return StubSignals()


@pytest.fixture
async def contexts(local_core: Core, broker: StubSignals) -> AsyncIterator[Contexts]:
    made = Contexts(local_core, broker)
    yield made
    await made.close()


def _limits(core: Core) -> StageLimits:
    return StageLimits.from_settings(core.settings)


def _chunks(n: int) -> list[Chunk]:
    return [Chunk(ordinal=i, text=f"chunk {i} text", title="T", start_char=0, end_char=12, token_count=3)
            for i in range(n)]


# -------------------------------------------------------------------------------------------------- limits


async def test_stage_limits_are_semaphores_sized_by_the_worker_settings(local_core: Core) -> None:
    w = local_core.settings.worker
    w.max_concurrent_downloads, w.max_concurrent_chunk_builders = 3, 2
    w.max_concurrent_embeds, w.max_concurrent_index_writes = 1, 4
    limits = StageLimits.from_settings(local_core.settings)
    for semaphore, size in [(limits.downloads, 3), (limits.chunk_builders, 2), (limits.embeds, 1),
                            (limits.index_writes, 4)]:
        for _ in range(size):
            assert not semaphore.locked()
            await semaphore.acquire()
        assert semaphore.locked(), f"more than {size} at once"
    second = StageLimits.from_settings(local_core.settings)
    assert not second.downloads.locked(), "each worker process gets its own"


# --------------------------------------------------------------------------------------------------- fetch


async def test_fetch_reads_the_documents_blob(local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new(b"# Title\n\nbody")
    await FetchStage(local_core.store, _limits(local_core), local_core.settings).run(ctx)
    assert ctx.data == b"# Title\n\nbody"
    assert "fetched 13 bytes" in await contexts.messages(ctx)


async def test_fetch_of_a_missing_blob_is_a_permanent_error_naming_the_file(
        local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new(b"gone", filename="lost.md", stored=False)
    with pytest.raises(PermanentError, match=r"lost\.md: its stored file .* is missing; upload it again"):
        await FetchStage(local_core.store, _limits(local_core), local_core.settings).run(ctx)


async def test_fetch_of_a_blob_over_the_upload_limit_is_a_limit_exceeded(
        local_core: Core, contexts: Contexts) -> None:
    local_core.settings.limits.max_upload_bytes = 10
    ctx = await contexts.new(b"x" * 11, filename="big.md")
    with pytest.raises(LimitExceeded, match="big.md"):
        await FetchStage(local_core.store, _limits(local_core), local_core.settings).run(ctx)


# --------------------------------------------------------------------------------------------------- split


@pytest.mark.parametrize(("data", "per_task"), [
    (PROSE.encode(), 2),  # not a PDF
    (make_pdf(["one", "two"]), 2),  # no more pages than one task reads
    (make_pdf(["one", "two", "three"]), 0),  # splitting is off
], ids=["markdown", "small-pdf", "off"])
async def test_split_leaves_a_document_whole_when_it_needs_no_split(
        local_core: Core, contexts: Contexts, data: bytes, per_task: int) -> None:
    local_core.settings.chunking.pdf_pages_per_task = per_task
    ctx = await contexts.new(data)
    ctx.data = data
    runner = ParseRunner(0, _limits(local_core).chunk_builders)
    await SplitStage(local_core, runner).run(ctx)  # enqueueing anything would reach Redis
    assert ctx.split_parts is None and not ctx.task.is_split


async def test_split_enqueues_the_other_page_ranges_and_resumes_after_redis_fails(
        core: Core, broker: StubSignals, monkeypatch: pytest.MonkeyPatch) -> None:
    """Needs the real redis-server: the parts are enqueued on the task stream."""
    core.settings.chunking.pdf_pages_per_task = 2
    contexts = Contexts(core, broker)
    data = make_pdf([f"page {p}" for p in range(1, 6)])  # 5 pages: 1-2 (this task), 3-4, 5
    ctx = await contexts.new(data, filename="big.pdf")
    ctx.data = data
    enqueue, calls = core.queue.enqueue, 0

    async def second_enqueue_fails(task_id: str, priority: str = "normal") -> str:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise redis_errors.ConnectionError("Redis went away (injected)")
        return await enqueue(task_id, priority)

    monkeypatch.setattr(core.queue, "enqueue", second_enqueue_fails)
    stage = SplitStage(core, ParseRunner(0, _limits(core).chunk_builders))
    with pytest.raises(redis_errors.ConnectionError):
        await stage.run(ctx)
    assert ctx.split_parts is not None and ctx.enqueued_parts == 1
    parts = ctx.split_parts
    await stage.run(ctx)  # run again once Redis is back: the split is not repeated
    assert ctx.split_parts is parts and ctx.enqueued_parts == 2
    assert [(p.part, p.page_from, p.page_to) for p in parts] == [(1, 3, 4), (2, 5, 5)]
    assert (ctx.task.is_split, ctx.task.page_from, ctx.task.page_to) == (True, 1, 2)
    entries = await core.redis.xrange(core.keys.stream_normal)
    assert [fields["task_id"] for _, fields in entries] == [p.id for p in parts], "each part enqueued once"
    await contexts.close()


# --------------------------------------------------------------------------------------------------- parse


def _parse_stage(core: Core) -> ParseStage:
    return ParseStage(ParseRunner(0, _limits(core).chunk_builders), core.embedders, core.settings)


async def test_parse_chunks_the_text_and_releases_the_bytes(local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new()
    ctx.data = PROSE.encode()
    await _parse_stage(local_core).run(ctx)
    assert ctx.format == "markdown" and ctx.data == b""
    text = " ".join(c.text for c in ctx.chunks)
    assert "glaciers" in text and {c.title for c in ctx.chunks} == {"Part 0", "Part 1", "Part 2"}
    assert all(c.token_count <= ctx.kb.chunk_tokens for c in ctx.chunks)
    assert ctx.done_ahead["chunk"] > 0, "the chunking seconds are the chunk stage's"
    assert any(m.startswith("parsed as markdown") and "3 sections" in m for m in await contexts.messages(ctx))


async def test_parse_of_a_page_range_task_reads_only_its_pages(local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new(filename="big.pdf")
    ctx.data = make_pdf([f"marker{p} text" for p in range(1, 6)])
    ctx.task = dataclasses.replace(ctx.task, part=1, parts=3, page_from=2, page_to=3)
    await _parse_stage(local_core).run(ctx)
    text = " ".join(c.text for c in ctx.chunks)
    assert "marker2" in text and "marker3" in text
    assert "marker1" not in text and "marker4" not in text
    assert ctx.chunks[0].page == 2, "pages keep their numbers in the whole document"


async def test_a_markdown_file_of_one_heading_is_one_chunk(local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new(filename="kayaks.md")
    ctx.data = b"# Kayaks are great for calm lakes\n"
    await _parse_stage(local_core).run(ctx)
    await ChunkStage(local_core.settings).run(ctx)
    assert [(c.title, c.text) for c in ctx.chunks] == [("Kayaks are great for calm lakes",) * 2]


async def test_a_document_over_the_chunk_limit_fails_where_it_is_chunked(local_core: Core, contexts: Contexts) -> None:
    """The limit holds where chunks are made (the parse stage chunks), so an oversized document never
    reaches the chunk stage, let alone the model."""
    local_core.settings.limits.max_chunks_per_document = 2
    ctx = await contexts.new(filename="long.md")
    ctx.data = PROSE.encode()
    with pytest.raises(LimitExceeded, match=r'"long\.md" .*limits\.max_chunks_per_document'):
        await _parse_stage(local_core).run(ctx)
    assert ctx.chunks == []


async def test_parse_of_bad_input_is_a_permanent_error(local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new(filename="notes.txt")
    ctx.data = bytes(range(256)) * 40
    with pytest.raises(PermanentError, match="notes.txt"):
        await _parse_stage(local_core).run(ctx)


# --------------------------------------------------------------------------------------------------- chunk


async def test_chunks_follow_the_knowledge_base_and_never_exceed_what_the_model_reads(
        local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new()
    ctx.data = PROSE.encode()
    await _parse_stage(local_core).run(ctx)
    await ChunkStage(local_core.settings).run(ctx)
    assert max(c.token_count for c in ctx.chunks) > 16
    assert all(c.token_count <= ctx.kb.chunk_tokens for c in ctx.chunks)

    local_core.embedders = EmbedderLoader(local_core.settings.embedding, HashEmbedder(max_tokens=16))
    short = await contexts.new()
    short.data = PROSE.encode()
    await _parse_stage(local_core).run(short)
    await ChunkStage(local_core.settings).run(short)
    assert len(short.chunks) > len(ctx.chunks)
    assert all(c.token_count <= 16 for c in short.chunks), "a chunk longer than the model reads loses its tail"
    assert short.token_count == sum(c.token_count for c in short.chunks)
    assert f"{len(short.chunks)} chunks, {short.token_count} tokens" in await contexts.messages(short)


async def test_a_document_with_no_text_to_chunk_is_corrupt(local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new(filename="blank.md")
    ctx.format = "markdown"  # parsed, but to no chunk
    with pytest.raises(CorruptDocument, match="blank.md: no text to index"):
        await ChunkStage(local_core.settings).run(ctx)


async def test_more_chunks_than_the_limit_is_a_limit_exceeded(local_core: Core, contexts: Contexts) -> None:
    local_core.settings.limits.max_chunks_per_document = 2
    ctx = await contexts.new(filename="long.md")
    ctx.chunks = _chunks(3)
    with pytest.raises(LimitExceeded, match=r"\"long\.md\" makes 3 chunks, above the limit of 2 \(limits\.max_chunks"):
        await ChunkStage(local_core.settings).run(ctx)


# --------------------------------------------------------------------------------------------------- embed


class RecordingBatcher:
    """Stands in for `EmbedBatcher`: records each window it is asked for; `gate` holds the windows back."""

    def __init__(self, window: int = 0) -> None:
        self.windows: list[list[str]] = []
        self.abandoned = 0
        self.gate: asyncio.Event | None = None
        self.window = window

    async def embed(self, titles: list[str], contents: list[str], token_counts: Any = None) -> np.ndarray:
        self.windows.append(contents)
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.abandoned += 1
                raise
        return HashEmbedder().encode(contents, len(contents))


def _embed_stage(core: Core, batcher: RecordingBatcher, window: int) -> EmbedStage:
    batcher.window = window
    return EmbedStage(batcher, core.embedders, core.repo, core.settings)  # type: ignore[arg-type]


async def test_embed_asks_for_one_window_at_a_time_and_stacks_the_vectors(
        local_core: Core, contexts: Contexts) -> None:
    batcher = RecordingBatcher()
    ctx = await contexts.new()
    ctx.chunks = _chunks(10)
    await _embed_stage(local_core, batcher, window=4).run(ctx)
    assert [len(w) for w in batcher.windows] == [4, 4, 2]
    assert ctx.vectors is not None and ctx.vectors.shape == (10, 64) and ctx.vectors.dtype == np.float32
    assert ctx.embedded == []
    assert "embedded 10/10 chunks (0 of 10 reused)" in await contexts.messages(ctx)


async def test_unchanged_chunks_reuse_their_stored_vectors_and_only_changed_ones_are_embedded(
        local_core: Core, contexts: Contexts) -> None:
    first = await contexts.new()
    first.chunks = _chunks(10)
    await _embed_stage(local_core, RecordingBatcher(), window=4).run(first)
    assert first.vectors is not None

    again = await contexts.new()
    again.chunks = _chunks(10)
    batcher = RecordingBatcher()
    await _embed_stage(local_core, batcher, window=4).run(again)
    assert batcher.windows == [], "nothing changed: nothing is embedded"
    assert again.vectors is not None and np.array_equal(again.vectors, first.vectors)
    assert again.reuse is not None and again.reuse.reused == 10
    assert "all 10 chunks reused" in await contexts.messages(again)

    edited = await contexts.new()
    edited.chunks = _chunks(10)
    edited.chunks[3] = dataclasses.replace(edited.chunks[3], text="an edited paragraph")
    edited.chunks[7] = dataclasses.replace(edited.chunks[7], title="a renamed section")
    batcher = RecordingBatcher()
    await _embed_stage(local_core, batcher, window=4).run(edited)
    assert batcher.windows == [["an edited paragraph", edited.chunks[7].text]]
    assert edited.reuse is not None and edited.reuse.reused == 8
    assert edited.vectors is not None
    unchanged = [i for i in range(10) if i not in (3, 7)]
    assert np.array_equal(edited.vectors[unchanged], first.vectors[unchanged])


async def test_chunks_repeated_in_one_document_are_embedded_once(local_core: Core, contexts: Contexts) -> None:
    ctx = await contexts.new()
    ctx.chunks = _chunks(3) * 2
    batcher = RecordingBatcher()
    await _embed_stage(local_core, batcher, window=8).run(ctx)
    assert [len(w) for w in batcher.windows] == [3]
    assert ctx.vectors is not None and np.array_equal(ctx.vectors[:3], ctx.vectors[3:])


async def test_embed_run_again_goes_on_after_the_windows_it_finished(local_core: Core, contexts: Contexts) -> None:
    batcher = RecordingBatcher()
    ctx = await contexts.new()
    ctx.chunks = _chunks(10)
    ctx.embedded = [np.full((4, 64), 7.0, dtype=np.float32)]  # an earlier run's first window
    await _embed_stage(local_core, batcher, window=4).run(ctx)
    assert batcher.windows == [[c.text for c in ctx.chunks[4:8]], [c.text for c in ctx.chunks[8:]]]
    assert ctx.vectors is not None and ctx.vectors.shape == (10, 64)
    assert (ctx.vectors[:4] == 7.0).all() and not (ctx.vectors[4:] == 7.0).any()


async def test_embed_checks_the_cancel_flag_between_windows(
        local_core: Core, contexts: Contexts, broker: StubSignals) -> None:
    batcher = RecordingBatcher()
    ctx = await contexts.new()
    ctx.chunks = _chunks(10)
    await ctx.progress.check_cancelled()  # the executor's check before the stage (answered by the claim)
    broker.cancel_flags.add(ctx.task.id)
    with pytest.raises(Cancelled):
        await _embed_stage(local_core, batcher, window=4).run(ctx)
    assert batcher.windows == []


async def test_embed_abandons_a_window_in_flight_when_the_task_is_cancelled(
        local_core: Core, contexts: Contexts, broker: StubSignals, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "CANCEL_POLL_S", 0.01)
    batcher = RecordingBatcher()
    batcher.gate = asyncio.Event()  # the model never answers
    ctx = await contexts.new()
    ctx.chunks = _chunks(3)
    running = asyncio.create_task(_embed_stage(local_core, batcher, window=4).run(ctx))
    async with asyncio.timeout(10):
        while not batcher.windows:
            await asyncio.sleep(0.01)
    broker.cancel_flags.add(ctx.task.id)
    with pytest.raises(Cancelled):
        await asyncio.wait_for(running, timeout=10)
    assert batcher.abandoned == 1, "the batcher was told to stop embedding for the task"


# --------------------------------------------------------------------------------------------------- index


class CountingChunks(ChunkStore):
    """The real chunk store; records the first ordinal of each upsert and can fail one of them."""

    def __init__(self, client: Any, fail_call: int | None = None) -> None:
        super().__init__(client)
        self.first_ordinals: list[int] = []
        self._fail_call = fail_call

    async def upsert(self, collection: str, rows: Any, vectors: np.ndarray) -> int:
        if self._fail_call is not None and len(self.first_ordinals) + 1 == self._fail_call:
            self._fail_call = None
            raise DependencyUnavailable(Dependency.VECTOR_STORE, "connection refused (injected)")
        self.first_ordinals.append(rows[0].ordinal)
        return await super().upsert(collection, rows, vectors)


async def _indexed(ctx: TaskContext, n: int) -> TaskContext:
    ctx.chunks = _chunks(n)
    ctx.vectors = HashEmbedder().encode([c.text for c in ctx.chunks], n)
    return ctx


async def _ordinals(vectors: Any, ctx: TaskContext) -> list[int]:
    rows = await vectors.query(ctx.kb.collection, filter=f'document_id == "{ctx.document.id}"',
                               output_fields=["ordinal", "parse_version"])
    assert {int(r["parse_version"]) for r in rows} == {ctx.task.parse_version}
    return sorted(int(r["ordinal"]) for r in rows)


async def test_index_creates_the_collection_and_writes_a_parts_chunks_at_its_own_ordinals(
        local_core: Core, contexts: Contexts, vectors: Any) -> None:
    ctx = await _indexed(await contexts.new(), 3)
    ctx.task = dataclasses.replace(ctx.task, part=2, parts=3)
    chunks = ChunkStore(vectors)
    assert not await chunks.has_collection(ctx.kb.collection)
    await IndexStage(chunks, local_core.repo, _limits(local_core)).run(ctx)
    assert await _ordinals(vectors, ctx) == [2 * PART_ORDINAL_STRIDE + i for i in range(3)]
    assert ctx.written_rows == 3
    assert "indexed 3 chunks" in await contexts.messages(ctx)


async def test_index_run_again_after_the_store_failed_goes_on_from_the_last_batch_written(
        local_core: Core, contexts: Contexts, vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "INDEX_BATCH_ROWS", 2)
    ctx = await _indexed(await contexts.new(), 5)
    chunks = CountingChunks(vectors, fail_call=2)
    stage = IndexStage(chunks, local_core.repo, _limits(local_core))
    with pytest.raises(DependencyUnavailable):
        await stage.run(ctx)
    assert ctx.written_rows == 2 and chunks.first_ordinals == [0]
    await stage.run(ctx)
    assert chunks.first_ordinals == [0, 2, 4], "the batch written before the failure is not written again"
    assert await _ordinals(vectors, ctx) == [0, 1, 2, 3, 4]


async def test_index_is_an_upsert_a_redelivered_task_leaves_no_duplicate(
        local_core: Core, contexts: Contexts, vectors: Any) -> None:
    ctx = await _indexed(await contexts.new(), 4)
    stage = IndexStage(ChunkStore(vectors), local_core.repo, _limits(local_core))
    await stage.run(ctx)
    ctx.written_rows = 0  # a new delivery starts over
    await stage.run(ctx)
    assert await _ordinals(vectors, ctx) == [0, 1, 2, 3]


async def test_index_recreates_a_collection_dropped_since_it_was_seen_only_while_its_kb_exists(
        local_core: Core, contexts: Contexts, vectors: Any) -> None:
    chunks = ChunkStore(vectors)
    stage = IndexStage(chunks, local_core.repo, _limits(local_core))
    first = await _indexed(await contexts.new(), 2)
    await stage.run(first)
    assert chunks.known(first.kb.collection)
    await vectors.drop_collection(first.kb.collection)  # behind this process's back
    second = await _indexed(await contexts.new(), 2)
    await stage.run(second)
    assert await _ordinals(vectors, second) == [0, 1]
    third = await _indexed(await contexts.new(), 2)
    await vectors.drop_collection(first.kb.collection)
    await asyncio.to_thread(local_core.repo.kbs.delete, first.kb.id)  # the user deleted the knowledge base
    with pytest.raises(NotFound):
        await stage.run(third)
    assert not await vectors.has_collection(first.kb.collection)


async def test_index_of_a_deleted_knowledge_base_stops_without_recreating_its_collection(
        local_core: Core, contexts: Contexts, vectors: Any) -> None:
    ctx = await _indexed(await contexts.new(), 2)
    await asyncio.to_thread(local_core.repo.kbs.delete, ctx.kb.id)
    chunks = ChunkStore(vectors)
    with pytest.raises(NotFound):
        await IndexStage(chunks, local_core.repo, _limits(local_core)).run(ctx)
    assert not await chunks.has_collection(ctx.kb.collection)
