"""The consumer: reads the task streams through the `docvec-workers` group and runs tasks.

Every loop, in this order: (1) this consumer's own pending entries (replay after a restart, and
retries whose backoff has passed); (2) new entries, never more than free task slots. In-flight
entries are renewed (XCLAIM JUSTID) well within `worker.claim_idle_s`, and a heartbeat announces
the worker in `docvec:workers`. While a dependency is down (`common.dependencies`) the loop takes no
work at all; the tasks in flight wait for it, and a probe loop notices when it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata

from redis import exceptions as redis_errors

from common.dependencies import Dependency, DependencyBoard
from common.queue import QueueMessage
from common.redisconn import atomic_pipeline, error_code, server_info
from common.runtime import Core, dependency_probes
from lifecycle.garbage import GarbageCollector
from vectordb.base import VectorStore
from vectordb.chunkstore import ChunkStore
from worker.executor import Outcome, TaskExecutor, TaskResult
from worker.janitor import Janitor
from worker.liveness import redis_now_s
from worker.metrics import WorkerMetrics
from worker.pipeline import Stage
from worker.reclaim import Reclaimer

log = logging.getLogger(__name__)

REDIS_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
MAX_LOOP_BACKOFF_S = 10.0


def default_consumer_name() -> str:
    """A consumer name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _version() -> str:
    try:
        return metadata.version("docvec")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(slots=True)
class _InFlight:
    message: QueueMessage
    task: asyncio.Task[None]


@dataclass(slots=True)
class WorkerStats:
    started_at: float = field(default_factory=time.time)
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    chunks_embedded: int = 0


