"""The janitor's decisions (worker/janitor.py) against the real redis-server of the test session: the
lease, which consumers it removes, which tasks it enqueues again, and the garbage it sweeps.

A fleet of worker processes relying on it (dead workers removed, orphans enqueued): tests/worker/test_fleet.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from common.db import KbRecord, TaskRecord
from common.errors import NotFound
from common.runtime import Core
from lifecycle import documents as ingest
from lifecycle.garbage import GarbageCollector
from tests.dbcalls import claim_one, complete_one, create_document
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from tests.worker.test_consumer import PROSE
from vectordb.chunkstore import ChunkRow, ChunkStore
from worker.consumer import Worker
from worker.janitor import Janitor

MakeJanitor = Callable[[str], Janitor]


@pytest.fixture
async def janitor_for(core: Core, vectors: Any) -> AsyncIterator[MakeJanitor]:
    """`janitor_for(consumer)`: a janitor on the test's core and vector store; leases released at the end."""
    made: list[Janitor] = []

    def make(consumer: str) -> Janitor:
        janitor = Janitor(core, consumer, GarbageCollector(core, ChunkStore(vectors), settle_s=0.0))
        made.append(janitor)
        return janitor

    yield make
    for janitor in made:
        await janitor.release()


async def _register(core: Core, name: str, *, heartbeat_age_s: float, streams: tuple[str, ...] = ()) -> None:
    """A worker as the heartbeat leaves it: in the registry (heartbeat `heartbeat_age_s` old), its record,
    and a consumer of the group on `streams`."""
    await core.redis.zadd(core.keys.workers, {name: time.time() - heartbeat_age_s})
    await core.redis.set(core.keys.worker(name), "{}")
    for stream in streams:
        await core.redis.xgroup_createconsumer(stream, core.keys.group, name)


async def _registered(core: Core, name: str) -> tuple[bool, bool, bool]:
    """(in the group, in the registry, has a worker record)."""
    return (name in await core.queue.consumers(),
            await core.redis.zscore(core.keys.workers, name) is not None,
            bool(await core.redis.exists(core.keys.worker(name))))


async def _queued(core: Core, name: str = "a.md") -> TaskRecord:
    """A queued task whose row exists but which was never added to its stream (the API crashed between)."""
    kb = await _kb(core)
    blob = f"kb/{name}"
    await core.store.put(blob, PROSE.encode())
    _, task = await asyncio.to_thread(create_document, core.repo, kb, filename=name, size_bytes=len(PROSE),
                                      sha256=str(len(name)).rjust(64, "0"), blob_key=blob)
    return task


async def _kb(core: Core) -> KbRecord:
    try:
        return await asyncio.to_thread(core.repo.kbs.get, "kb")
    except NotFound:  # the test's first use
        return await ingest.create_kb(core, "kb", tenant="default")


async def _stream_task_ids(core: Core) -> list[str]:
    return [fields["task_id"] for _, fields in await core.redis.xrange(core.keys.stream_normal)]


# ---------------------------------------------------------------------------------------------------- lease


async def test_only_the_lease_holder_runs_a_round(core: Core, janitor_for: MakeJanitor) -> None:
    first, second = janitor_for("worker-a"), janitor_for("worker-b")
    assert await first.run_once() is True
    assert await first.run_once() is True, "the holder extends its own lease"
    assert await second.run_once() is False
    await second.release()  # not its lease: nothing happens
    assert await core.redis.get(core.keys.janitor_lock) == "worker-a"
    await first.release()
    assert await second.run_once() is True


async def test_a_lease_its_holder_stopped_renewing_passes_to_another_worker(
        core: Core, janitor_for: MakeJanitor) -> None:
    core.settings.worker.janitor_lease_s = 0.05
    assert await janitor_for("crashed").run_once() is True
    async with asyncio.timeout(5):
        while await core.redis.exists(core.keys.janitor_lock):
            await asyncio.sleep(0.01)
    assert await janitor_for("next").run_once() is True


async def test_a_worker_without_the_lease_changes_nothing(core: Core, janitor_for: MakeJanitor) -> None:
    await _register(core, "dead", heartbeat_age_s=3600, streams=core.keys.streams)
    task = await _queued(core)
    core.settings.worker.orphan_grace_s = 0.0
    assert await janitor_for("holder").holds_lease()
    assert await janitor_for("other").run_once() is False
    assert await _registered(core, "dead") == (True, True, True)
    assert await _stream_task_ids(core) == []
    assert (await asyncio.to_thread(core.repo.tasks.get, task.id)).stream_id is None


# ------------------------------------------------------------------------------------------ dead consumers


async def test_a_dead_worker_holding_nothing_is_removed_from_the_group_and_the_registry(
        core: Core, janitor_for: MakeJanitor) -> None:
    await _register(core, "dead", heartbeat_age_s=3600, streams=core.keys.streams)
    await _register(core, "alive", heartbeat_age_s=0, streams=core.keys.streams)
    assert await janitor_for("janitor").run_once()
    assert await _registered(core, "dead") == (False, False, False)
    assert await _registered(core, "alive") == (True, True, True)


