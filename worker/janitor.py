"""The janitor: run by one worker at a time under a Redis lease.

Each round it (1) re-creates the consumer group if Redis lost it, (2) removes expired workers from
`docvec:workers` and deletes their consumers from the group once their pending entries have been
claimed by live workers (checked and deleted in one atomic step, so an entry read meanwhile is never
stranded), (3) re-enqueues orphans: tasks the database says are queued or running but whose stream
entry is gone (a crash between the task row and the XADD, or a Redis that lost recent writes) or
stranded (delivered, yet in no consumer's pending list), and (4) removes garbage (`lifecycle.garbage`).
The full orphan scan runs at start-up, after a Redis restart and periodically.
"""

from __future__ import annotations

import asyncio
import logging
import time

from common.queue import EntryState
from common.redisconn import atomic_pipeline, server_info
from common.runtime import Core
from lifecycle import documents as lifecycle
from lifecycle.garbage import GarbageCollector
from worker.liveness import expired_workers, live_consumers

log = logging.getLogger(__name__)

ORPHAN_SCAN_LIMIT = 100_000
ORPHAN_CHECK_BATCH = 1_000  # stream entries checked per round trip

# Take or extend the lease only if free or already ours: one atomic step.
_LEASE_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""


class Janitor:
    """Fleet housekeeping; `run_once` is a no-op unless this worker holds the lease."""

    def __init__(self, core: Core, consumer: str, garbage: GarbageCollector) -> None:
        self._core = core
        self._consumer = consumer
        self._garbage = garbage
        self._last_full_scan = 0.0
        self._redis_run_id: str | None = None
        self.requeued = 0

    async def holds_lease(self) -> bool:
        lease_ms = int(self._core.settings.worker.janitor_lease_s * 1000)
        got = await self._core.redis.eval(_LEASE_SCRIPT, 1, self._core.keys.janitor_lock, self._consumer, lease_ms)
        return bool(got)

    async def release(self) -> None:
        lock = self._core.keys.janitor_lock
        if await self._core.redis.get(lock) == self._consumer:
            await self._core.redis.delete(lock)

    async def run_once(self) -> bool:
        """One round; returns False when another worker holds the lease."""
        if not await self.holds_lease():
            return False
        await self._core.queue.ensure_groups()
        await self._prune_dead_workers()
        await self._requeue_orphans(full=await self._full_scan_due())
        await self._garbage.collect()
        return True

    async def _full_scan_due(self) -> bool:
        run_id = str((await server_info(self._core.redis, self._core.keys.workers))["run_id"])
        restarted = self._redis_run_id is not None and run_id != self._redis_run_id
        self._redis_run_id = run_id
        interval_s = self._core.settings.worker.orphan_scan_interval_s
        due = restarted or time.monotonic() - self._last_full_scan >= interval_s or self._last_full_scan == 0.0
        if restarted:
            log.warning("redis restarted (run_id %s): checking every active task's stream entry", run_id)
        if due:
            self._last_full_scan = time.monotonic()
        return due

    async def _prune_dead_workers(self) -> None:
        core, w = self._core, self._core.settings.worker
        consumers = await core.queue.consumers()
        for name in await expired_workers(core.redis, core.keys, w.heartbeat_timeout_s):
            if consumers.get(name) is not None and consumers[name].pending > 0:
                continue  # live workers claim its entries first
            if not await core.queue.delete_idle_consumer(name):
                continue  # it read entries since the snapshot: it is alive after all, or they get claimed
            async with atomic_pipeline(core.redis) as pipe:
                pipe.zrem(core.keys.workers, name)
                pipe.delete(core.keys.worker(name))
                await pipe.execute()
            log.info("janitor removed dead worker %s", name)
        alive = await live_consumers(core.redis, core.keys, w.heartbeat_timeout_s)
        timeout_ms = w.heartbeat_timeout_s * 1000
        for name, info in consumers.items():
            if name not in alive and info.pending == 0 and info.idle_ms > timeout_ms:
                await core.queue.delete_idle_consumer(name)

    async def _requeue_orphans(self, *, full: bool) -> None:
        repo, queue, grace_s = self._core.repo, self._core.queue, self._core.settings.worker.orphan_grace_s
        candidates = [(t.id, t.stream_id) for t in await asyncio.to_thread(repo.tasks.unenqueued, grace_s)]
        if full:
            entries = await asyncio.to_thread(repo.tasks.active_stream_entries, ORPHAN_SCAN_LIMIT)
            for begin in range(0, len(entries), ORPHAN_CHECK_BATCH):
                batch = entries[begin : begin + ORPHAN_CHECK_BATCH]
                states = await queue.entry_states([(priority, entry) for _, priority, entry in batch])
                candidates.extend((task_id, entry) for (task_id, _, entry), state in zip(batch, states, strict=True)
                                  if state is not EntryState.LIVE)
        if not candidates:
            return
        # Most entries found missing belong to tasks that finished since the scan read them.
        current = await asyncio.to_thread(repo.tasks.get_many, [task_id for task_id, _ in candidates])
        for task_id, seen_stream_id in candidates:
            task = current.get(task_id)
            if task is None or task.is_terminal or (task.stream_id and task.stream_id != seen_stream_id):
                continue  # gone, finished or re-enqueued meanwhile
            state = EntryState.GONE
            if task.stream_id:
                state = await queue.entry_state(task.priority, task.stream_id)
                if state is EntryState.LIVE:
                    continue
            if task.status == "running":  # its delivery was lost with its entry: not the document's doing
                await asyncio.to_thread(repo.ledger.refund_lost_delivery, task.id, task.version)
            await lifecycle.enqueue(self._core, task)
            if state is EntryState.STRANDED and task.stream_id:  # nobody holds it: it would never be acked
                await queue.delete_entry(task.priority, task.stream_id)
            self.requeued += 1
            log.warning("janitor re-enqueued %s task %s (%s)", state.name.lower(), task_id, task.status)
