"""Group commit of what a worker's tasks write: one database transaction and one Redis round trip per round.

Every task of a worker claims its delivery, writes progress, completes, checks its cancel flag, publishes
events and acks its entry. Done one task at a time, that is a thread hop and a transaction per write and a
round trip per signal, and the task path costs milliseconds of Python before it does anything. Here each
kind of operation goes through a `GroupCommit`: an operation joins the current round, and while a round
runs the next one fills up, so N concurrent tasks pay for one transaction (`TaskLedger`) and one pipeline
(`TaskSignals`) instead of N. When the worker is idle a round holds one operation and costs what it did
before.

Ordering: rounds run one at a time and in order, and a round applies its operations in the order they
were submitted, so one task's writes land in the order it made them. Progress writes are write-behind:
`TaskProgress` does not wait for them, and a write that was fenced out or failed surfaces at that task's
next report. A completion is awaited, and its task's earlier progress writes are committed with it or
before it. Events are published only after the writes they describe are committed; an entry is acked in
a later round than the completion it follows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from redis import exceptions as redis_errors

from common.db import ClaimedTask, Completion, Repository, TaskWrite
from common.keys import Keys
from common.queue import QueueMessage, TaskQueue
from common.redisconn import RedisClient, is_cluster

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    """Collects operations from many coroutines and hands them to `flush` in rounds, one round at a time.

    `flush(items)` returns one result per item, or raises: then every item of the round fails with that
    error. A caller that stops waiting does not stop its operation.
    """

    def __init__(self, flush: Callable[[list[T]], Awaitable[Sequence[R]]]) -> None:
        self._flush = flush
        self._pending: list[tuple[T, asyncio.Future[R] | None]] = []
        self._runner: asyncio.Task[None] | None = None

    def submit(self, item: T) -> asyncio.Future[R]:
        """Add `item` to the next round; the future gives its result."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._add(item, future)
        return future

    def post(self, item: T) -> None:
        """Add `item` to the next round, wanting no result (the round logs its own failures)."""
        self._add(item, None)

    def _add(self, item: T, future: asyncio.Future[R] | None) -> None:
        self._pending.append((item, future))
        if self._runner is None:
            self._runner = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                await asyncio.sleep(0)  # let the coroutines woken by the last round add to this one
                batch, self._pending = self._pending, []
                try:
                    results = await self._flush([item for item, _ in batch])
                except Exception as exc:  # the whole round failed: each caller gets the error
                    for _, future in batch:
                        if future is not None and not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), result in zip(batch, results, strict=True):
                    if future is not None and not future.done():
                        future.set_result(result)
        finally:
            self._runner = None

    async def drain(self) -> None:
        """Wait until every submitted operation has been flushed."""
        while self._runner is not None:
            await asyncio.shield(self._runner)


@dataclass(frozen=True, slots=True)
class WriteFailed:
    """The result of a write whose round failed (a write-behind write reports its error this way, so that
    an error nobody looks at any more is not logged as "never retrieved")."""

    error: Exception


WriteResult = bool | Completion | None | WriteFailed


TaskEvent = dict[str, Any]


def task_event(event: str, *, task_id: str, stage: str | None, progress: float, worker: str,
               message: str | None = None, status: str | None = None) -> TaskEvent:
    """One progress event, as the SSE route relays it (JSON-encoded when published)."""
    return {
        "event": event,
        "task_id": task_id,
        "stage": stage,
        "progress": round(progress, 4),
        "message": message,
        "status": status,
        "worker": worker,
        "at": time.time(),
    }


# Publish a round's events: ARGV[1] is the all-tasks channel, ARGV[2] a JSON list of [task channel, event]
# pairs. One command and one JSON encoding per round instead of two PUBLISHes and an encoding per event.
_PUBLISH_SCRIPT = """
for _, pair in ipairs(cjson.decode(ARGV[2])) do
  local payload = cjson.encode(pair[2])
  redis.call('PUBLISH', pair[1], payload)
  redis.call('PUBLISH', ARGV[1], payload)
end
return 0
"""


@dataclass(frozen=True, slots=True)
class _CancelCheck:
    task_id: str


@dataclass(frozen=True, slots=True)
class _Publish:
    task_id: str
    event: TaskEvent


@dataclass(frozen=True, slots=True)
class _Ack:
    message: QueueMessage


_Signal = _CancelCheck | _Publish | _Ack


class Signals(Protocol):
    """What a worker's tasks signal to the broker: cancel flag checks, events, acks and dead letters.

    `TaskSignals` is the Redis one; tests of the executor's decisions use an in-memory stub broker.
    """

    async def cancelled(self, task_id: str) -> bool: ...

    def publish(self, task_id: str, event: TaskEvent) -> None: ...

    async def ack(self, message: QueueMessage, event: TaskEvent | None = None) -> None: ...

    async def dead_letter(self, message: QueueMessage, reason: str, event: TaskEvent | None = None) -> None: ...

    async def drain(self) -> None: ...


