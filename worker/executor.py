"""Runs one delivered task through the pipeline and settles it: ack, fail, cancel or retry later.

A dependency that is down (`common.dependencies.dependency_of`) is never the document's fault: the task
waits in place for it (its deadline paused, its entry renewed, its attempts untouched), then the stage
that met it runs again; stages resume where they were (fetch and index are idempotent, embed and index
keep what they finished). Attempts and the dead-letter stream are for what the document causes.
What a task's end does to its chunk sets is `lifecycle`'s: garbage is recorded by the database
transitions themselves and removed by `lifecycle.garbage` (here at once for a failed or cancelled
task's own document, else by the janitor).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from common.db import ClaimedTask, Completion
from common.db.ledger import RETURNED_LINE
from common.dependencies import Dependency, DependencyBoard, dependency_of
from common.embedding.batcher import EmbedBatcher
from common.embedding.factory import model_sizing
from common.errors import Cancelled, DocvecError, LimitExceeded, NotFound, PermanentError, StageTimeout
from common.queue import QueueMessage
from common.runtime import Core
from lifecycle import documents as lifecycle
from lifecycle.garbage import GarbageCollector
from vectordb.chunkstore import ChunkStore
from worker.deadlines import Deadlines, Watch
from worker.ledger import Signals, TaskLedger, TaskSignals
from worker.metrics import WorkerMetrics
from worker.parsepool import ParseRunner, default_processes
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

T = TypeVar("T")

MAX_BACKOFF_S = 60.0
# How often a task waiting for a dependency looks at its cancel flag.
DEPENDENCY_CANCEL_POLL_S = 1.0


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

    def __init__(self, core: Core, chunks: ChunkStore, consumer: str, *, board: DependencyBoard,
                 garbage: GarbageCollector, metrics: WorkerMetrics | None = None,
                 stages: Sequence[Stage] | None = None, signals: Signals | None = None) -> None:
        """`stages` replaces the pipeline and `signals` the broker side (Redis: `TaskSignals` on the core's
        queue); both are for tests and benchmarks, which run the executor's rules with stubs."""
        self._core = core
        self._consumer = consumer
        self._board = board
        self._garbage = garbage
        self.metrics = metrics or WorkerMetrics()
        settings = core.settings
        limits = StageLimits.from_settings(settings)
        sizing = model_sizing(settings.embedding)
        processes = settings.worker.parse_processes
        self._parse_runner = ParseRunner(default_processes() if processes is None else processes,
                                         limits.chunk_builders)
        self._stages: Sequence[Stage] = (
            FetchStage(core.store, limits, settings),
            SplitStage(core, self._parse_runner),
            ParseStage(self._parse_runner, core.embedders, settings),
            ChunkStage(settings),
            EmbedStage(EmbedBatcher(core.embedders, batch_size=settings.embedding.batch_size,
                                    window=sizing.window,
                                    title_weight=settings.embedding.title_weight,
                                    concurrency=limits.embeds,
                                    parallel=sizing.parallel),
                         core.embedders, core.repo, settings),
            IndexStage(chunks, core.repo, limits),
        )
        self._injected = stages is not None
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
        self._signals: Signals = signals or TaskSignals(core.redis, core.keys, core.queue)
        self._deadlines = Deadlines()
        self._ledger = TaskLedger(core.repo, self._signals, consumer)

    async def drain(self) -> None:
        """Flush the writes and signals still queued (at shutdown, after the last task)."""
        await self._ledger.drain()
        await self._signals.drain()

    async def warm_up(self) -> None:
        """Load the model and start the parse processes before the first task needs them (not for an
        injected pipeline, which may need neither)."""
        if not self._injected:
            await self._parse_runner.start(await self._core.embedders.get())

    def parse_process_ids(self) -> list[int]:
        """Process ids of the parse processes running now (none in thread mode or before the first parse)."""
        pool = self._parse_runner.pool
        return pool.pids() if pool is not None else []

    async def close(self) -> None:
        """Stop the parse processes (at shutdown, after `drain`)."""
        await self._parse_runner.close()

    async def execute(self, message: QueueMessage) -> TaskResult:
        """Run the task of `message`. Raises only if settling itself failed (entry stays pending)."""
        if not message.task_id:
            await self._signals.ack(message)
            return TaskResult(Outcome.SKIPPED)
        try:
            claimed = await self._ledger.claim(message.task_id)
        except Exception as exc:
            dependency = dependency_of(exc)
            if dependency is None:
                raise
            # Nothing was committed: the delivery is retried once the dependency is back, uncounted.
            self._board.down(dependency, exc)
            return TaskResult(Outcome.RETRY, retry_after_s=self._core.settings.worker.retry_backoff_s)
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
        except asyncio.CancelledError:  # the worker is stopping: its grace is over, the entry stays unacked
            await self._return_interrupted(progress)
            raise
        finally:
            self.running.pop(task.id, None)

    async def _run(self, message: QueueMessage, claimed: ClaimedTask, progress: TaskProgress) -> TaskResult:
        task = claimed.task
        ctx: TaskContext | None = None
        watch = self._deadlines.watch(self._core.settings.worker.task_deadline_s)
        try:
            try:
                async with watch:
                    ctx = TaskContext(task=task, document=claimed.document, kb=claimed.kb, progress=progress,
                                      waiting=watch.paused)
                    for stage in self._stages:
                        await progress.check_cancelled()
                        await self._run_stage(stage, ctx, watch)
                    await self._complete(message, ctx, watch)
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
        ahead = sum(ctx.done_ahead.values())
        await self._through_outages(lambda: stage.run(ctx), ctx.progress, watch)
        watch.end_stage()
        # What this stage did for later ones is theirs; what an earlier one did for this one is this one's.
        handed_on = sum(ctx.done_ahead.values()) - ahead
        spent = time.monotonic() - started - handed_on + ctx.done_ahead.pop(stage.name, 0.0)
        ctx.progress.record_timing(stage.name, spent)
        self.metrics.observe_stage(stage.name, spent, chunks=len(ctx.chunks))

    async def _through_outages(self, step: Callable[[], Awaitable[T]], progress: TaskProgress,
                               watch: Watch | None) -> T:
        """Run `step`; while it fails because a dependency is down, wait for it and run it again."""
        while True:
            try:
                return await step()
            except Exception as exc:
                dependency = dependency_of(exc)
                if dependency is None:
                    raise
                await self._wait_for(dependency, exc, progress, watch)

    async def _wait_for(self, dependency: Dependency, exc: Exception, progress: TaskProgress,
                        watch: Watch | None) -> None:
        self._board.down(dependency, exc)
        progress.publish("waiting", message=f"waiting for the {dependency} to come back: {exc}")
        with watch.paused() if watch is not None else contextlib.nullcontext():
            while not await self._board.wait_up(dependency, timeout_s=DEPENDENCY_CANCEL_POLL_S):
                await progress.check_cancelled()

    async def _complete(self, message: QueueMessage, ctx: TaskContext, watch: Watch) -> None:
        async def complete() -> Completion:
            reused = ctx.reuse.reused if ctx.reuse is not None else 0
            return await ctx.progress.complete(
                chunk_count=len(ctx.chunks), token_count=ctx.token_count, format=ctx.format,
                chunks_embedded=len(ctx.chunks) - reused, chunks_reused=reused,
            )

        # The version it replaces (if it went live) was recorded as garbage in the same transaction.
        completion = await self._through_outages(complete, ctx.progress, watch)
        await self._signals.ack(message, ctx.progress.event("done", status="done", message=f"{len(ctx.chunks)} chunks"))
        if completion.replaced_version:
            await self._collect(ctx.document.id)

    async def _return_interrupted(self, progress: TaskProgress) -> None:
        """Hand a task the stopping worker interrupts back to the queue without spending its attempt (the
        entry, left unacked, is replayed by the next worker): rolling restarts must not dead-letter a healthy
        long document. Only the worker cancels a running task (`Worker._drain`, or its task group as it goes
        down); deadlines end a task with `TimeoutError`, not a cancellation. Its partial chunk set stays as
        it is: the replay has the same parse version and chunk ids, and overwrites it.

        The write runs to its end even if the stop cancels this task again: it is one short transaction,
        and left behind it would be a future nobody awaits."""
        returning = asyncio.ensure_future(
            asyncio.to_thread(self._core.repo.ledger.return_interrupted, progress.task_id, progress.version)
        )
        while not returning.done():
            with contextlib.suppress(asyncio.CancelledError):  # the caller re-raises the first cancellation
                await asyncio.shield(returning)
        try:
            returned = returning.result()
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
            log.warning("task %s: not returned to the queue (%r); this attempt stays counted", progress.task_id, exc)
            return
        if returned:
            progress.publish("returned", status="queued", message=RETURNED_LINE)
            log.info("task %s returned to the queue (worker stopping; the attempt is not counted)", progress.task_id)

    async def _settle_finished(self, message: QueueMessage) -> None:
        """A redelivered entry of a task already terminal (or gone): ack it; its garbage is recorded."""
        await self._signals.ack(message)

    async def _cancelled(self, message: QueueMessage, progress: TaskProgress, ctx: TaskContext | None) -> None:
        await self._signals.ack(message, progress.event("cancelled", status="cancelled"))
        if ctx is not None:
            await self._collect(ctx.document.id)

    async def _collect(self, document_id: str) -> None:
        """Remove a document's garbage now, best effort (the janitor retries whatever is left)."""
        try:
            await self._garbage.collect(document_id=document_id)
        except DocvecError as exc:
            log.info("garbage of document %s left to the janitor: %s", document_id, exc.message)

    async def _fail(self, message: QueueMessage, progress: TaskProgress, reason: str, *,
                    dead_letter: bool = False) -> None:
        task = await self._through_outages(
            lambda: lifecycle.fail(self._core, progress.task_id, progress.version, reason), progress, None
        )
        event = progress.event("failed", status="failed", message=reason)
        if dead_letter:
            await self._signals.dead_letter(message, reason, event)
        else:
            await self._signals.ack(message, event)
        if task is not None:
            await self._collect(task.document_id)

    async def _retry_or_give_up(self, message: QueueMessage, progress: TaskProgress, attempts: int,
                                error: str) -> TaskResult:
        max_attempts = self._core.settings.worker.max_attempts
        if attempts >= max_attempts:
            await self._fail(
                message, progress, f"gave up after {attempts} attempts; last error: {error}", dead_letter=True
            )
            return TaskResult(Outcome.FAILED)
        requeued = await self._through_outages(
            lambda: asyncio.to_thread(self._core.repo.ledger.requeue, progress.task_id, progress.version, error),
            progress, None,
        )
        if not requeued:  # cancelled meanwhile
            await self._signals.ack(message)
            return TaskResult(Outcome.CANCELLED)
        progress.publish("retry", status="queued", message=error)
        base_s = self._core.settings.worker.retry_backoff_s
        return TaskResult(Outcome.RETRY, retry_after_s=min(base_s * 2 ** max(attempts - 1, 0), MAX_BACKOFF_S))
