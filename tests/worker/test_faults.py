"""Faults injected while work is mid-stage, against a real redis-server (and a real `docvec vectordb`
process where the fault is the vector store): nothing of a failed, cancelled, replaced or deleted
document stays searchable, and a dependency that is down is never the document's fault.

What users see is checked through the API (search, delete), what the store holds through the store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
import pytest

import vectordb
from api.app import create_app
from common.db import KbRecord, TaskRecord
from common.dependencies import Dependency
from common.errors import DependencyUnavailable
from common.runtime import Core, open_core
from common.settings import Settings
from lifecycle import documents as ingest
from lifecycle import garbage
from tests.fakes import HashEmbedder
from tests.submit import submit_document
from tests.worker.fleet import Fleet, wait_until
from tests.worker.helpers import running_worker, wait_for_status
from vectordb.chunkstore import ChunkStore
from worker.consumer import Worker

API = "/api/v1"
TOPICS = ["rivers", "glaciers", "volcanoes", "deserts", "forests", "oceans"]
PROSE = "\n\n".join(
    f"# Part {i}\n\n" + " ".join(
        f"Sentence {j} of part {i} is about {topic}, a subject that {topic} experts discuss at length."
        for j in range(10)
    )
    for i, topic in enumerate(TOPICS)
)


class SlowEmbedder(HashEmbedder):
    """The hash embedder, `delay_s` per model batch: tasks spend a while mid-embed."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().encode(texts, batch_size)


