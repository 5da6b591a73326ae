"""Reliability rules (SPEC sections 4-5) proven with real processes: worker processes killed with
SIGKILL at random points, a real redis-server and a real `docvec vectordb` server."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pytest

import vectordb
from common.db import KbRecord
from common.runtime import Core, open_core
from tests.dbcalls import create_document
from tests.fakes import HashEmbedder
from tests.submit import submit_document
from tests.worker.fleet import Fleet, all_terminal, wait_until

pytestmark = pytest.mark.slow

TOPICS = ["harbour", "orchard", "library", "railway", "observatory", "bakery", "glacier", "market"]


def doc_text(i: int, paragraphs: int = 6) -> bytes:
    topic = TOPICS[i % len(TOPICS)]
    parts = [f"# {topic.title()} {i}"]
    for p in range(paragraphs):
        parts.append(" ".join(
            f"Volunteer {p * 3 + s} at the {topic} logged item {i}-{p}-{s} with notes on weather and repairs."
            for s in range(5)
        ))
    return "\n\n".join(parts).encode()


@pytest.fixture
async def core(fleet: Fleet) -> AsyncIterator[Core]:
    async with open_core(fleet.settings(), embedder=HashEmbedder()) as opened:
        yield opened


async def _kb(core: Core) -> KbRecord:
    return await asyncio.to_thread(core.repo.kbs.create, "fleet", tenant="default", chunk_tokens=64,
                                   overlap_tokens=8, embedding_model="hash-test", dim=64)


async def _submit(core: Core, kb: KbRecord, count: int) -> list[str]:
    return [(await submit_document(core, kb, f"doc{i}.md", doc_text(i)))[1].id for i in range(count)]


async def assert_exactly_once(core: Core, fleet: Fleet, kb: KbRecord, task_ids: list[str]) -> None:
    """Every task done; each document's chunk set in the store is exactly its DB chunk count."""
    client = vectordb.connect(fleet.vectordb_url)
    try:
        for task_id in task_ids:
            task = await asyncio.to_thread(core.repo.tasks.get, task_id)
            assert task.status == "done", f"{task_id}: {task.status} {task.error}"
            doc = await asyncio.to_thread(core.repo.documents.get, task.document_id)
            rows = await client.query(kb.collection, filter=f'document_id == "{doc.id}"',
                                      output_fields=["id", "ordinal", "parse_version"])
            assert sorted(int(r["ordinal"]) for r in rows) == list(range(doc.chunk_count)), doc.id
            assert {int(r["parse_version"]) for r in rows} == {doc.parse_version}
            assert len({r["id"] for r in rows}) == len(rows)
    finally:
        await client.close()
    assert await core.redis.xlen(core.keys.stream_normal) == 0
    assert (await core.redis.xpending(core.keys.stream_normal, core.keys.group))["pending"] == 0


async def _running_on(core: Core, task_ids: list[str], consumer: str) -> bool:
    for task_id in task_ids:
        task = await asyncio.to_thread(core.repo.tasks.get, task_id)
        if task.status == "running" and task.worker == consumer and task.stage == "embed":
            return True
    return False


async def test_dead_workers_entries_are_reclaimed_and_it_is_removed(fleet: Fleet, core: Core) -> None:
    kb = await _kb(core)
    fleet.start_worker("doomed", embed_delay_s=0.5)
    tasks = await _submit(core, kb, 4)
    await wait_until(lambda: _running_on(core, tasks, "doomed"), 60, "doomed to run a task", fleet)
    fleet.kill("doomed")
    fleet.start_worker("rescuer")
    await wait_until(lambda: all_terminal(core, tasks), 90, "every task to finish", fleet)
    await assert_exactly_once(core, fleet, kb, tasks)
    reclaimed = [await asyncio.to_thread(core.repo.tasks.get, t) for t in tasks]
    assert all(t.worker == "rescuer" for t in reclaimed)
    assert any(t.attempts == 2 for t in reclaimed), "the killed worker's task is redelivered"

    async def doomed_gone() -> bool:
        in_group = "doomed" in await core.queue.consumers()
        registered = await core.redis.zscore(core.keys.workers, "doomed") is not None
        return not in_group and not registered

    await wait_until(doomed_gone, 30, "the janitor to remove the dead worker", fleet)