async def test_a_dead_worker_is_removed_only_once_its_entries_were_claimed(
        core: Core, janitor_for: MakeJanitor) -> None:
    await _register(core, "dead", heartbeat_age_s=3600)
    await core.queue.enqueue("t")
    assert len(await core.queue.read_new("dead", 1, block_ms=10)) == 1
    janitor = janitor_for("janitor")
    assert await janitor.run_once()
    assert await _registered(core, "dead") == (True, True, True), "its entry would be stranded"
    claimed = await core.queue.claim_from("dead", "rescuer", 10, min_idle_ms=0)
    assert [m.task_id for m in claimed] == ["t"]
    assert await janitor.run_once()
    assert await _registered(core, "dead") == (False, False, False)
    assert [m.task_id for m in await core.queue.read_own_pending("rescuer", 5)] == ["t"]


async def test_an_unregistered_consumer_is_deleted_once_idle_past_the_heartbeat_timeout(
        core: Core, janitor_for: MakeJanitor) -> None:
    await core.redis.xgroup_createconsumer(core.keys.stream_normal, core.keys.group, "never-heartbeat")
    janitor = janitor_for("janitor")
    assert await janitor.run_once()
    assert "never-heartbeat" in await core.queue.consumers(), "not idle for a heartbeat timeout yet"
    core.settings.worker.heartbeat_timeout_s = 0.02
    async with asyncio.timeout(5):
        while "never-heartbeat" in await core.queue.consumers():
            await asyncio.sleep(0.01)
            assert await janitor.run_once()