class Worker:
    """One worker process's consumer, heartbeat and renewal loops."""

    def __init__(self, core: Core, vectors: VectorStore, *, consumer: str | None = None,
                 concurrency: int | None = None, chunks: ChunkStore | None = None,
                 stages: Sequence[Stage] | None = None) -> None:
        settings = core.settings
        self._core = core
        self.consumer = consumer or default_consumer_name()
        self._slots = concurrency or settings.worker.max_concurrent_tasks
        chunks = chunks or ChunkStore(vectors, index_type=settings.vectordb.index_type,
                                      metric_type=settings.vectordb.metric_type)
        self.metrics = WorkerMetrics()
        probes = dependency_probes(core, chunks.ping, embedding=settings.embedding.backend == "openai")
        self.dependencies = DependencyBoard(probes,
                                            probe_interval_s=settings.worker.dependency_probe_s)
        garbage = GarbageCollector(core, chunks)
        self._executor = TaskExecutor(core, chunks, self.consumer, board=self.dependencies, garbage=garbage,
                                      metrics=self.metrics, stages=stages)
        self._inflight: dict[str, _InFlight] = {}
        self._retry_at: dict[str, float] = {}
        self._replay_on_start = True
        self._reclaimer = Reclaimer(core, self.consumer)
        self._janitor = Janitor(core, self.consumer, garbage)
        self._next_reclaim = 0.0
        self._redis_run_id: str | None = None
        self._stopping = asyncio.Event()
        self._stopped = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self.stats = WorkerStats()

    def stop(self) -> None:
        """Stop reading new work; in-flight tasks get `worker.shutdown_grace_s` to finish."""
        self._stopping.set()

    async def run(self) -> None:
        """Run until `stop()`; then drain, deregister and return."""
        w = self._core.settings.worker
        log.info("worker %s starting with %d task slots", self.consumer, self._slots)
        await self._core.queue.ensure_groups()
        await self._heartbeat()
        try:
            async with asyncio.TaskGroup() as loops:
                loops.create_task(self._every(w.heartbeat_interval_s, self._heartbeat))
                loops.create_task(self._every(min(w.claim_idle_s / 3, 10.0), self._renew))
                loops.create_task(self._every(w.janitor_interval_s, self._janitor_round, first_now=True))
                loops.create_task(self.warm_up())
                loops.create_task(self.dependencies.probe_loop(self._stopped))
                async with asyncio.TaskGroup() as tasks:
                    await self._consume(tasks)
                    await self._drain(w.shutdown_grace_s)
                await self._executor.drain()
                self._stopped.set()
        finally:
            await self._executor.close()
            await self._deregister()
            with contextlib.suppress(*REDIS_ERRORS):
                await self._janitor.release()
            log.info("worker %s stopped", self.consumer)

    async def warm_up(self) -> None:
        """Load the model and start the parse processes now, not under the first task; a failure is
        logged here and met again by that task (which then fails or retries by the usual rules)."""
        try:
            await self._executor.warm_up()
        except Exception as exc:  # the first task meets it again and settles it
            log.warning("worker %s could not warm up: %r", self.consumer, exc)

    def parse_process_ids(self) -> list[int]:
        """Process ids of this worker's parse processes running now."""
        return self._executor.parse_process_ids()

    async def _consume(self, tasks: asyncio.TaskGroup) -> None:
        queue = self._core.queue
        block_ms = self._core.settings.worker.block_ms
        failures = 0
        while not self._stopping.is_set():
            if self.dependencies.any_down:  # tasks in flight wait for it; new work would only wait too
                await self.dependencies.wait_any_change(block_ms / 1000)
                continue
            free = self._slots - len(self._inflight)
            if free <= 0:
                await self._wait_for_slot(block_ms / 1000)
                continue
            try:
                due = await self._due_pending(free) if self._replay_due() else []
                for message in due:
                    self._start(tasks, message)
                free -= len(due)
                if free > 0 and time.monotonic() >= self._next_reclaim:
                    self._next_reclaim = time.monotonic() + self._core.settings.worker.heartbeat_interval_s
                    claimed = await self._reclaimer.claim(free)
                    for message in claimed:
                        self._start(tasks, message)
                    free -= len(claimed)
                if free > 0 and not self._stopping.is_set():
                    for message in await queue.read_new(self.consumer, free, block_ms):
                        self.metrics.observe_queue_lag(message.entry_id)
                        if self.dependencies.any_down:  # went down while the read blocked: run it once back
                            self._retry_at[message.entry_id] = time.monotonic()
                            continue
                        self._start(tasks, message)
                failures = 0
            except redis_errors.ResponseError as exc:
                if error_code(exc) != "NOGROUP":  # the stream or the group is gone
                    raise
                log.warning("consumer group missing (Redis lost its data?); re-creating it")
                await queue.ensure_groups()
                self._replay_on_start = True
            except REDIS_ERRORS as exc:
                failures += 1
                delay_s = min(0.2 * 2 ** failures, MAX_LOOP_BACKOFF_S)
                log.warning("redis unavailable (%r); retrying in %.1fs", exc, delay_s)
                self.dependencies.down(Dependency.REDIS, exc)
                self._hold_reclaim(delay_s)
                await self._sleep_unless_stopping(delay_s)

    def _hold_reclaim(self, extra_s: float = 0.0) -> None:
        """No worker could heartbeat while Redis was away: give them a heartbeat timeout to show they are
        alive before taking their entries (a reclaim would cost their tasks an attempt)."""
        self._next_reclaim = max(self._next_reclaim,
                                 time.monotonic() + extra_s + self._core.settings.worker.heartbeat_timeout_s)

    def _replay_due(self) -> bool:
        """Own pending entries are read at start-up and when a retry's backoff has passed; reading
        them on every loop would inflate their delivery counts."""
        if self._replay_on_start:
            return True
        now = time.monotonic()
        return any(at <= now for entry_id, at in self._retry_at.items() if entry_id not in self._inflight)

    async def _due_pending(self, free: int) -> list[QueueMessage]:
        count = len(self._inflight) + len(self._retry_at) + free
        pending = await self._core.queue.read_own_pending(self.consumer, count)
        if len(pending) < count:  # every pending entry seen: the start-up replay is complete
            self._replay_on_start = False
        now = time.monotonic()
        return [
            m for m in pending
            if m.entry_id not in self._inflight and self._retry_at.get(m.entry_id, 0.0) <= now
        ][:free]

    def _start(self, tasks: asyncio.TaskGroup, message: QueueMessage) -> None:
        task = tasks.create_task(self._execute(message), name=f"task-{message.task_id}")
        self._inflight[message.entry_id] = _InFlight(message, task)

    async def _execute(self, message: QueueMessage) -> None:
        try:
            result = await self._executor.execute(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # settling failed (store or Redis down): the entry stays pending
            log.warning("task %s could not be settled: %r", message.task_id, exc)
            result = TaskResult(Outcome.RETRY, retry_after_s=self._core.settings.worker.retry_backoff_s)
        finally:
            self._inflight.pop(message.entry_id, None)
            self._slot_freed.set()
        self._account(message, result)

    def _account(self, message: QueueMessage, result: TaskResult) -> None:
        self.metrics.task_finished(result.outcome.value)
        if result.outcome is Outcome.RETRY:
            self._retry_at[message.entry_id] = time.monotonic() + result.retry_after_s
            self.stats.retried += 1
            return
        self._retry_at.pop(message.entry_id, None)
        if result.outcome is Outcome.DONE:
            self.stats.done += 1
        elif result.outcome is Outcome.FAILED:
            self.stats.failed += 1
        elif result.outcome is Outcome.CANCELLED:
            self.stats.cancelled += 1

    async def _wait_for_slot(self, timeout_s: float) -> None:
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._slot_freed.wait()

    async def _drain(self, grace_s: float) -> None:
        """Give in-flight tasks `grace_s` to finish, then cancel them: their entries stay pending."""
        running = [f.task for f in self._inflight.values()]
        if not running:
            return
        log.info("waiting up to %.0fs for %d in-flight tasks", grace_s, len(running))
        _, still_running = await asyncio.wait(running, timeout=grace_s)
        for task in still_running:
            task.cancel()

    async def _every(self, interval_s: float, action: Callable[[], Awaitable[object]], *,
                     first_now: bool = False) -> None:
        """Run `action` every `interval_s` until the worker stops. A failing round is logged and the
        loop goes on: housekeeping must never take the worker down."""
        wait_first = not first_now
        while not self._stopped.is_set():
            if wait_first:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval_s):
                        await self._stopped.wait()
                if self._stopped.is_set():
                    return
            wait_first = True
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a background loop outlives any one failed round
                log.warning("%s failed: %r", getattr(action, "__name__", action), exc)

    async def _janitor_round(self) -> None:
        await self._janitor.run_once()

    async def _sleep_unless_stopping(self, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()

    async def _renew(self) -> None:
        messages = [f.message for f in self._inflight.values()]
        if messages:
            await self._core.queue.renew(self.consumer, messages)

    def heartbeat_record(self) -> dict[str, object]:
        return {
            "consumer": self.consumer,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "version": _version(),
            "started_at": self.stats.started_at,
            "heartbeat_at": time.time(),
            "slots": self._slots,
            "in_flight": [
                {"task_id": p.task_id, "stage": p.stage, "progress": round(p.progress, 4)}
                for p in self._executor.running.values()
            ],
            "done": self.stats.done,
            "failed": self.stats.failed,
            "cancelled": self.stats.cancelled,
            "retried": self.stats.retried,
            "stopping": self._stopping.is_set(),
            "chunks_embedded": self.metrics.chunks_embedded,
            "embed_chunks_per_s": self.metrics.embed_chunks_per_s,
            "queue_lag_s": self.metrics.last_queue_lag_s,
            "dependencies_down": self.dependencies.snapshot(),
            "metrics": self.metrics.snapshot(),
        }

    async def _heartbeat(self) -> None:
        keys, w = self._core.keys, self._core.settings.worker
        run_id = str((await server_info(self._core.redis, keys.workers))["run_id"])
        if self._redis_run_id is not None and run_id != self._redis_run_id:
            log.warning("redis restarted; replaying this consumer's pending entries")
            self._replay_on_start = True
            self._hold_reclaim()
        self._redis_run_id = run_id
        now_s = await redis_now_s(self._core.redis)
        async with atomic_pipeline(self._core.redis) as pipe:
            pipe.zadd(keys.workers, {self.consumer: now_s})
            pipe.set(keys.worker(self.consumer), json.dumps(self.heartbeat_record()),
                     ex=max(int(w.heartbeat_timeout_s * 2), 1))
            await pipe.execute()

    async def _deregister(self) -> None:
        keys = self._core.keys
        try:
            async with atomic_pipeline(self._core.redis) as pipe:
                pipe.zrem(keys.workers, self.consumer)
                pipe.delete(keys.worker(self.consumer))
                await pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("could not deregister %s: %r", self.consumer, exc)