def _fast_janitor(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.worker.janitor_interval_s = 0.2
    settings.worker.garbage_settle_s = 0.5
    monkeypatch.setattr(garbage, "RECHECK_S", 0.2, raising=False)  # the retry backoff starts here


def _poll(check: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    """`check` as the coroutine function `wait_until` polls."""

    async def probe() -> Any:
        return check()

    return probe


def _running_stages(worker: Worker) -> set[str | None]:
    return {p.stage for p in worker._executor.running.values()}


@asynccontextmanager
async def api(core: Core, vectors: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The API on this core and vector store, and a client holding an admin key."""
    app = create_app(core.settings, core=core, vectors=vectors)
    async with app.router.lifespan_context(app):
        key = await asyncio.to_thread(app.state.services.apikeys.create, "default", admin=True)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://docvec.test",
                                     headers={"Authorization": f"Bearer {key.secret}"}) as client:
            yield client


async def _search(client: httpx.AsyncClient, kb: KbRecord, query: str) -> list[dict[str, Any]]:
    response = await client.post(f"{API}/kbs/{kb.name}/search", json={"query": query, "top_k": 50})
    assert response.status_code == 200, response.text
    return list(response.json()["hits"])


# ------------------------------------------------------------------------------ the vector store goes away


@pytest.fixture
async def outage_core(fleet: Fleet) -> AsyncIterator[Core]:
    settings = fleet.settings()
    settings.worker.dependency_probe_s = 0.2
    settings.embedding.batch_size = 4
    async with open_core(settings, embedder=SlowEmbedder(delay_s=0.05)) as core:
        yield core


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_a_vector_store_outage_mid_ingest_ends_with_every_document_done_and_no_attempt_spent(
        fleet: Fleet, outage_core: Core) -> None:
    core = outage_core
    kb = await ingest.create_kb(core, "kb", tenant="default")
    submitted = [await submit_document(core, kb, f"doc{i}.md", PROSE.encode()) for i in range(6)]
    client = vectordb.connect(fleet.vectordb_url, retry_attempts=2)
    try:
        async with running_worker(core, client, concurrency=3) as worker:
            await wait_until(_poll(lambda: _running_stages(worker) & {"embed", "index"}), 30,
                             "a task mid-embed or mid-index")
            fleet.processes.kill_server()  # down for 10 s, as during an upgrade's restart
            await asyncio.sleep(10)
            fleet.processes.start_server(same_port=True)
            finals: list[TaskRecord] = [await wait_for_status(core, task.id, timeout_s=90) for _, task in submitted]
        assert [t.status for t in finals] == ["done"] * len(finals), [t.error for t in finals]
        assert [t.attempts for t in finals] == [1] * len(finals), "the outage spent attempts"
        chunks = ChunkStore(client)
        for document, _ in submitted:
            doc = await asyncio.to_thread(core.repo.documents.get, document.id)
            assert await chunks.count_document(kb.collection, document.id) == doc.chunk_count > 0
    finally:
        await client.close()


class VectorStoreDown(ChunkStore):
    """Every write fails as a store that is down does, until `up` is set."""

    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self.up = asyncio.Event()
        self.refused = 0

    async def upsert(self, collection: str, rows: Any, vectors: Any) -> int:
        if not self.up.is_set():
            self.refused += 1
            raise DependencyUnavailable(Dependency.VECTOR_STORE, "connection refused (injected)")
        return await super().upsert(collection, rows, vectors)

    async def ping(self) -> None:
        if not self.up.is_set():
            raise DependencyUnavailable(Dependency.VECTOR_STORE, "connection refused (injected)")


async def test_a_worker_waits_for_a_dependency_without_taking_new_work_or_spending_attempts(
        core: Core, vectors: Any) -> None:
    core.settings.worker.dependency_probe_s = 0.1
    kb = await ingest.create_kb(core, "kb", tenant="default")
    _, first = await submit_document(core, kb, "first.md", PROSE.encode())
    chunks = VectorStoreDown(vectors)
    async with running_worker(core, vectors, chunks=chunks, concurrency=4) as worker:
        await wait_until(_poll(lambda: worker.dependencies.is_down(Dependency.VECTOR_STORE)), 30, "the outage seen")
        _, later = await submit_document(core, kb, "later.md", PROSE.encode())
        await asyncio.sleep(1.0)
        assert (await asyncio.to_thread(core.repo.tasks.get, later.id)).status == "queued", "it took new work"
        waiting = await asyncio.to_thread(core.repo.tasks.get, first.id)
        assert waiting.status == "running" and waiting.stage == "index"
        assert worker.heartbeat_record()["dependencies_down"]["vector_store"]["since"] <= time.time()
        chunks.up.set()
        done = [await wait_for_status(core, t.id, timeout_s=30) for t in (first, later)]
    assert [(t.status, t.attempts) for t in done] == [("done", 1), ("done", 1)]
    assert chunks.refused >= 1


# ------------------------------------------------------------------------------ failed and replaced versions


class FailingLaterBatches(ChunkStore):
    """Writes a task's first index batch, then fails every later one: a document that breaks mid-index."""

    async def upsert(self, collection: str, rows: Any, vectors: Any) -> int:
        if rows and rows[0].ordinal > 0:
            raise RuntimeError("the index write broke (injected)")
        return await super().upsert(collection, rows, vectors)


async def test_a_dead_lettered_task_leaves_nothing_searchable(core: Core, vectors: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import worker.pipeline

    monkeypatch.setattr(worker.pipeline, "INDEX_BATCH_ROWS", 2)
    _fast_janitor(core.settings, monkeypatch)
    core.settings.worker.max_attempts = 2
    kb = await ingest.create_kb(core, "kb", tenant="default")
    document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    chunks = ChunkStore(vectors)
    async with api(core, vectors) as client, running_worker(core, vectors, chunks=FailingLaterBatches(vectors)):
        failed = await wait_for_status(core, task.id)
        assert failed.status == "failed" and "gave up after 2 attempts" in (failed.error or "")
        assert await core.redis.xlen(core.keys.dead_letter) == 1
        assert not [h for h in await _search(client, kb, "rivers glaciers") if h["document_id"] == document.id]
        await wait_until(lambda: _stored_is(chunks, kb, document.id, 0), 20, "the partial chunks removed")


async def _stored_is(chunks: ChunkStore, kb: KbRecord, document_id: str, expected: int) -> bool:
    return await chunks.count_document(kb.collection, document_id) == expected


class RefusingDeletes(ChunkStore):
    """The first deletes of a document's chunks fail: the store refuses them for a moment."""

    def __init__(self, client: Any, failures: int) -> None:
        super().__init__(client)
        self.failures = failures

    async def delete_document(self, collection: str, document_id: str, **kwargs: Any) -> int:
        if self.failures:
            self.failures -= 1
            raise DependencyUnavailable(Dependency.VECTOR_STORE, "the vector store refused the delete (injected)")
        return await super().delete_document(collection, document_id, **kwargs)


async def test_a_reparse_whose_old_chunks_cannot_be_deleted_at_once_serves_only_the_new_version(
        core: Core, vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fast_janitor(core.settings, monkeypatch)
    kb = await ingest.create_kb(core, "kb", tenant="default")
    document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    chunks = RefusingDeletes(vectors, failures=3)
    async with api(core, vectors) as client, running_worker(core, vectors, chunks=chunks):
        await wait_for_status(core, task.id)
        again = await client.post(f"{API}/documents/{document.id}/reparse")
        assert again.status_code == 202, again.text
        done = await wait_for_status(core, again.json()["id"])
        assert done.status == "done" and done.parse_version == 2
        hits = await _search(client, kb, " ".join(TOPICS))
        texts = [h["text"] for h in hits]
        assert hits and len(set(texts)) == len(texts), "both versions are searchable"
        doc = await asyncio.to_thread(core.repo.documents.get, document.id)
        await wait_until(lambda: _stored_is(chunks, kb, document.id, doc.chunk_count), 30,
                         "the old version removed once the store takes deletes again")


# ------------------------------------------------------------------------------ deleting a knowledge base


class DeleteKbOnCreate:
    """A vector-store client whose first `create_collection` lets the user delete the knowledge base
    first: the worker reached its first index write just as the delete came."""

    def __init__(self, client: Any, delete: Callable[[], Awaitable[None]]) -> None:
        self._client = client
        self._delete = delete
        self.deleted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create_collection(self, *args: Any, **kwargs: Any) -> Any:
        if not self.deleted:
            self.deleted = True
            await self._delete()
        return await self._client.create_collection(*args, **kwargs)


async def test_deleting_a_knowledge_base_as_a_task_creates_its_collection_leaves_no_collection(
        core: Core, vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _fast_janitor(core.settings, monkeypatch)
    # Made the way a fleet's first task finds it: no collection until the first index write.
    kb = await asyncio.to_thread(core.repo.kbs.create, "kb", tenant="default", chunk_tokens=64, overlap_tokens=8,
                                 embedding_model="hash-test", dim=64)
    submitted = [await submit_document(core, kb, f"doc{i}.md", PROSE.encode()) for i in range(3)]
    async with api(core, vectors) as client:

        async def delete() -> None:
            assert (await client.delete(f"{API}/kbs/kb")).status_code == 204

        racing = DeleteKbOnCreate(vectors, delete)
        async with running_worker(core, vectors, chunks=ChunkStore(racing), concurrency=3) as worker:
            await wait_until(_poll(lambda: racing.deleted and not worker._executor.running), 30, "its tasks stopped")
            assert worker.stats.done == 0, "a task of the deleted knowledge base completed"
            await wait_until(lambda: _collection_gone(vectors, kb.collection), 20, "the collection dropped")
            await asyncio.sleep(1.0)  # a straggler would have re-created it by now
            assert await _collection_gone(vectors, kb.collection), "the deleted knowledge base's collection is back"
        assert (await client.get(f"{API}/kbs/kb")).status_code == 404
    assert len(submitted) == 3


async def _collection_gone(client: Any, collection: str) -> bool:
    return not await client.has_collection(collection)