async def test_the_janitor_never_strands_an_entry_read_after_its_snapshot(
        core: Core, vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer whose heartbeat expired reads an entry just after the janitor looked at its (empty)
    pending list; deleting it then would strand the entry in no pending list, for good."""
    kb = await ingest.create_kb(core, "kb", tenant="default")
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    await core.redis.zadd(core.keys.workers, {"late-worker": time.time() - 3600})  # its heartbeat expired
    await core.redis.xgroup_createconsumer(core.keys.stream_normal, core.keys.group, "late-worker")
    real_consumers = core.queue.consumers

    async def snapshot_then_read() -> Any:
        seen = await real_consumers()
        # ... and right after the janitor's snapshot, the late worker takes the entry.
        assert [m.task_id for m in await core.queue.read_new("late-worker", 1, block_ms=10)] == [task.id]
        return seen

    monkeypatch.setattr(core.queue, "consumers", snapshot_then_read)
    assert await Worker(core, vectors, consumer="janitor")._janitor.run_once()
    monkeypatch.setattr(core.queue, "consumers", real_consumers)
    pending = await core.redis.xpending(core.keys.stream_normal, core.keys.group)
    assert pending["pending"] == 1, "the entry the late worker read was stranded"
    async with running_worker(core, vectors):  # a live worker claims it from the dead consumer
        done = await wait_for_status(core, task.id, timeout_s=30)
    assert done.status == "done"


# --------------------------------------------------------------------------------------------------- orphans


async def test_a_task_never_added_to_its_stream_is_enqueued_after_the_grace_period(
        core: Core, janitor_for: MakeJanitor) -> None:
    task = await _queued(core)
    janitor = janitor_for("janitor")
    assert await janitor.run_once()
    assert await _stream_task_ids(core) == [], "the API may still be about to add it"
    core.settings.worker.orphan_grace_s = 0.0
    assert await janitor.run_once()
    assert await _stream_task_ids(core) == [task.id] and janitor.requeued == 1
    stored = await asyncio.to_thread(core.repo.tasks.get, task.id)
    assert stored.stream_id == (await core.redis.xrange(core.keys.stream_normal))[0][0]
    assert await janitor.run_once()
    assert await _stream_task_ids(core) == [task.id], "enqueued once"


async def test_tasks_with_live_entries_and_finished_tasks_are_left_alone(
        core: Core, janitor_for: MakeJanitor) -> None:
    kb = await _kb(core)
    _, waiting = await submit_document(core, kb, "waiting.md", PROSE.encode())
    _, finished = await submit_document(core, kb, "finished.md", PROSE.encode() + b" ")
    held = (await core.queue.read_new("w1", 2, block_ms=10))[1]
    assert held.task_id == finished.id
    claimed = await asyncio.to_thread(claim_one, core.repo, finished.id, "w1")
    assert claimed is not None
    await asyncio.to_thread(complete_one, core.repo, finished.id, claimed.version, chunk_count=1, token_count=1,
                            format="markdown")
    await core.queue.ack(held)
    janitor = janitor_for("janitor")
    assert await janitor.run_once()  # the first round scans every active task's entry
    assert janitor.requeued == 0
    assert await _stream_task_ids(core) == [waiting.id]


async def test_a_task_that_finished_after_the_scan_read_it_is_not_enqueued_again(
        core: Core, janitor_for: MakeJanitor, monkeypatch: pytest.MonkeyPatch) -> None:
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "a.md", PROSE.encode())
    snapshot = await asyncio.to_thread(core.repo.tasks.active_stream_entries, 100)
    assert [task_id for task_id, _, _ in snapshot] == [task.id]
    (message,) = await core.queue.read_new("w1", 1, block_ms=10)
    claimed = await asyncio.to_thread(claim_one, core.repo, task.id, "w1")
    assert claimed is not None
    await asyncio.to_thread(complete_one, core.repo, task.id, claimed.version, chunk_count=1, token_count=1,
                            format="markdown")
    await core.queue.ack(message)  # ... so its entry is gone by the time the scan looks at it
    monkeypatch.setattr(core.repo.tasks, "active_stream_entries", lambda limit: snapshot)
    janitor = janitor_for("janitor")
    assert await janitor.run_once()
    assert janitor.requeued == 0 and await _stream_task_ids(core) == []


async def test_the_full_scan_runs_at_start_up_then_once_per_interval(core: Core, janitor_for: MakeJanitor) -> None:
    kb = await _kb(core)
    _, task = await submit_document(core, kb, "a.md", PROSE.encode())
    janitor = janitor_for("janitor")
    assert await janitor.run_once()
    assert task.stream_id is not None
    await core.redis.xdel(core.keys.stream_normal, task.stream_id)  # Redis lost the entry
    assert await janitor.run_once()
    assert janitor.requeued == 0, "the next full scan is not due yet"
    core.settings.worker.orphan_scan_interval_s = 0.01
    await asyncio.sleep(0.02)
    assert await janitor.run_once()
    assert janitor.requeued == 1 and await _stream_task_ids(core) == [task.id]


async def test_a_stranded_entry_is_enqueued_again_by_the_orphan_scan(core: Core, vectors: Any) -> None:
    kb = await ingest.create_kb(core, "kb", tenant="default")
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    assert [m.task_id for m in await core.queue.read_new("gone-worker", 1, block_ms=10)] == [task.id]
    # Deleted while it held the entry (what the janitor used to do): delivered, yet in no pending list.
    await core.redis.xgroup_delconsumer(core.keys.stream_normal, core.keys.group, "gone-worker")
    assert (await core.redis.xpending(core.keys.stream_normal, core.keys.group))["pending"] == 0
    core.settings.worker.orphan_scan_interval_s = 0.2
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id, timeout_s=30)
    assert done.status == "done"
    assert await core.redis.xlen(core.keys.stream_normal) == 0, "the stranded entry was left behind"


async def test_a_task_whose_entry_redis_lost_runs_again_without_spending_an_attempt(core: Core, vectors: Any) -> None:
    kb = await ingest.create_kb(core, "kb", tenant="default")
    _, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    (message,) = await core.queue.read_new("gone-with-redis", 1, block_ms=10)
    claimed = await asyncio.to_thread(claim_one, core.repo, task.id, "gone-with-redis")
    assert claimed is not None and claimed.attempts == 1
    # Redis came back without the entry (its AOF lost): the stream no longer has it.
    await core.redis.xack(message.stream, core.keys.group, message.entry_id)
    await core.redis.xdel(message.stream, message.entry_id)
    core.settings.worker.orphan_scan_interval_s = 0.2
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id, timeout_s=30)
    assert (done.status, done.attempts) == ("done", 1)


# ------------------------------------------------------------------------------------- group, garbage


async def test_a_consumer_group_redis_lost_is_created_again(core: Core, janitor_for: MakeJanitor) -> None:
    await core.redis.delete(*core.keys.streams)
    assert await janitor_for("janitor").run_once()
    for stream in core.keys.streams:
        assert [g["name"] for g in await core.redis.xinfo_groups(stream)] == [core.keys.group]


async def test_each_round_removes_the_garbage_that_is_due(
        core: Core, vectors: Any, janitor_for: MakeJanitor) -> None:
    chunks = ChunkStore(vectors)
    kb = await ingest.create_kb(core, "kb", tenant="default", chunks=chunks)
    document, task = await submit_document(core, kb, "a.md", PROSE.encode())
    rows = [ChunkRow(document_id=document.id, parse_version=1, ordinal=i, title="t", text=f"text {i}",
                     filename="a.md", page=None, start_char=0, end_char=6, token_count=2) for i in range(3)]
    await chunks.upsert(kb.collection, rows, np.eye(3, 64, dtype=np.float32))
    await ingest.cancel(core, task.id)  # its chunk set is garbage now
    assert await janitor_for("holder").holds_lease()
    assert await janitor_for("janitor").run_once() is False
    assert await chunks.count_document(kb.collection, document.id) == 3, "only the lease holder sweeps"
    await janitor_for("holder").release()
    assert await janitor_for("janitor").run_once()
    assert await chunks.count_document(kb.collection, document.id) == 0
