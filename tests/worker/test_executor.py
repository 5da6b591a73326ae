"""The executor's decisions (worker/executor.py) with no Redis server: a stub broker (`StubSignals`) records
acks, dead letters and events, stub stages stand in for the pipeline, a stub garbage collector records what
it is asked to remove, and the database is real (SQLite).

The same rules against a real redis-server and the real pipeline: tests/worker/test_consumer.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis import exceptions as redis_errors

from common.chunking import Chunk
from common.db import TaskRecord
from common.dependencies import Dependency, DependencyBoard
from common.errors import CorruptDocument, DependencyUnavailable, NotFound
from common.queue import QueueMessage
from common.runtime import Core
from lifecycle.garbage import CollectReport
from tests.dbcalls import claim_one, create_document
from tests.fakes import StubSignals, Unusable
from vectordb.chunkstore import ChunkStore
from worker import executor as executor_module
from worker.executor import MAX_BACKOFF_S, Outcome, TaskExecutor
from worker.pipeline import TaskContext

Action = Callable[[TaskContext], Awaitable[None]]


class StubGarbage:
    """Records the documents whose garbage the executor removes at once (`GarbageCollector.collect`)."""

    def __init__(self) -> None:
        self.collected: list[str | None] = []

    async def collect(self, *, document_id: str | None = None, limit: int = 200) -> CollectReport:
        self.collected.append(document_id)
        return CollectReport()


class StubStage:
    """A pipeline stage that runs `action` (if any) and counts its runs."""

    def __init__(self, name: str, action: Action | None = None) -> None:
        self.name = name
        self.start, self.end = 0.0, 0.0
        self.runs = 0
        self._action = action

    async def run(self, ctx: TaskContext) -> None:
        self.runs += 1
        if self._action is not None:
            await self._action(ctx)


async def _produce(ctx: TaskContext) -> None:
    """What parse, chunk, embed and index leave behind for the completion."""
    ctx.format = "markdown"
    ctx.chunks = [Chunk(ordinal=0, text="hello world", title="", start_char=0, end_char=11, token_count=2)]
    ctx.token_count = 2


def _raising(exc: BaseException, times: int = 1_000_000) -> Action:
    """An action raising `exc` on its first `times` runs, then producing the stage output."""
    left = times

    async def action(ctx: TaskContext) -> None:
        nonlocal left
        if left > 0:
            left -= 1
            raise exc
        await _produce(ctx)

    return action


async def _forever(ctx: TaskContext) -> None:
    await asyncio.Event().wait()  # until the deadline sweeper cancels it


Build = Callable[..., TaskExecutor]


@pytest.fixture
def broker() -> StubSignals:
    return StubSignals()


@pytest.fixture
def board() -> DependencyBoard:
    return DependencyBoard({}, probe_interval_s=0.05)  # the tests themselves say when a dependency is back


@pytest.fixture
def garbage() -> StubGarbage:
    return StubGarbage()


@pytest.fixture
async def build(local_core: Core, broker: StubSignals, board: DependencyBoard,
                garbage: StubGarbage) -> AsyncIterator[Build]:
    """`build(*stages)`: an executor on the stub broker; drained at the end of the test."""
    made: list[TaskExecutor] = []

    def make(*stages: StubStage) -> TaskExecutor:
        executor = TaskExecutor(local_core, ChunkStore(Unusable("a vector store")), "w1", board=board,
                                garbage=garbage, stages=stages, signals=broker)  # type: ignore[arg-type]
        made.append(executor)
        return executor

    yield make
    for executor in made:
        await executor.drain()


async def _submitted(core: Core) -> tuple[TaskRecord, QueueMessage]:
    """A queued task and the stream entry that delivers it (the entry only exists in the stub broker)."""
    kb = await asyncio.to_thread(core.repo.kbs.create, "kb", tenant="default", chunk_tokens=64, overlap_tokens=8,
                                 embedding_model="hash-test", dim=64)
    _, task = await asyncio.to_thread(create_document, core.repo, kb, filename="a.md", size_bytes=11,
                                      sha256="0" * 64, blob_key="kb/a.md")
    return task, QueueMessage(stream=core.keys.stream_normal, entry_id="1-0", task_id=task.id)


async def _stored(core: Core, task_id: str) -> TaskRecord:
    return await asyncio.to_thread(core.repo.tasks.get, task_id)


async def _execute(executor: TaskExecutor, message: QueueMessage) -> Any:
    result = await executor.execute(message)
    await executor.drain()  # the write-behind progress writes and their events
    return result


# ------------------------------------------------------------------------------------------- done, skipped


async def test_a_task_through_every_stage_is_done_and_acked_with_a_done_event(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    task, message = await _submitted(local_core)
    stages = (StubStage("fetch"), StubStage("parse"), StubStage("index", _produce))
    executor = build(*stages)
    result = await _execute(executor, message)
    assert result.outcome is Outcome.DONE
    assert [s.runs for s in stages] == [1, 1, 1]
    assert broker.acked == [message] and broker.dead_letters == []
    done = broker.last_event(task.id, "done")
    assert (done["status"], done["message"], done["worker"]) == ("done", "1 chunks", "w1")
    assert broker.event_names(task.id)[-1] == "done"
    stored = await _stored(local_core, task.id)
    assert (stored.status, stored.attempts, stored.progress) == ("done", 1, 1.0)
    assert set(stored.stage_timings) == {"fetch", "parse", "index"}
    assert executor.running == {}


async def test_an_entry_without_a_task_id_is_skipped_and_acked(build: Build, broker: StubSignals) -> None:
    stage = StubStage("index", _produce)
    message = QueueMessage(stream="s", entry_id="1-0", task_id="")
    result = await _execute(build(stage), message)
    assert result.outcome is Outcome.SKIPPED
    assert broker.acked == [message] and stage.runs == 0 and broker.events == []


async def test_a_redelivered_entry_of_a_finished_task_is_skipped_and_acked(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    task, message = await _submitted(local_core)
    stage = StubStage("index", _produce)
    executor = build(stage)
    assert (await _execute(executor, message)).outcome is Outcome.DONE
    again = await _execute(executor, message)
    assert again.outcome is Outcome.SKIPPED
    assert broker.acked == [message, message] and stage.runs == 1
    assert (await _stored(local_core, task.id)).attempts == 1, "a finished task is not claimed again"


# ------------------------------------------------------------------------------------ failures and retries


async def test_a_permanent_error_fails_the_task_at_once_and_acks_without_dead_lettering(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    task, message = await _submitted(local_core)
    later = StubStage("index", _produce)
    result = await _execute(build(StubStage("parse", _raising(CorruptDocument("a.md: not a document"))), later),
                            message)
    assert result.outcome is Outcome.FAILED
    assert later.runs == 0
    assert broker.acked == [message] and broker.dead_letters == []
    failed = broker.last_event(task.id, "failed")
    assert (failed["status"], failed["message"]) == ("failed", "a.md: not a document")
    stored = await _stored(local_core, task.id)
    assert (stored.status, stored.attempts, stored.error) == ("failed", 1, "a.md: not a document")


async def test_a_transient_error_is_retried_with_exponential_backoff_capped_then_dead_lettered(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    settings = local_core.settings.worker
    settings.retry_backoff_s, settings.max_attempts = 10.0, 6
    task, message = await _submitted(local_core)
    stage = StubStage("embed", _raising(RuntimeError("model crashed")))
    executor = build(stage)
    delays = []
    for attempt in range(1, settings.max_attempts):
        result = await _execute(executor, message)
        assert result.outcome is Outcome.RETRY
        delays.append(result.retry_after_s)
        stored = await _stored(local_core, task.id)
        assert (stored.status, stored.attempts) == ("queued", attempt), "each delivery counts one attempt"
        assert stored.error == "RuntimeError: model crashed"
    assert delays == [10.0, 20.0, 40.0, MAX_BACKOFF_S, MAX_BACKOFF_S]
    assert broker.acked == [] and broker.dead_letters == [], "a task to retry keeps its entry"
    assert broker.event_names(task.id).count("retry") == 5
    assert broker.last_event(task.id, "retry")["status"] == "queued"

    last = await _execute(executor, message)
    assert last.outcome is Outcome.FAILED
    reason = "gave up after 6 attempts; last error: RuntimeError: model crashed"
    assert broker.dead_letters == [(message, reason)] and broker.acked == [message]
    assert broker.last_event(task.id, "failed")["message"] == reason
    stored = await _stored(local_core, task.id)
    assert (stored.status, stored.attempts, stored.error) == ("failed", 6, reason)
    assert stage.runs == 6


async def test_a_delivery_past_the_attempt_limit_is_dead_lettered_without_running(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    local_core.settings.worker.max_attempts = 1
    task, message = await _submitted(local_core)
    assert await asyncio.to_thread(claim_one, local_core.repo, task.id, "crashed-worker") is not None
    stage = StubStage("index", _produce)
    result = await _execute(build(stage), message)
    assert result.outcome is Outcome.FAILED and stage.runs == 0
    assert broker.dead_letters == [(message, "gave up after 1 attempts")]
    stored = await _stored(local_core, task.id)
    assert (stored.status, stored.attempts) == ("failed", 2)


async def test_a_task_cancelled_before_its_retry_is_recorded_is_acked_as_cancelled(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    task, message = await _submitted(local_core)

    async def cancelled_then_broken(ctx: TaskContext) -> None:
        await asyncio.to_thread(local_core.repo.tasks.cancel, ctx.task.id)  # the API, meanwhile
        raise RuntimeError("boom")

    result = await _execute(build(StubStage("embed", cancelled_then_broken)), message)
    assert result.outcome is Outcome.CANCELLED
    assert broker.acked == [message]
    assert (await _stored(local_core, task.id)).status == "cancelled"


# ---------------------------------------------------------------------------------------------- timeouts


async def test_a_stage_over_its_timeout_is_a_stage_timeout_to_retry(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    local_core.settings.worker.embed_timeout_s = 0.05
    task, message = await _submitted(local_core)
    result = await _execute(build(StubStage("embed", _forever)), message)
    assert result.outcome is Outcome.RETRY
    stored = await _stored(local_core, task.id)
    assert (stored.status, stored.error) == ("queued", "stage embed exceeded its timeout of 0.05s")
    assert broker.acked == []


async def test_a_parse_over_its_timeout_fails_the_task_as_a_limit_exceeded(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    local_core.settings.worker.parse_timeout_s = 0.05
    task, message = await _submitted(local_core)
    result = await _execute(build(StubStage("parse", _forever)), message)
    assert result.outcome is Outcome.FAILED
    assert broker.acked == [message] and broker.dead_letters == []
    stored = await _stored(local_core, task.id)
    assert (stored.status, stored.attempts) == ("failed", 1)
    assert stored.error == "stage parse exceeded its timeout of 0.05s"


async def test_a_task_over_its_deadline_is_a_stage_timeout_naming_the_deadline(
        local_core: Core, build: Build) -> None:
    local_core.settings.worker.task_deadline_s = 0.05
    task, message = await _submitted(local_core)
    result = await _execute(build(StubStage("fetch", _forever)), message)
    assert result.outcome is Outcome.RETRY
    assert (await _stored(local_core, task.id)).error == "task exceeded its deadline of 0.05s"


async def test_a_timeout_error_raised_by_a_stage_itself_is_an_ordinary_error(local_core: Core, build: Build) -> None:
    task, message = await _submitted(local_core)
    result = await _execute(build(StubStage("embed", _raising(TimeoutError("read timed out")))), message)
    assert result.outcome is Outcome.RETRY
    assert (await _stored(local_core, task.id)).error == "TimeoutError: read timed out"


# ------------------------------------------------------------------------------------------------ cancel


async def test_a_cancel_flag_set_mid_pipeline_stops_before_the_next_stage_and_acks(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    task, message = await _submitted(local_core)

    async def flag(ctx: TaskContext) -> None:
        broker.cancel_flags.add(ctx.task.id)

    later = StubStage("index", _produce)
    result = await _execute(build(StubStage("fetch"), StubStage("parse", flag), later), message)
    assert result.outcome is Outcome.CANCELLED
    assert later.runs == 0 and task.id in broker.cancel_checks
    assert broker.acked == [message] and broker.dead_letters == []
    assert broker.last_event(task.id, "cancelled")["status"] == "cancelled"


async def test_a_cancelled_task_removes_its_documents_garbage_at_once(
        local_core: Core, build: Build, broker: StubSignals, garbage: StubGarbage) -> None:
    task, message = await _submitted(local_core)

    async def cancelled(ctx: TaskContext) -> None:
        await asyncio.to_thread(local_core.repo.tasks.cancel, ctx.task.id)  # the API: the database, then the flag
        broker.cancel_flags.add(ctx.task.id)

    result = await _execute(build(StubStage("index", cancelled), StubStage("finish", _produce)), message)
    assert result.outcome is Outcome.CANCELLED
    assert garbage.collected == [task.document_id]
    assert (await _stored(local_core, task.id)).status == "cancelled"


async def test_a_failed_task_removes_its_documents_garbage_and_a_done_one_leaves_it_to_the_janitor(
        local_core: Core, build: Build, garbage: StubGarbage) -> None:
    task, message = await _submitted(local_core)
    assert (await _execute(build(StubStage("index", _produce)), message)).outcome is Outcome.DONE
    assert garbage.collected == [], "a first version replaces nothing"
    kb = await asyncio.to_thread(local_core.repo.kbs.get, "kb")
    _, other = await asyncio.to_thread(create_document, local_core.repo, kb, filename="b.md", size_bytes=1,
                                       sha256="1" * 64, blob_key="kb/b.md")
    failing = QueueMessage(stream=local_core.keys.stream_normal, entry_id="2-0", task_id=other.id)
    result = await _execute(build(StubStage("parse", _raising(CorruptDocument("b.md: broken")))), failing)
    assert result.outcome is Outcome.FAILED
    assert garbage.collected == [other.document_id]


async def test_a_deleted_document_stops_its_task_as_cancelled(
        local_core: Core, build: Build, broker: StubSignals) -> None:
    task, message = await _submitted(local_core)
    result = await _execute(build(StubStage("index", _raising(NotFound("document is gone")))), message)
    assert result.outcome is Outcome.CANCELLED
    assert broker.acked == [message]


# ---------------------------------------------------------------------------------------- dependency down


@pytest.mark.parametrize(("error", "dependency"), [
    (DependencyUnavailable(Dependency.VECTOR_STORE, "connection refused"), Dependency.VECTOR_STORE),
    (redis_errors.ConnectionError("Redis went away"), Dependency.REDIS),
], ids=["vector_store", "redis"])
async def test_a_dependency_down_mid_stage_waits_in_place_then_runs_the_stage_again(
        local_core: Core, build: Build, broker: StubSignals, board: DependencyBoard,
        error: Exception, dependency: Dependency) -> None:
    local_core.settings.worker.index_timeout_s = 0.1
    task, message = await _submitted(local_core)
    stage = StubStage("index", _raising(error, times=1))
    running = asyncio.create_task(_execute(build(stage), message))
    async with asyncio.timeout(10):
        while not board.is_down(dependency):
            await asyncio.sleep(0.01)
    # Longer than the stage's timeout: the clocks are paused while the task waits.
    await asyncio.sleep(0.3)
    assert not running.done() and stage.runs == 1
    assert broker.acked == [] and "waiting" in broker.event_names(task.id)
    assert (await _stored(local_core, task.id)).status == "running"
    board.up(dependency)
    result = await asyncio.wait_for(running, timeout=10)
    assert result.outcome is Outcome.DONE
    assert stage.runs == 2 and broker.acked == [message]
    waiting = broker.last_event(task.id, "waiting")["message"]
    assert waiting.startswith(f"waiting for the {dependency} to come back")
    stored = await _stored(local_core, task.id)
    assert (stored.status, stored.attempts) == ("done", 1), "waiting out an outage spends no attempt"


async def test_a_task_waiting_for_a_dependency_can_be_cancelled(
        local_core: Core, build: Build, broker: StubSignals, board: DependencyBoard,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_module, "DEPENDENCY_CANCEL_POLL_S", 0.01)
    task, message = await _submitted(local_core)
    stage = StubStage("embed", _raising(DependencyUnavailable(Dependency.EMBEDDING, "503 from the endpoint")))
    running = asyncio.create_task(_execute(build(stage), message))
    async with asyncio.timeout(10):
        while not board.is_down(Dependency.EMBEDDING):
            await asyncio.sleep(0.01)
    broker.cancel_flags.add(task.id)
    result = await asyncio.wait_for(running, timeout=10)
    assert result.outcome is Outcome.CANCELLED
    assert stage.runs == 1 and broker.acked == [message]
    assert board.is_down(Dependency.EMBEDDING), "the outage is the probe loop's to end, not the task's"


async def test_a_claim_that_meets_the_database_down_is_retried_uncounted(
        local_core: Core, build: Build, broker: StubSignals, board: DependencyBoard,
        monkeypatch: pytest.MonkeyPatch) -> None:
    task, message = await _submitted(local_core)

    def down(*args: object, **kwargs: object) -> None:
        raise DependencyUnavailable(Dependency.DATABASE, "database: connection refused")

    monkeypatch.setattr(local_core.repo.ledger, "claim", down)
    stage = StubStage("index", _produce)
    result = await _execute(build(stage), message)
    assert result.outcome is Outcome.RETRY
    assert result.retry_after_s == local_core.settings.worker.retry_backoff_s
    assert board.is_down(Dependency.DATABASE)
    assert stage.runs == 0 and broker.acked == [] and broker.dead_letters == []
    monkeypatch.undo()
    assert (await _stored(local_core, task.id)).attempts == 0
