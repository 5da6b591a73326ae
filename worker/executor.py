"""Runs one delivered task through the pipeline and settles it: ack, fail, cancel or retry later."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common import ingest
from common.db import ClaimedTask
from common.errors import Cancelled, DocvecError, LimitExceeded, NotFound, PermanentError, StageTimeout
from common.queue import QueueMessage
from common.runtime import Core
from vectordb.chunkstore import ChunkStore
from worker.batching import EmbedBatcher
from worker.deadlines import Deadlines, Watch
from worker.ledger import TaskLedger, TaskSignals
from worker.metrics import WorkerMetrics
from worker.pipeline import (
    ChunkStage,
    EmbedStage,
    FetchStage,
    IndexStage,
    ParseStage,
    SplitStage,
    Stage,
    StageLimits,
    TaskContext,
)
from worker.progress import TaskProgress

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0


class Outcome(enum.StrEnum):
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    RETRY = "retry"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class TaskResult:
    outcome: Outcome
    retry_after_s: float = 0.0


class TaskExecutor:
    """Owns the stages of one worker process and applies the task lifecycle rules (SPEC section 4)."""

    def __init__(self, core: Core, chunks: ChunkStore, consumer: str, *,
                 metrics: WorkerMetrics | None = None, stages: Sequence[Stage] | None = None) -> None:
        self._core = core
        self._chunks = chunks
        self._consumer = consumer
        self.metrics = metrics or WorkerMetrics()
        settings = core.settings
        limits = StageLimits.from_settings(settings)
        self._stages: Sequence[Stage] = (
            FetchStage(core.store, limits, settings),
            SplitStage(core, limits),
            ParseStage(limits, settings),
            ChunkStage(core.embedders, limits, settings),
            EmbedStage(EmbedBatcher(core.embedders, batch_size=settings.embedding.batch_size,
                                    window=settings.embedding.batch_size * settings.embedding.window_batches,
                                    title_weight=settings.embedding.title_weight,
                                    concurrency=limits.embeds), settings),
            IndexStage(chunks, limits),
        )
        if stages is not None:  # an injected pipeline (bench.queue times the task path with a no-op stage)
            self._stages = tuple(stages)
        w = settings.worker
        self._timeouts_s = {
            "fetch": w.fetch_timeout_s,
            "split": w.parse_timeout_s,
            "parse": w.parse_timeout_s,
            "chunk": w.chunk_timeout_s,
            "embed": w.embed_timeout_s,
            "index": w.index_timeout_s,
        }
        self.running: dict[str, TaskProgress] = {}
        self._signals = TaskSignals(core.redis, core.keys, core.queue)
        self._deadlines = Deadlines()
        self._ledger = TaskLedger(core.repo, self._signals, consumer)

    async def drain(self) -> None:
        """Flush the writes and signals still queued (at shutdown, after the last task)."""
        await self._ledger.drain()
        await self._signals.drain()

    async def execute(self, message: QueueMessage) -> TaskResult:
        """Run the task of `message`. Raises only if settling itself failed (entry stays pending)."""
        if not message.task_id:
            await self._signals.ack(message)
            return TaskResult(Outcome.SKIPPED)
        claimed = await self._ledger.claim(message.task_id)
        if claimed is None:
            await self._settle_finished(message)
            return TaskResult(Outcome.SKIPPED)
        task = claimed.task
        progress = TaskProgress(claimed, ledger=self._ledger, signals=self._signals, consumer=self._consumer)
        max_attempts = self._core.settings.worker.max_attempts
        if task.attempts > max_attempts:
            reason = f"gave up after {max_attempts} attempts"
            if task.error:
                reason += f"; last error: {task.error}"
            await self._fail(message, progress, reason, dead_letter=True)
            return TaskResult(Outcome.FAILED)

        self.running[task.id] = progress
        try:
            return await self._run(message, claimed, progress)
        finally:
            self.running.pop(task.id, None)

    async def _run(self, message: QueueMessage, claimed: ClaimedTask, progress: TaskProgress) -> TaskResult:
        task = claimed.task
        ctx: TaskContext | None = None
        watch = self._deadlines.watch(self._core.settings.worker.task_deadline_s)
        try:
            try:
                async with watch:
                    ctx = TaskContext(task=task, document=claimed.document, kb=claimed.kb, progress=progress)
                    for stage in self._stages:
                        await progress.check_cancelled()
                        await self._run_stage(stage, ctx, watch)
                    await self._complete(message, ctx)
                    return TaskResult(Outcome.DONE)
            except TimeoutError as exc:
                if not watch.fired:  # a TimeoutError of the stage's own making: an ordinary error
                    raise
                if watch.expired_stage is None:
                    deadline = self._core.settings.worker.task_deadline_s
                    raise StageTimeout(f"task exceeded its deadline of {deadline:g}s") from exc
                text = f"stage {watch.expired_stage} exceeded its timeout of {watch.stage_timeout_s:g}s"
                if watch.expired_stage == "parse":  # a document that cannot be parsed in time never will be
                    raise LimitExceeded(text) from exc
                raise StageTimeout(text) from exc
        except (Cancelled, NotFound):  # cancelled, superseded, or its document was deleted
            await self._cancelled(message, progress, ctx)
            return TaskResult(Outcome.CANCELLED)
        except PermanentError as exc:
            await self._fail(message, progress, exc.message)
            return TaskResult(Outcome.FAILED)
        except Exception as exc:  # the task boundary: anything else counts as transient
            log.warning("task %s attempt %d failed: %r", task.id, task.attempts, exc)
            text = exc.message if isinstance(exc, DocvecError) else f"{type(exc).__name__}: {exc}"
            return await self._retry_or_give_up(message, progress, task.attempts, text)

    async def _run_stage(self, stage: Stage, ctx: TaskContext, watch: Watch) -> None:
        started = time.monotonic()
        await ctx.progress.report(stage.start, f"{stage.name} started", stage=stage.name)
        watch.begin_stage(stage.name, self._timeouts_s.get(stage.name, self._core.settings.worker.task_deadline_s))
        await stage.run(ctx)
        watch.end_stage()
        ctx.progress.record_timing(stage.name, time.monotonic() - started)
        self.metrics.observe_stage(stage.name, time.monotonic() - started, chunks=len(ctx.chunks))

    async def _complete(self, message: QueueMessage, ctx: TaskContext) -> None:
        assert ctx.parsed is not None
        completed = await ctx.progress.complete(
            chunk_count=len(ctx.chunks), token_count=ctx.token_count, format=ctx.parsed.format
        )
        if completed.document_done:
            # The new version is live: older versions of the document's chunks go.
            await self._chunks.delete_document(
                ctx.kb.collection, ctx.document.id, except_version=ctx.task.parse_version
            )
        await self._signals.ack(message, ctx.progress.event("done", status="done", message=f"{len(ctx.chunks)} chunks"))

    async def _settle_finished(self, message: QueueMessage) -> None:
        """A redelivered entry of a task already terminal: finish any cleanup, then ack."""
        repo = self._core.repo
        try:
            task = await asyncio.to_thread(repo.get_task, message.task_id)
            if task.status == "done" or task.is_split:
                document = await asyncio.to_thread(repo.get_document, task.document_id)
                kb = await asyncio.to_thread(repo.get_kb_by_id, task.kb_id)
                if task.status == "done":
                    await self._chunks.delete_document(
                        kb.collection, document.id, except_version=document.parse_version
                    )
                elif document.parse_version != task.parse_version:
                    # A page-range part cancelled while queued: its parse never became live, and the
                    # parts that did finish left chunks behind.
                    await self._chunks.delete_document(kb.collection, document.id, only_version=task.parse_version)
        except NotFound:
            log.info("entry %s names task %s, which no longer exists", message.entry_id, message.task_id)
        await self._signals.ack(message)

    async def _cancelled(self, message: QueueMessage, progress: TaskProgress, ctx: TaskContext | None) -> None:
        if ctx is not None and await self._owns_nothing_live(ctx):
            await self._chunks.delete_document(
                ctx.kb.collection, ctx.document.id, only_version=ctx.task.parse_version
            )
        await self._signals.ack(message, progress.event("cancelled", status="cancelled"))

    async def _owns_nothing_live(self, ctx: TaskContext) -> bool:
        """True when this run's chunk set is garbage: the task was cancelled or deleted. False when
        the task was fenced out by a newer delivery of itself (that delivery writes the same set)."""
        try:
            current = await asyncio.to_thread(self._core.repo.get_task, ctx.task.id)
        except NotFound:
            return True
        return current.status == "cancelled" or current.parse_version != ctx.task.parse_version

    async def _fail(self, message: QueueMessage, progress: TaskProgress, reason: str, *,
                    dead_letter: bool = False) -> None:
        repo = self._core.repo
        if await asyncio.to_thread(repo.fail_task, progress.task_id, progress.version, reason):
            await self._fail_sibling_parts(progress.task_id)
        if dead_letter:
            progress.publish("failed", status="failed", message=reason)
            await self._core.queue.dead_letter(message, reason)
        else:
            await self._signals.ack(message, progress.event("failed", status="failed", message=reason))

    async def _fail_sibling_parts(self, task_id: str) -> None:
        """A failed page-range part fails its whole parse: cancel the other parts, drop its chunks."""
        repo = self._core.repo
        task = await asyncio.to_thread(repo.get_task, task_id)
        if not task.is_split:
            return
        siblings = await asyncio.to_thread(
            repo.cancel_parts, task.document_id, task.parse_version, f"part {task.part + 1} failed"
        )
        await ingest.flag_cancelled(self._core, siblings)
        kb = await asyncio.to_thread(repo.get_kb_by_id, task.kb_id)
        await self._chunks.delete_document(kb.collection, task.document_id, only_version=task.parse_version)

    async def _retry_or_give_up(self, message: QueueMessage, progress: TaskProgress, attempts: int,
                                error: str) -> TaskResult:
        max_attempts = self._core.settings.worker.max_attempts
        if attempts >= max_attempts:
            await self._fail(
                message, progress, f"gave up after {attempts} attempts; last error: {error}", dead_letter=True
            )
            return TaskResult(Outcome.FAILED)
        requeued = await asyncio.to_thread(self._core.repo.requeue_task, progress.task_id, progress.version, error)
        if not requeued:  # cancelled meanwhile
            await self._signals.ack(message)
            return TaskResult(Outcome.CANCELLED)
        progress.publish("retry", status="queued", message=error)
        base_s = self._core.settings.worker.retry_backoff_s
        return TaskResult(Outcome.RETRY, retry_after_s=min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))
