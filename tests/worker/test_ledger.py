"""Group commit of a worker's task writes and signals (worker/ledger.py, worker/progress.py), against the
real database and the real redis-server of the test session."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from common.db import ProgressWrite
from common.errors import Cancelled
from common.runtime import Core
from lifecycle import documents as ingest
from tests.submit import submit_document
from worker.ledger import GroupCommit, TaskLedger, TaskSignals, WriteFailed, task_event
from worker.progress import TaskProgress


async def test_operations_submitted_together_share_one_round_in_order() -> None:
    rounds: list[list[int]] = []
    flushing = asyncio.Event()

    async def flush(items: list[int]) -> list[int]:
        rounds.append(items)
        flushing.set()
        await asyncio.sleep(0.01)
        return [i * 10 for i in items]

    commit: GroupCommit[int, int] = GroupCommit(flush)
    first = await asyncio.gather(*(commit.submit(i) for i in range(50)))
    assert first == [i * 10 for i in range(50)] and rounds == [list(range(50))]

    # While a round runs, the next one fills up.
    flushing.clear()
    early = commit.submit(100)
    await flushing.wait()  # the round of 100 has started
    late = [commit.submit(i) for i in range(101, 105)]
    assert await early == 1000 and await asyncio.gather(*late) == [1010, 1020, 1030, 1040]
    assert rounds[1:] == [[100], [101, 102, 103, 104]]
    await commit.drain()


async def test_a_failed_round_fails_its_callers_and_not_the_next_round() -> None:
    calls = 0

    async def flush(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")
        return items

    commit: GroupCommit[str, str] = GroupCommit(flush)
    failed = commit.submit("a")
    commit.post("fire-and-forget")  # no future: its failure is the flush's to report
    with pytest.raises(ConnectionError):
        await failed
    assert await commit.submit("b") == "b"


async def _claimed_progress(core: Core, ledger: TaskLedger, signals: TaskSignals) -> TaskProgress:
    kb = await ingest.create_kb(core, "kb", tenant="default")
    _, task = await submit_document(core, kb, "a.md", b"# A\n\nSome text.\n")
    claimed = await ledger.claim(task.id)
    assert claimed is not None and claimed.document.id == task.document_id and claimed.kb.id == kb.id
    return TaskProgress(claimed, ledger=ledger, signals=signals, consumer="w1")


async def test_write_behind_progress_surfaces_a_fence_at_the_next_report(core: Core) -> None:
    signals = TaskSignals(core.redis, core.keys, core.queue)
    ledger = TaskLedger(core.repo, signals, "w1")
    progress = await _claimed_progress(core, ledger, signals)
    await progress.report(0.1, "fetch started", stage="fetch")  # returns before the write is committed
    await ledger.drain()
    assert (await asyncio.to_thread(core.repo.tasks.get, progress.task_id)).stage == "fetch"

    await asyncio.to_thread(core.repo.tasks.cancel, progress.task_id)  # the API cancels: the version moves on
    await progress.report(0.2, "parse started", stage="parse")  # fenced out, found out later
    await ledger.drain()
    with pytest.raises(Cancelled):
        await progress.check_cancelled()
    stored = await asyncio.to_thread(core.repo.tasks.get, progress.task_id)
    assert stored.status == "cancelled" and "parse started" not in stored.progress_msg


async def test_a_completion_commits_after_the_tasks_progress_and_publishes_its_events(core: Core) -> None:
    signals = TaskSignals(core.redis, core.keys, core.queue)
    ledger = TaskLedger(core.repo, signals, "w1")
    progress = await _claimed_progress(core, ledger, signals)
    received: list[dict[str, Any]] = []
    async with core.redis.pubsub() as pubsub:
        await pubsub.subscribe(core.keys.task_events(progress.task_id))
        await progress.report(0.5, "embed started", stage="embed")
        done = await progress.complete(chunk_count=1, token_count=5, format="markdown")
        assert done.document_done
        await ledger.drain()
        await signals.drain()
        async with asyncio.timeout(10):
            while len(received) < 1:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message is not None:
                    received.append(json.loads(message["data"]))
    assert received[0]["event"] == "progress" and received[0]["stage"] == "embed"
    stored = await asyncio.to_thread(core.repo.tasks.get, progress.task_id)
    assert stored.status == "done" and [line.split(" ", 1)[1] for line in stored.progress_lines[-2:]] == [
        "embed started", "done"]


async def test_signals_check_cancel_flags_and_ack_in_one_round(core: Core) -> None:
    signals = TaskSignals(core.redis, core.keys, core.queue)
    await core.queue.ensure_groups()
    kb = await ingest.create_kb(core, "kb", tenant="default")
    tasks = [(await submit_document(core, kb, f"{i}.md", b"# T\n\nText.\n"))[1] for i in range(3)]
    messages = await core.queue.read_new("w1", 10, 100)
    assert len(messages) == 3
    await ingest.flag_cancelled(core, [tasks[1].id])
    flags = await asyncio.gather(*(signals.cancelled(t.id) for t in tasks))
    assert flags == [False, True, False]
    event = task_event("done", task_id=tasks[0].id, stage=None, progress=1.0, worker="w1", status="done")
    await asyncio.gather(*(signals.ack(m, event if m.task_id == tasks[0].id else None) for m in messages))
    assert await core.redis.xlen(core.keys.stream_normal) == 0
    assert (await core.redis.xpending(core.keys.stream_normal, core.keys.group))["pending"] == 0


async def test_a_round_whose_transaction_fails_reports_to_each_write(core: Core) -> None:
    signals = TaskSignals(core.redis, core.keys, core.queue)
    ledger = TaskLedger(core.repo, signals, "w1")
    progress = await _claimed_progress(core, ledger, signals)

    def broken(claims: list[str], writes: list[Any]) -> Any:
        raise ConnectionError("database went away")

    ledger._apply = broken  # type: ignore[method-assign]
    result = await ledger.write(ProgressWrite(progress.task_id, progress.version, message="lost"))
    assert isinstance(result, WriteFailed) and isinstance(result.error, ConnectionError)
    with pytest.raises(ConnectionError):
        await ledger.claim(progress.task_id)
