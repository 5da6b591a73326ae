"""A Redis crash (SIGKILL, AOF on) while tasks are queued and running: the worker rides it out,
and every task finishes exactly once. Uses its own bundled redis-server, never the shared one."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

import vectordb
from common.redisconn import EmbeddedRedis
from common.runtime import EmbedderLoader, open_core
from lifecycle import documents as ingest
from tests.conftest import make_settings
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from tests.worker.test_consumer import PROSE, _SlowCountingEmbedder
from vectordb.chunkstore import ChunkStore

pytestmark = pytest.mark.slow


async def test_worker_survives_a_redis_crash_and_finishes_everything(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    url = server.start()
    restarted = EmbeddedRedis(tmp_path / "redis")
    try:
        settings = make_settings(tmp_path / "data", url, janitor_interval_s=0.3, orphan_grace_s=0.5,
                                 orphan_scan_interval_s=1.0)
        settings.redis.prefix = f"rr{uuid.uuid4().hex[:6]}"
        settings.embedding.batch_size = 2
        embedder = _SlowCountingEmbedder(delay_s=0.05)
        vectors = vectordb.connect(str(tmp_path / "vectors"))
        try:
            async with open_core(settings, embedder=embedder) as core:
                core.embedders = EmbedderLoader(settings.embedding, embedder)
                kb = await ingest.create_kb(core, "kb", tenant="default")
                tasks = [(await submit_document(core, kb, f"d{i}.md", PROSE.encode()))[1] for i in range(6)]
                async with running_worker(core, vectors, concurrency=2):
                    await wait_for_status(core, tasks[0].id, ("done",))
                    os.kill(int(server.pidfile.read_text().strip()), signal.SIGKILL)
                    await asyncio.to_thread(server.stop)  # reaps the killed process
                    await asyncio.sleep(1.0)
                    assert await asyncio.to_thread(restarted.start) == url
                    assert restarted.owned
                    finished = [await wait_for_status(core, t.id, timeout_s=90) for t in tasks]
                assert [t.status for t in finished] == ["done"] * 6
                chunks = ChunkStore(vectors)
                for task in finished:
                    doc = await asyncio.to_thread(core.repo.documents.get, task.document_id)
                    assert await chunks.count_document(kb.collection, doc.id) == doc.chunk_count
        finally:
            await vectors.close()
    finally:
        server.stop()
        restarted.stop()
