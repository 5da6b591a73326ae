"""`lifecycle.sync`: planning a folder against a knowledge base, deleting what is gone, reindexing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.db import SourceState, TaskStatus
from common.errors import Conflict, InvalidRequest
from common.runtime import Core
from lifecycle import documents as lifecycle
from lifecycle import sync
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from vectordb.chunkstore import ChunkStore

A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_plan_sorts_keys_into_added_updated_unchanged_unfinished_and_deleted() -> None:
    held = {
        "same.md": SourceState("d1", A, TaskStatus.DONE),
        "edited.md": SourceState("d2", A, TaskStatus.DONE),
        "failed.md": SourceState("d3", A, TaskStatus.FAILED),
        "gone.md": SourceState("d4", A, TaskStatus.DONE),
        "queued.md": SourceState("d5", A, TaskStatus.QUEUED),
        "running.md": SourceState("d6", A, TaskStatus.RUNNING),
        "requeued.md": SourceState("d7", A, TaskStatus.RUNNING),
    }
    present = {"same.md": A, "edited.md": B, "failed.md": A, "new.md": C, "queued.md": A, "running.md": A,
               "requeued.md": B}
    active = {"d5": ["t5"], "d6": ["t6a", "t6b"], "d7": ["t7"]}
    result = sync.plan(held, present, delete_missing=True, active=active)
    assert (result.added, result.updated, result.unchanged, result.deleted) == (
        ["new.md"], ["edited.md", "failed.md", "requeued.md"], ["same.md"], ["gone.md"])
    assert result.unfinished == {"queued.md": ["t5"], "running.md": ["t6a", "t6b"]}, \
        "the same content, not done yet: unfinished (with its tasks), never unchanged"
    assert sync.plan(held, present, delete_missing=False).deleted == []
    assert result.summary() == "1 added, 3 updated, 1 unchanged, 2 unfinished from an earlier ingest, 1 deleted"
    assert sync.plan(held, {"same.md": A}, delete_missing=False).summary() == (
        "0 added, 0 updated, 1 unchanged, 0 deleted")


@pytest.mark.parametrize("present", [{"a.md": "not-a-hash"}, {"": A}, {"a\x00.md": A}, {"x" * 513: A},
                                     {"caf\udce9.md": A}, {"\ud800": A}])
async def test_a_sync_with_bad_sources_is_refused(core: Core, present: dict[str, str]) -> None:
    """A lone surrogate (how Python spells a file name's byte that is not UTF-8) is refused as clearly as the
    rest: no database can store it, and it used to reach one (`UnicodeEncodeError` deep in a submit)."""
    kb = await lifecycle.create_kb(core, "kb", tenant="default")
    with pytest.raises(InvalidRequest):
        await sync.sync(core, kb, present)


async def test_sync_deletes_only_keyed_documents_that_are_gone(core: Core) -> None:
    kb = await lifecycle.create_kb(core, "kb", tenant="default")
    kept, kept_task = await submit_document(core, kb, "kept.md", b"# k\n\nkept")
    gone, _ = await submit_document(core, kb, "gone.md", b"# g\n\ngone")
    dry = await sync.sync(core, kb, {"kept.md": kept.sha256}, dry_run=True)
    assert dry.deleted == ["gone.md"]
    assert len(await asyncio.to_thread(core.repo.documents.of_kb, kb.id)) == 2, "a dry run deletes nothing"
    done = await sync.sync(core, kb, {"kept.md": kept.sha256})
    # No worker ran: kept.md's content is there but not done, so it is unfinished (with its task), not unchanged.
    assert done.deleted == ["gone.md"] and done.unchanged == [] and done.unfinished == {"kept.md": [kept_task.id]}
    assert [d.id for d in await asyncio.to_thread(core.repo.documents.of_kb, kb.id)] == [kept.id]


async def test_reindex_gives_every_document_a_new_version_under_the_new_chunking(core: Core, vectors: Any) -> None:
    chunks = ChunkStore(vectors)
    kb = await lifecycle.create_kb(core, "kb", tenant="default", chunks=chunks)
    text = "# Notes\n\n" + " ".join(f"word{i}" for i in range(600)) + "\n"
    document, task = await submit_document(core, kb, "long.md", text.encode())
    async with running_worker(core, vectors):
        first = await wait_for_status(core, task.id)
        assert first.status == "done"
        smaller = kb.chunk_tokens // 2
        updated, tasks = await sync.reindex(core, kb, chunk_tokens=smaller, overlap_tokens=8)
        assert (updated.chunk_tokens, updated.overlap_tokens) == (smaller, 8)
        assert [t.document_id for t in tasks] == [document.id] and tasks[0].parse_version == 2
        second = await wait_for_status(core, tasks[0].id)
    assert second.status == "done" and second.chunk_count > first.chunk_count
    assert second.chunks_embedded == second.chunk_count, "new chunk boundaries: new texts to embed"
    live = await asyncio.to_thread(core.repo.documents.get, document.id)
    assert live.parse_version == 2 and live.chunk_count == second.chunk_count
    with pytest.raises(InvalidRequest):
        await sync.reindex(core, kb, chunk_tokens=64, overlap_tokens=64)


async def test_reindex_refuses_a_model_of_another_dimension(core: Core) -> None:
    kb = await lifecycle.create_kb(core, "kb", tenant="default")
    with pytest.raises(Conflict, match="create a new knowledge base"):
        await asyncio.to_thread(core.repo.documents.reindex, kb.id, chunk_tokens=128, overlap_tokens=16,
                                embedding_model="bigger", dim=kb.dim * 2)