class TaskSignals:
    """The Redis side of a worker's tasks, in rounds: cancel flag checks, published events and acks (and,
    rare, dead letters, sent at once)."""

    def __init__(self, redis: RedisClient, keys: Keys, queue: TaskQueue) -> None:
        self._redis = redis
        self._keys = keys
        self._queue = queue
        self._rounds: GroupCommit[_Signal, bool | None] = GroupCommit(self._flush)

    async def cancelled(self, task_id: str) -> bool:
        """Whether the API has set the task's cancel flag."""
        return bool(await self._rounds.submit(_CancelCheck(task_id)))

    def publish(self, task_id: str, event: TaskEvent) -> None:
        """Publish an event on the task's channel and the all-tasks channel, in the next round (live views
        only: a lost event loses nothing, the database holds the state)."""
        self._rounds.post(_Publish(task_id, event))

    async def ack(self, message: QueueMessage, event: TaskEvent | None = None) -> None:
        """Ack and delete the entry (after publishing `event`, if any): its task is finished for good."""
        if event is not None:
            self.publish(message.task_id, event)
        await self._rounds.submit(_Ack(message))

    async def dead_letter(self, message: QueueMessage, reason: str, event: TaskEvent | None = None) -> None:
        """Copy the entry to the dead-letter stream and ack it (after publishing `event`, if any); rare
        enough to go straight to Redis rather than through a round."""
        if event is not None:
            self.publish(message.task_id, event)
        await self._queue.dead_letter(message, reason)

    async def drain(self) -> None:
        await self._rounds.drain()

    async def _flush(self, signals: list[_Signal]) -> list[bool | None]:
        keys = self._keys
        checks = [s.task_id for s in signals if isinstance(s, _CancelCheck)]
        events = [s for s in signals if isinstance(s, _Publish)]
        acks = [s.message for s in signals if isinstance(s, _Ack)]
        cluster = is_cluster(self._redis)
        try:
            if cluster:  # redis-py's cluster pipeline refuses PUBLISH (and EVAL without keys): one by one
                for event in events:
                    payload = json.dumps(event.event)
                    for channel in (keys.task_events(event.task_id), keys.all_events):
                        await self._redis.publish(channel, payload)
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_id in checks:
                    pipe.exists(keys.cancel(task_id))
                if events and not cluster:
                    pairs = json.dumps([(keys.task_events(e.task_id), e.event) for e in events])
                    pipe.eval(_PUBLISH_SCRIPT, 0, keys.all_events, pairs)
                self._queue.add_ack(pipe, acks)
                replies = await pipe.execute()
        except (redis_errors.RedisError, OSError) as exc:
            if events:
                log.warning("%d progress events not published: %r", len(events), exc)
            raise
        cancelled = iter(replies[: len(checks)])
        return [bool(next(cancelled)) if isinstance(s, _CancelCheck) else None for s in signals]


@dataclass(frozen=True, slots=True)
class _Claim:
    task_id: str


class TaskLedger:
    """The database side of a worker's tasks, in rounds: claims, progress writes and completions of
    every concurrent task in one transaction (run in a thread), then the events of the writes published."""

    def __init__(self, repo: Repository, signals: Signals, consumer: str) -> None:
        self._repo = repo
        self._signals = signals
        self._consumer = consumer
        self._rounds: GroupCommit[tuple[_Claim | TaskWrite, TaskEvent | None], ClaimedTask | WriteResult] = (
            GroupCommit(self._flush)
        )

    async def claim(self, task_id: str) -> ClaimedTask | None:
        """Claim a delivery of the task (see `WorkerLedger.claim`); None if it is terminal or gone."""
        result = await self._rounds.submit((_Claim(task_id), None))
        if isinstance(result, WriteFailed):
            raise result.error
        assert result is None or isinstance(result, ClaimedTask)
        return result

    def write(self, write: TaskWrite, event: TaskEvent | None = None) -> asyncio.Future[ClaimedTask | WriteResult]:
        """Queue a progress write or completion; `event` is published once it is committed (and not
        fenced out). The future gives what `WorkerLedger.write` gave for it, or `WriteFailed`."""
        return self._rounds.submit((write, event))

    async def drain(self) -> None:
        await self._rounds.drain()

    async def _flush(self, ops: list[tuple[_Claim | TaskWrite, TaskEvent | None]]) -> list[ClaimedTask | WriteResult]:
        claims = [op.task_id for op, _ in ops if isinstance(op, _Claim)]
        writes = [op for op, _ in ops if not isinstance(op, _Claim)]
        try:
            claimed, written = await asyncio.to_thread(self._apply, claims, writes)
        except Exception as exc:  # the round's transaction failed: nothing of it was committed
            return [WriteFailed(exc)] * len(ops)
        claimed_iter, written_iter = iter(claimed), iter(written)
        results: list[ClaimedTask | WriteResult] = []
        for op, event in ops:
            if isinstance(op, _Claim):
                results.append(next(claimed_iter))
                continue
            result = next(written_iter)
            if event is not None and result:
                self._signals.publish(op.task_id, event)
            results.append(result)
        return results

    def _apply(self, claims: list[str], writes: list[TaskWrite]) -> tuple[list[ClaimedTask | None], list[WriteResult]]:
        with self._repo.transaction():
            claimed = self._repo.ledger.claim(claims, self._consumer) if claims else []
            written: list[WriteResult] = list(self._repo.ledger.write(writes)) if writes else []
        return claimed, written
