"""Pipeline stages. Each stage is an object with a name, a progress range and `run(ctx)`.

The executor composes them; a stage reads what earlier stages left in the `TaskContext` and adds
its own output. Blocking work runs off the event loop, so it keeps serving heartbeats and other
tasks: parsing and chunking in child processes (`worker.parsepool`: the parse stage chunks too, in the
same child, and reports the seconds of each), the model and the stores in threads, each under its
stage's semaphore.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from common.chunking import Chunk, too_many_chunks
from common.db import DocumentRecord, KbRecord, Repository, TaskRecord
from common.embedding.batcher import EmbedBatcher
from common.embedding.cache import embedding_key
from common.errors import Cancelled, Conflict, CorruptDocument, NotFound, PermanentError
from common.parsing.sniff import PDF, detect_document_format
from common.runtime import Core, EmbedderLoader
from common.settings import Settings
from common.storage.base import ObjectStore
from common.uploads import check_upload_size
from lifecycle import documents as lifecycle
from vectordb.chunkstore import ChunkRow, ChunkStore
from vectordb.errors import CollectionNotFound
from worker.parsepool import ChunkRequest, PageCountRequest, ParseRunner, Waiting
from worker.progress import TaskProgress

INDEX_BATCH_ROWS = 512
# How often a task waiting for its embedding window checks whether it was cancelled.
CANCEL_POLL_S = 0.5
# Chunk ordinals of page-range part k start at k * stride (far above any one part's chunk count).
PART_ORDINAL_STRIDE = 1 << 24


@dataclass(slots=True)
class TaskContext:
    """Everything one task run reads and produces."""

    task: TaskRecord
    document: DocumentRecord
    kb: KbRecord
    progress: TaskProgress
    data: bytes = b""
    format: str = ""  # the parsed document's
    chunks: list[Chunk] = field(default_factory=list)
    vectors: np.ndarray | None = None
    token_count: int = 0
    # What a stage finished before a dependency went down: a stage run again goes on from there.
    reuse: Reuse | None = None
    embedded: list[np.ndarray] = field(default_factory=list)
    written_rows: int = 0
    split_parts: list[TaskRecord] | None = None
    enqueued_parts: int = 0
    # Seconds of a later stage's work an earlier one did (the parse stage chunks): counted as the later's.
    done_ahead: dict[str, float] = field(default_factory=dict)
    # Stops the task's clocks while it waits its turn (for a parse process), not while it works.
    waiting: Waiting = contextlib.nullcontext


@dataclass(slots=True)
class Reuse:
    """The embed stage's plan: each chunk's key, the stored vectors found for them, and which chunks
    (one per distinct missing key) the model must embed."""

    keys: list[str]
    stored: dict[str, np.ndarray]
    todo: list[int]

    @property
    def reused(self) -> int:
        return sum(1 for key in self.keys if key in self.stored)


class Stage(Protocol):
    name: str
    start: float
    end: float

    async def run(self, ctx: TaskContext) -> None: ...


@dataclass(slots=True)
class StageLimits:
    """Per-stage semaphores shared by every task of one worker process."""

    downloads: asyncio.Semaphore
    chunk_builders: asyncio.Semaphore
    embeds: asyncio.Semaphore
    index_writes: asyncio.Semaphore

    @classmethod
    def from_settings(cls, settings: Settings) -> StageLimits:
        w = settings.worker
        return cls(
            downloads=asyncio.Semaphore(w.max_concurrent_downloads),
            chunk_builders=asyncio.Semaphore(w.max_concurrent_chunk_builders),
            embeds=asyncio.Semaphore(w.max_concurrent_embeds),
            index_writes=asyncio.Semaphore(w.max_concurrent_index_writes),
        )


class FetchStage:
    name = "fetch"
    start, end = 0.0, 0.05

    def __init__(self, store: ObjectStore, limits: StageLimits, settings: Settings) -> None:
        self._store = store
        self._limits = limits
        self._max_bytes = settings.limits.max_upload_bytes

    async def run(self, ctx: TaskContext) -> None:
        async with self._limits.downloads:
            try:
                ctx.data = await self._store.get(ctx.document.blob_key)
            except NotFound as exc:
                raise PermanentError(
                    f"{ctx.document.filename}: its stored file ({ctx.document.blob_key}) is missing; upload it again"
                ) from exc
        check_upload_size(ctx.document.filename, len(ctx.data), self._max_bytes)
        await ctx.progress.report(self.end, f"fetched {len(ctx.data)} bytes", stage=self.name)


class SplitStage:
    """A large PDF becomes page-range tasks: this task keeps the first range and enqueues the others,
    so several workers share one big document (`chunking.pdf_pages_per_task`)."""

    name = "split"
    start, end = 0.05, 0.05

    def __init__(self, core: Core, runner: ParseRunner) -> None:
        self._core = core
        self._runner = runner

    async def run(self, ctx: TaskContext) -> None:
        settings = self._core.settings
        per_task = settings.chunking.pdf_pages_per_task
        if not per_task or ctx.task.is_split or detect_document_format(ctx.data) != PDF:
            return
        count = PageCountRequest(data=ctx.data, filename=ctx.document.filename, limits=settings.limits)
        pages = await self._runner.run(count, await self._core.embedders.get(), waiting=ctx.waiting)
        if pages <= per_task:
            return
        ranges = [(first, min(first + per_task - 1, pages)) for first in range(1, pages + 1, per_task)]
        repo = self._core.repo
        if ctx.split_parts is None:
            try:
                ctx.split_parts = await asyncio.to_thread(repo.ledger.split, ctx.task.id, ctx.task.version, ranges)
            except Conflict as exc:
                raise Cancelled(exc.message) from exc
        for part in ctx.split_parts[ctx.enqueued_parts:]:  # a crash here leaves the rest to the orphan scan
            await lifecycle.enqueue(self._core, part)
            ctx.enqueued_parts += 1
        ctx.task = await asyncio.to_thread(repo.tasks.get, ctx.task.id)
        await ctx.progress.report(
            self.end, f"{pages} pages: split into {len(ranges)} tasks of up to {per_task} pages; "
            f"this one reads pages {ranges[0][0]}-{ranges[0][1]}", stage=self.name,
        )


class ParseStage:
    """Parse the document and chunk it with the model's tokenizer, in one call of the `ParseRunner`
    (a child process: the text never crosses back, only the chunks)."""

    name = "parse"
    start, end = 0.05, 0.15

    def __init__(self, runner: ParseRunner, embedders: EmbedderLoader, settings: Settings) -> None:
        self._runner = runner
        self._embedders = embedders
        self._settings = settings

    async def run(self, ctx: TaskContext) -> None:
        task = ctx.task
        pages = (task.page_from, task.page_to) if task.page_from is not None and task.page_to is not None else None
        request = ChunkRequest(data=ctx.data, filename=ctx.document.filename, limits=self._settings.limits,
                               pages=pages, chunk_tokens=ctx.kb.chunk_tokens, overlap_tokens=ctx.kb.overlap_tokens)
        result = await self._runner.run(request, await self._embedders.get(), waiting=ctx.waiting)
        ctx.data = b""
        ctx.format, ctx.chunks = result.format, result.chunks
        ctx.done_ahead[ChunkStage.name] = result.chunk_s
        await ctx.progress.report(
            self.end, f"parsed as {result.format}: {result.characters} characters, {result.sections} sections",
            stage=self.name,
        )


class ChunkStage:
    """The chunks the parse stage made: checked against the limits, counted and reported."""

    name = "chunk"
    start, end = 0.15, 0.2

    def __init__(self, settings: Settings) -> None:
        self._max_chunks = settings.limits.max_chunks_per_document

    async def run(self, ctx: TaskContext) -> None:
        if not ctx.chunks:
            raise CorruptDocument(f"{ctx.document.filename}: no text to index after parsing")
        if len(ctx.chunks) > self._max_chunks:  # the chunker stops there already (`parse_and_chunk`)
            raise too_many_chunks(ctx.document.filename, self._max_chunks, count=len(ctx.chunks))
        ctx.token_count = sum(c.token_count for c in ctx.chunks)
        await ctx.progress.report(
            self.end, f"{len(ctx.chunks)} chunks, {ctx.token_count} tokens", stage=self.name
        )


class EmbedStage:
    """Vectors for the chunks: the stored vector of a chunk whose model, title weighting, title and text
    are unchanged (`common.embedding.cache`), the model for the rest, whose vectors are stored in turn."""

    name = "embed"
    start, end = 0.2, 0.9

    def __init__(self, batcher: EmbedBatcher, embedders: EmbedderLoader, repo: Repository,
                 settings: Settings) -> None:
        self._batcher = batcher
        self._embedders = embedders
        self._repo = repo
        self._title_weight = settings.embedding.title_weight
        # One request per window: the batcher sorts a window by length across tasks.
        self._window = batcher.window

    async def run(self, ctx: TaskContext) -> None:
        embedder = await self._embedders.get()
        if ctx.reuse is None:
            keys = [embedding_key(embedder.name, embedder.dim, self._title_weight, c.title, c.text)
                    for c in ctx.chunks]
            stored = await asyncio.to_thread(self._repo.embeddings.get_many, keys, embedder.dim)
            first = {key: i for i, key in reversed(list(enumerate(keys))) if key not in stored}
            ctx.reuse = Reuse(keys, stored, sorted(first.values()))
        plan = ctx.reuse
        todo = [ctx.chunks[i] for i in plan.todo]
        parts = ctx.embedded  # windows embedded by an earlier run of this stage (a dependency went down)
        for begin in range(sum(len(p) for p in parts), len(todo), self._window):
            await ctx.progress.check_cancelled()
            batch = todo[begin:begin + self._window]
            parts.append(await self._embed_watching_cancel(ctx, batch))
            done = begin + len(batch)
            await ctx.progress.report(
                self.start + (self.end - self.start) * done / len(todo),
                f"embedded {done}/{len(todo)} chunks ({plan.reused} of {len(ctx.chunks)} reused)", stage=self.name,
            )
        fresh = dict(zip((plan.keys[i] for i in plan.todo), np.vstack(parts) if parts else [], strict=True))
        if fresh:
            await asyncio.to_thread(self._repo.embeddings.put_many, fresh)
        vectors = {**plan.stored, **fresh}
        ctx.vectors = np.array([vectors[key] for key in plan.keys], dtype=np.float32).reshape(-1, embedder.dim)
        ctx.embedded = []
        if not todo:
            await ctx.progress.report(self.end, f"all {len(ctx.chunks)} chunks reused", stage=self.name)

    async def _embed_watching_cancel(self, ctx: TaskContext, batch: list[Chunk]) -> np.ndarray:
        """Wait for one window, checking the cancel flag meanwhile: a cancelled task abandons its
        request, so the batcher skips its remaining model batches (it stops within one batch)."""
        embedding = asyncio.ensure_future(self._batcher.embed([c.title for c in batch], [c.text for c in batch],
                                                              [c.token_count for c in batch]))
        try:
            while True:
                done, _ = await asyncio.wait({embedding}, timeout=CANCEL_POLL_S)
                if done:
                    return embedding.result()
                await ctx.progress.check_cancelled()
        finally:
            if not embedding.done():
                embedding.cancel()
                await asyncio.wait({embedding})


class IndexStage:
    name = "index"
    start, end = 0.9, 0.99

    def __init__(self, chunks: ChunkStore, repo: Repository, limits: StageLimits) -> None:
        self._chunks = chunks
        self._repo = repo
        self._limits = limits

    async def run(self, ctx: TaskContext) -> None:
        assert ctx.vectors is not None
        doc, task = ctx.document, ctx.task
        first_ordinal = task.part * PART_ORDINAL_STRIDE  # page-range parts: ordinals in page order, unique
        rows = [
            ChunkRow(
                document_id=doc.id, parse_version=task.parse_version, ordinal=first_ordinal + c.ordinal,
                title=c.title,
                text=c.text, filename=doc.filename, page=c.page, start_char=c.start_char,
                end_char=c.end_char, token_count=c.token_count,
            )
            for c in ctx.chunks
        ]
        async with self._limits.index_writes:
            await self._ensure_collection(ctx)
            # An earlier run of this stage may have written some batches before the store went down.
            for begin in range(ctx.written_rows - ctx.written_rows % INDEX_BATCH_ROWS, len(rows), INDEX_BATCH_ROWS):
                await ctx.progress.check_cancelled()
                batch, vectors = rows[begin:begin + INDEX_BATCH_ROWS], ctx.vectors[begin:begin + INDEX_BATCH_ROWS]
                try:
                    written = await self._chunks.upsert(ctx.kb.collection, batch, vectors)
                except CollectionNotFound:  # dropped since this process saw it
                    await self._ensure_collection(ctx)
                    written = await self._chunks.upsert(ctx.kb.collection, batch, vectors)
                ctx.written_rows = begin + written
        await ctx.progress.report(self.end, f"indexed {ctx.written_rows} chunks", stage=self.name)

    async def _ensure_collection(self, ctx: TaskContext) -> None:
        """The collection is made with its knowledge base; create it here only while that still exists
        (a deleted knowledge base's collection is garbage, and its tasks were cancelled). Once seen, a
        collection is not asked about again by this process."""
        if self._chunks.known(ctx.kb.collection) or await self._chunks.has_collection(ctx.kb.collection):
            return
        await asyncio.to_thread(self._repo.kbs.get_by_id, ctx.kb.id)  # NotFound: deleted, the task stops
        await self._chunks.ensure_collection(ctx.kb.collection, ctx.kb.dim)
