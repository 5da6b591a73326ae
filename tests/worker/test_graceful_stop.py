"""A graceful stop (SIGTERM/SIGINT, `Worker.stop`) hands the tasks it interrupts back to the queue without
spending an attempt; a crash (SIGKILL) still spends one (issue 28 item 7). Real redis-server, real pipeline."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

from common.runtime import Core, EmbedderLoader
from lifecycle import documents as ingest
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from tests.worker.test_consumer import PROSE, _SlowCountingEmbedder
from vectordb.chunkstore import ChunkStore

RETURNED = "worker stopping: returned to the queue (this attempt is not counted)"


async def _stop_while_embedding(core: Core, vectors: Any, embedder: _SlowCountingEmbedder, task_id: str) -> None:
    """Run a worker until the task is embedding, then stop it gracefully (its grace is too short to finish)."""
    async with running_worker(core, vectors) as worker:
        async with asyncio.timeout(60):
            while True:
                running = await asyncio.to_thread(core.repo.tasks.get, task_id)
                if (running.status, running.stage, running.worker) == ("running", "embed", worker.consumer):
                    break
                await asyncio.sleep(0.01)
            calls = embedder.calls
            while embedder.calls < calls + 1:  # this worker's own embedding is under way
                await asyncio.sleep(0.01)


async def _slow_document(core: Core) -> tuple[Any, Any, Any, _SlowCountingEmbedder]:
    embedder = _SlowCountingEmbedder(delay_s=0.1)
    core.embedders = EmbedderLoader(core.settings.embedding, embedder)
    core.settings.embedding.batch_size = 2
    core.settings.worker.shutdown_grace_s = 0.1
    kb = await ingest.create_kb(core, "kb1", tenant="default")
    document, task = await submit_document(core, kb, "long.md", (PROSE * 3).encode())
    return kb, document, task, embedder


async def test_a_task_interrupted_by_a_graceful_stop_is_replayed_without_spending_an_attempt(
        core: Core, vectors: Any) -> None:
    kb, document, task, embedder = await _slow_document(core)
    await _stop_while_embedding(core, vectors, embedder, task.id)

    returned = await asyncio.to_thread(core.repo.tasks.get, task.id)
    assert (returned.status, returned.attempts) == ("queued", 0)
    assert RETURNED in returned.progress_lines[-1]
    assert (await asyncio.to_thread(core.repo.documents.get, document.id)).status == "queued"
    pending = await core.redis.xpending(core.keys.stream_normal, core.keys.group)
    assert pending["pending"] == 1, "its entry stays pending, for the next worker to replay"

    embedder.delay_s = 0.0
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id)
    assert done.status == "done", done.error
    assert done.attempts == 1, "the same count as a run that was never stopped"
    doc = await asyncio.to_thread(core.repo.documents.get, document.id)
    assert await ChunkStore(vectors).count_document(kb.collection, document.id) == doc.chunk_count > 0


async def test_rolling_restarts_do_not_dead_letter_a_healthy_document(core: Core, vectors: Any) -> None:
    kb, document, task, embedder = await _slow_document(core)
    stops = core.settings.worker.max_attempts  # without the refund, the next claim would give up
    for _ in range(stops):
        await _stop_while_embedding(core, vectors, embedder, task.id)
    returned = await asyncio.to_thread(core.repo.tasks.get, task.id)
    assert returned.attempts == 0
    assert sum(RETURNED in line for line in returned.progress_lines) == stops

    embedder.delay_s = 0.0
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id)
    assert done.status == "done", done.error
    assert done.attempts == 1
    assert await core.redis.xlen(core.keys.dead_letter) == 0


async def test_a_crash_still_spends_the_attempt(core: Core, vectors: Any) -> None:
    """A worker that claimed the task and died without a word (what SIGKILL leaves: a claim, a pending entry,
    no heartbeat): the next delivery counts a second attempt. The real-process version, SIGTERM then SIGKILL
    of a `docvec worker`, is `test_sigterm_returns_the_task_and_sigkill_spends_an_attempt` below."""
    kb, document, task, embedder = await _slow_document(core)
    (message,) = await core.queue.read_new("killed", 1, block_ms=100)
    (claimed,) = await asyncio.to_thread(core.repo.ledger.claim, [message.task_id], "killed")
    assert claimed is not None and claimed.task.attempts == 1
    embedder.delay_s = 0.0
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id)
    assert (done.status, done.attempts) == ("done", 2)
    assert not any(RETURNED in line for line in done.progress_lines)


@pytest.mark.slow
async def test_sigterm_returns_the_task_and_sigkill_spends_an_attempt(tmp_path: Path, redis_url: str) -> None:
    """A real `docvec worker` process (real model): SIGTERM mid-embed gives the attempt back and exits 0;
    SIGKILL mid-embed spends one; the third run finishes with attempts == 2, every chunk once."""
    import vectordb
    from common.runtime import open_core
    from common.settings import Settings
    from tests.fakes import HashEmbedder
    from tests.worker.test_crash_replay import _alive, _finish_with_a_new_worker, _prose, _start_worker, _wait

    prefix = f"stop{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "data"
    env = {**os.environ, "DOCVEC_DATA_DIR": str(data_dir), "DOCVEC_REDIS__URL": redis_url,
           "DOCVEC_REDIS__PREFIX": prefix, "DOCVEC_WORKER__BLOCK_MS": "100",
           "DOCVEC_WORKER__HEARTBEAT_INTERVAL_S": "0.5", "DOCVEC_WORKER__SHUTDOWN_GRACE_S": "0.2",
           "PYTHONPATH": str(Path.cwd())}
    env.pop("DOCVEC_SETTINGS", None)
    settings = Settings(data_dir=str(data_dir), redis={"url": redis_url, "prefix": prefix})
    consumer = "crashy"  # the name _alive() reads the log of
    async with open_core(settings, embedder=HashEmbedder()) as core:
        kb = await asyncio.to_thread(core.repo.kbs.create, "stop", tenant="default", chunk_tokens=256,
                                     overlap_tokens=32, embedding_model="all-MiniLM-L6-v2", dim=384)
        document, task = await submit_document(core, kb, "long.md", _prose(160).encode())

        async def embedding() -> bool:
            t = await asyncio.to_thread(core.repo.tasks.get, task.id)
            assert t.status in ("queued", "running"), t.error
            return t.status == "running" and t.stage == "embed"

        for sig, attempts_after, status_after in ((signal.SIGTERM, 0, "queued"), (signal.SIGKILL, 1, "running")):
            worker = _start_worker(env, tmp_path, consumer)
            try:
                async def worker_embedding(worker: Any = worker) -> bool:
                    _alive(worker, tmp_path)
                    return await embedding()

                await _wait(worker_embedding, 180, "the worker to reach the embed stage")
                worker.send_signal(sig)
                assert worker.wait(timeout=60) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)
            finally:
                if worker.poll() is None:
                    worker.kill()
            after = await asyncio.to_thread(core.repo.tasks.get, task.id)
            assert (after.status, after.attempts) == (status_after, attempts_after), sig.name

        await _finish_with_a_new_worker(core, env, tmp_path, consumer, task.id)
        final = await asyncio.to_thread(core.repo.tasks.get, task.id)
        doc = await asyncio.to_thread(core.repo.documents.get, document.id)
        assert final.status == "done", final.error
        assert final.attempts == 2, "the SIGKILLed attempt counts, the SIGTERMed one does not"
        assert sum(RETURNED in line for line in final.progress_lines) == 1

    client = vectordb.connect(str(data_dir / "vectors"))
    try:
        assert await ChunkStore(client).count_document(kb.collection, document.id) == doc.chunk_count > 0
    finally:
        await client.close()