async def test_random_sigkills_lose_and_duplicate_nothing(fleet: Fleet, core: Core) -> None:
    rng = random.Random(20261123)
    kb = await _kb(core)
    names = iter(f"w{i}" for i in range(100))
    for _ in range(2):
        fleet.start_worker(next(names), embed_delay_s=0.15)
    tasks = await _submit(core, kb, 24)
    kills = 0
    for _ in range(4):
        await asyncio.sleep(rng.uniform(0.5, 2.0))
        victim = rng.choice(sorted(fleet.workers))
        fleet.kill(victim)
        kills += 1
        fleet.start_worker(next(names), embed_delay_s=0.15)
    await wait_until(lambda: all_terminal(core, tasks), 180, "every task to finish", fleet)
    assert kills == 4
    await assert_exactly_once(core, fleet, kb, tasks)


async def test_sigterm_finishes_in_flight_work_then_exits_0(fleet: Fleet, core: Core) -> None:
    kb = await _kb(core)
    fleet.start_worker("graceful", embed_delay_s=0.3)
    tasks = await _submit(core, kb, 2)
    await wait_until(lambda: _running_on(core, tasks, "graceful"), 60, "a running task", fleet)
    assert fleet.terminate("graceful") == 0
    statuses = [(await asyncio.to_thread(core.repo.tasks.get, t)).status for t in tasks]
    assert "done" in statuses, "the in-flight task finished within the grace period"
    assert await core.redis.zscore(core.keys.workers, "graceful") is None, "it deregistered"
    fleet.start_worker("next")
    await wait_until(lambda: all_terminal(core, tasks), 60, "the rest to finish", fleet)
    await assert_exactly_once(core, fleet, kb, tasks)


async def test_sigterm_past_grace_leaves_the_task_for_another_worker(fleet: Fleet, core: Core) -> None:
    kb = await _kb(core)
    fleet.worker_env["SHUTDOWN_GRACE_S"] = "0.2"
    fleet.start_worker("impatient", embed_delay_s=1.0, concurrency=1)
    tasks = await _submit(core, kb, 1)
    await wait_until(lambda: _running_on(core, tasks, "impatient"), 60, "a running task", fleet)
    assert fleet.terminate("impatient") == 0
    task = await asyncio.to_thread(core.repo.tasks.get, tasks[0])
    assert (task.status, task.attempts) == ("queued", 0), "left unacked and returned uncounted, not failed"
    pending = await core.redis.xpending(core.keys.stream_normal, core.keys.group)
    assert pending["pending"] == 1
    fleet.start_worker("successor")
    await wait_until(lambda: all_terminal(core, tasks), 60, "the successor to finish it", fleet)
    await assert_exactly_once(core, fleet, kb, tasks)
    task = await asyncio.to_thread(core.repo.tasks.get, tasks[0])
    assert (task.attempts, task.worker) == (1, "successor"), "the stop spent no attempt"


async def test_a_long_task_is_never_stolen_from_a_live_worker(fleet: Fleet, core: Core) -> None:
    kb = await _kb(core)
    fleet.worker_env["CLAIM_IDLE_S"] = "1.0"
    fleet.start_worker("slow", embed_delay_s=0.8, concurrency=1)
    tasks = await _submit(core, kb, 1)
    await wait_until(lambda: _running_on(core, tasks, "slow"), 60, "the slow task to start", fleet)
    fleet.start_worker("idle")
    await wait_until(lambda: all_terminal(core, tasks), 60, "the slow task to finish", fleet)
    task = await asyncio.to_thread(core.repo.tasks.get, tasks[0])
    assert (task.status, task.attempts, task.worker) == ("done", 1, "slow")


async def test_orphan_tasks_are_enqueued_by_the_janitor(fleet: Fleet, core: Core) -> None:
    """A task row that was never XADDed (API crash), and tasks whose stream entries Redis lost."""
    kb = await _kb(core)
    blob = "kb/orphan/never-enqueued"
    await core.store.put(blob, doc_text(1))
    _, never_added = await asyncio.to_thread(
        create_document, core.repo, kb, filename="orphan.md", size_bytes=10, sha256="0" * 64, blob_key=blob)
    lost = await _submit(core, kb, 2)
    await core.redis.delete(core.keys.stream_normal)  # Redis lost the stream (and its group)
    fleet.start_worker("janitor")
    tasks = [never_added.id, *lost]
    await wait_until(lambda: all_terminal(core, tasks), 60, "orphans to be enqueued and run", fleet)
    await assert_exactly_once(core, fleet, kb, tasks)
