"""A running task's writes: progress, cancellation checks and its completion."""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from common.db import ClaimedTask, CompleteWrite, Completion, ProgressWrite
from common.dependencies import dependency_of
from common.errors import Cancelled
from worker.ledger import Signals, TaskEvent, TaskLedger, WriteFailed, WriteResult, task_event

log = logging.getLogger(__name__)


class TaskProgress:
    """Writes one delivery's progress to the DB (fenced by the task version, through the worker's
    `TaskLedger`) and publishes it for live views.

    Progress writes are write-behind: `report` queues the write and returns. A write that was fenced out
    (the task was cancelled or superseded meanwhile) raises `Cancelled` at the next `report`,
    `check_cancelled` or `complete`, and a write whose transaction failed raises its error there —
    unless the database was only unavailable: a progress line is then lost, the task goes on (its
    completion is awaited and waits for the database). Likewise a cancel check with Redis down counts
    as "not cancelled": the database fences a cancelled task's completion anyway.
    """

    def __init__(self, claimed: ClaimedTask, *, ledger: TaskLedger, signals: Signals, consumer: str) -> None:
        self._ledger = ledger
        self._signals = signals
        self.task_id = claimed.task.id
        self.version = claimed.task.version
        self.consumer = consumer
        self.stage: str | None = None
        self.progress = claimed.task.progress
        self.timings: dict[str, float] = {}  # this attempt's stage timings, written with the next report
        self._timings_written = 0
        self._writes: deque[asyncio.Future[ClaimedTask | WriteResult]] = deque()
        # The claim has just read the task as active in the database (the API marks a cancelled task
        # there before it sets the Redis flag): the first check needs no round trip.
        self._checked_by_claim = True

    async def report(self, progress: float, message: str | None = None, *, stage: str | None = None) -> None:
        self._raise_settled()
        progress = min(max(progress, 0.0), 1.0)
        if stage is not None:
            self.stage = stage
        self.progress = progress
        timings = dict(self.timings) if len(self.timings) != self._timings_written else None
        write = ProgressWrite(self.task_id, self.version, progress, message, stage, timings)
        self._writes.append(self._ledger.write(write, self.event("progress", message=message)))
        if timings is not None:
            self._timings_written = len(timings)

    def record_timing(self, stage: str, seconds: float) -> None:
        """Note how long `stage` took; it reaches the DB with the next report (or completion)."""
        self.timings[stage] = seconds

    async def check_cancelled(self) -> None:
        """Raise `Cancelled` if the API has flagged this task (or a progress write was fenced out)."""
        self._raise_settled()
        if self._checked_by_claim:
            self._checked_by_claim = False
            return
        try:
            flagged = await self._signals.cancelled(self.task_id)
        except Exception as exc:
            if dependency_of(exc) is None:
                raise
            log.info("task %s: cancel flag not checked (%r)", self.task_id, exc)
            return
        if flagged:
            raise Cancelled(f"task {self.task_id} was cancelled")

    async def complete(self, *, chunk_count: int, token_count: int, format: str, chunks_embedded: int = 0,
                       chunks_reused: int = 0) -> Completion:
        """Mark the task done, committed after (or with) its earlier progress writes; `Cancelled` if it was
        fenced out."""
        self._raise_settled()
        write = CompleteWrite(self.task_id, self.version, chunk_count, token_count, format, dict(self.timings),
                              chunks_embedded, chunks_reused)
        result = await self._ledger.write(write)
        if isinstance(result, WriteFailed):
            raise result.error
        if not isinstance(result, Completion):
            raise Cancelled(f"task {self.task_id} was cancelled or superseded before it completed")
        self.progress = 1.0
        return result

    def event(self, event: str, *, message: str | None = None, status: str | None = None) -> TaskEvent:
        return task_event(event, task_id=self.task_id, stage=self.stage, progress=self.progress,
                          worker=self.consumer, message=message, status=status)

    def publish(self, event: str, *, message: str | None = None, status: str | None = None) -> None:
        """Publish an event now (in the next Redis round), without a database write."""
        self._signals.publish(self.task_id, self.event(event, message=message, status=status))

    def _raise_settled(self) -> None:
        while self._writes and self._writes[0].done():
            result = self._writes.popleft().result()
            if isinstance(result, WriteFailed):
                if dependency_of(result.error) is not None:
                    log.info("task %s: a progress write was lost (%r)", self.task_id, result.error)
                    continue
                raise result.error
            if result is False:
                raise Cancelled(f"task {self.task_id} was cancelled or superseded")
