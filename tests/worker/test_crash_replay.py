"""SIGKILL a real `docvec worker` process after it read a task and before it acked; start it again
under the same consumer name; the task finishes exactly once (real redis-server, real model)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import vectordb
from common.runtime import Core, open_core
from common.settings import Settings
from tests.fakes import HashEmbedder
from tests.submit import submit_document
from vectordb.chunkstore import ChunkStore

pytestmark = pytest.mark.slow

TOPICS = ["harbour", "orchard", "library", "railway", "observatory", "bakery", "glacier", "market"]
VERBS = ["describes", "questions", "celebrates", "measures", "remembers", "explains"]


def _prose(paragraphs: int) -> str:
    out = []
    for p in range(paragraphs):
        topic = TOPICS[p % len(TOPICS)]
        sentences = [
            f"The {topic} report {VERBS[(p + s) % len(VERBS)]} how volunteers in district {p * 7 + s} "
            f"kept records of weather, visitors and repairs during season {s + 1}."
            for s in range(9)
        ]
        out.append(f"## {topic.title()} notes {p}\n\n" + " ".join(sentences))
    return "\n\n".join(out)


def _start_worker(env: dict[str, str], cwd: Path, consumer: str) -> subprocess.Popen[bytes]:
    with open(cwd / f"{consumer}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "docvec_cli", "worker", "--consumer", consumer],
            env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log,
        )


def _alive(worker: subprocess.Popen[bytes], cwd: Path) -> None:
    if worker.poll() is not None:
        log = (cwd / "crashy.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"worker exited with {worker.returncode}:\n{log}")


async def _wait(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


async def _finish_with_a_new_worker(core: Core, env: dict[str, str], cwd: Path, consumer: str, task_id: str) -> None:
    """Start a `docvec worker`, wait until `task_id` is final, then SIGTERM it (it exits 0)."""
    worker = _start_worker(env, cwd, consumer)
    try:
        async def finished() -> bool:
            _alive(worker, cwd)
            t = await asyncio.to_thread(core.repo.tasks.get, task_id)
            return t.status in ("done", "failed", "cancelled")

        await _wait(finished, 240, "the restarted worker to finish the task")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, "a SIGTERMed worker exits 0"
    finally:
        if worker.poll() is None:
            worker.kill()


async def test_killed_worker_replays_its_task_once(tmp_path: Path, redis_url: str) -> None:
    prefix = f"crash{uuid.uuid4().hex[:8]}"
    data_dir = tmp_path / "data"
    env = {**os.environ, "DOCVEC_DATA_DIR": str(data_dir), "DOCVEC_REDIS__URL": redis_url,
           "DOCVEC_REDIS__PREFIX": prefix, "DOCVEC_WORKER__BLOCK_MS": "100",
           "DOCVEC_WORKER__HEARTBEAT_INTERVAL_S": "0.5", "PYTHONPATH": str(Path.cwd())}
    env.pop("DOCVEC_SETTINGS", None)
    settings = Settings(data_dir=str(data_dir), redis={"url": redis_url, "prefix": prefix})
    consumer = "crashy"
    async with open_core(settings, embedder=HashEmbedder()) as core:
        kb = await asyncio.to_thread(core.repo.kbs.create, "crash", tenant="default", chunk_tokens=256,
                                     overlap_tokens=32, embedding_model="all-MiniLM-L6-v2", dim=384)
        document, task = await submit_document(core, kb, "long.md", _prose(160).encode())

        worker = _start_worker(env, tmp_path, consumer)
        try:
            async def embedding() -> bool:
                _alive(worker, tmp_path)
                t = await asyncio.to_thread(core.repo.tasks.get, task.id)
                assert t.status in ("queued", "running"), t.error
                return t.status == "running" and t.stage == "embed"

            await _wait(embedding, 180, "the worker to reach the embed stage")
            worker.send_signal(signal.SIGKILL)
            assert worker.wait(timeout=30) == -signal.SIGKILL
        finally:
            if worker.poll() is None:
                worker.kill()

        pending = await core.redis.xpending_range(core.keys.stream_normal, core.keys.group, "-", "+", 10)
        assert [(p["consumer"], p["times_delivered"]) for p in pending] == [(consumer, 1)]
        assert (await asyncio.to_thread(core.repo.tasks.get, task.id)).status == "running"

        await _finish_with_a_new_worker(core, env, tmp_path, consumer, task.id)

        final = await asyncio.to_thread(core.repo.tasks.get, task.id)
        doc = await asyncio.to_thread(core.repo.documents.get, document.id)
        assert final.status == "done", final.error
        assert final.attempts == 2
        assert final.worker == consumer
        assert await core.redis.xlen(core.keys.stream_normal) == 0
        assert (await core.redis.xpending(core.keys.stream_normal, core.keys.group))["pending"] == 0

    client = vectordb.connect(str(data_dir / "vectors"))
    try:
        rows = await client.query(kb.collection, filter=f'document_id == "{document.id}"',
                                  output_fields=["id", "ordinal"])
        ordinals = sorted(int(r["ordinal"]) for r in rows)
        assert ordinals == list(range(doc.chunk_count)), "every chunk exactly once"
        assert len({r["id"] for r in rows}) == len(rows)
        assert await ChunkStore(client).count_document(kb.collection, document.id) == doc.chunk_count
    finally:
        await client.close()
