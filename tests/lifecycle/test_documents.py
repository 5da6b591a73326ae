"""What search sees is decided by the database: only live parse versions of existing documents."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from common.runtime import Core
from lifecycle import documents as lifecycle
from tests.dbcalls import claim_one, complete_one
from tests.submit import submit_document
from vectordb.chunkstore import ChunkRow, ChunkStore


def _rows(document_id: str, version: int, texts: list[str]) -> list[ChunkRow]:
    return [ChunkRow(document_id=document_id, parse_version=version, ordinal=i, title="t", text=text,
                     filename="f.md", page=None, start_char=0, end_char=len(text), token_count=3)
            for i, text in enumerate(texts)]


async def _write(chunks: ChunkStore, collection: str, rows: list[ChunkRow], vectors: np.ndarray) -> None:
    await chunks.upsert(collection, rows, vectors.astype(np.float32))


async def test_search_returns_only_live_versions_of_existing_documents(core: Core, vectors: Any) -> None:
    chunks = ChunkStore(vectors)
    kb = await lifecycle.create_kb(core, "kb", tenant="default", chunks=chunks)
    embedder = await core.embedders.get()
    live, task = await submit_document(core, kb, "live.md", b"# x\n\nrivers")
    doomed, _ = await submit_document(core, kb, "doomed.md", b"# y\n\nrivers")
    claimed = await asyncio.to_thread(claim_one, core.repo, task.id, "w")
    assert claimed is not None
    await asyncio.to_thread(complete_one, core.repo, task.id, claimed.version, chunk_count=2, token_count=6,
                            format="md")
    query = embedder.encode(["rivers of the world"], 1)
    near = np.repeat(query, 2, axis=0)
    await _write(chunks, kb.collection, _rows(live.id, 1, ["live one", "live two"]), near * 0.9 + 0.01)
    # Closer to the query than the live chunks: an old version, a version still being written, a
    # document that is gone. None of it may be served.
    await _write(chunks, kb.collection, _rows(live.id, 7, ["stale one", "stale two"]), near)
    await _write(chunks, kb.collection, _rows(doomed.id, 1, ["doomed one", "doomed two"]), near)
    await lifecycle.delete_document(core, doomed.id)
    hits = await lifecycle.search(core.repo, chunks, kb, query[0], 2)
    assert [(h.document_id, h.parse_version) for h in hits] == [(live.id, 1), (live.id, 1)]
    assert sorted(h.text for h in hits) == ["live one", "live two"]


async def test_search_fetches_more_rounds_when_garbage_crowds_out_the_live_hits(core: Core, vectors: Any) -> None:
    chunks = ChunkStore(vectors)
    kb = await lifecycle.create_kb(core, "kb", tenant="default", chunks=chunks)
    document, task = await submit_document(core, kb, "d.md", b"# x\n\nrivers")
    claimed = await asyncio.to_thread(claim_one, core.repo, task.id, "w")
    assert claimed is not None
    await asyncio.to_thread(complete_one, core.repo, task.id, claimed.version, chunk_count=1, token_count=3,
                            format="md")
    embedder = await core.embedders.get()
    query = embedder.encode(["rivers"], 1)
    await _write(chunks, kb.collection, _rows(document.id, 9, [f"old {i}" for i in range(60)]),
                 np.repeat(query, 60, axis=0))
    await _write(chunks, kb.collection, _rows(document.id, 1, ["the live one"]), query * 0.5 + 0.1)
    hits = await lifecycle.search(core.repo, chunks, kb, query[0], 1)
    assert [h.text for h in hits] == ["the live one"]
