"""ChunkStore: stable chunk ids, columnar writes, typed filters, collections looked up once per process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vectordb.base import ColumnBatch
from vectordb.chunkstore import ChunkRow, ChunkStore, chunk_id
from vectordb.client import EmbeddedClient
from vectordb.engine import Engine
from vectordb.errors import CollectionNotFound
from vectordb.schema import CollectionSchema


def test_chunk_ids_are_stable_and_distinguish_position_and_version() -> None:
    base = chunk_id("doc", 1, 0, "same text")
    assert base == chunk_id("doc", 1, 0, "same text")
    assert base != chunk_id("doc", 1, 1, "same text"), "identical texts at two ordinals are both kept"
    assert base != chunk_id("doc", 2, 0, "same text"), "a new parse version writes new ids"
    assert base != chunk_id("other", 1, 0, "same text")
    assert base != chunk_id("doc", 1, 0, "other text")
    assert len(base) == 32


class CountingStore(EmbeddedClient):
    """The embedded client, counting the calls ChunkStore makes and what writes carry."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.calls: list[str] = []
        self.batches: list[object] = []

    async def has_collection(self, name: str) -> bool:
        self.calls.append("has_collection")
        return await super().has_collection(name)

    async def create_collection(self, name: str, schema: CollectionSchema, **kwargs: Any) -> None:  # type: ignore[override]
        self.calls.append("create_collection")
        await super().create_collection(name, schema, **kwargs)

    async def upsert(self, name: str, rows: Any, *, partition_name: str | None = None) -> list[Any]:
        self.batches.append(rows)
        return await super().upsert(name, rows, partition_name=partition_name)


def _rows(document_id: str, version: int, n: int) -> list[ChunkRow]:
    return [
        ChunkRow(document_id, version, i, f"title {i}", f"text {i} of {document_id}", "f.txt", None if i % 2 else i,
                 0, 10, 3)
        for i in range(n)
    ]


async def test_chunks_are_written_as_columns_and_found_by_document(tmp_path: Path) -> None:
    store = CountingStore(Engine.open(tmp_path / "vec", fsync=False))
    try:
        chunks = ChunkStore(store, index_type="FLAT")
        await chunks.ensure_collection("kb", 8)
        vectors = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
        assert await chunks.upsert("kb", _rows('doc "1"', 1, 4), vectors[:4]) == 4
        assert await chunks.upsert("kb", _rows("doc2", 3, 2), vectors[4:]) == 2
        assert all(isinstance(b, ColumnBatch) for b in store.batches)
        assert await chunks.count_document("kb", 'doc "1"') == 4
        assert await chunks.document_versions("kb") == {'doc "1"': {1: 4}, "doc2": {3: 2}}
        hits = await chunks.search("kb", vectors[1], 1)
        assert (hits[0].document_id, hits[0].page, hits[0].parse_version) == ('doc "1"', None, 1)
        assert await chunks.delete_document("kb", "doc2", only_version=2) == 0
        assert await chunks.delete_document("kb", "doc2", only_version=3) == 2
        assert await chunks.delete_document("kb", 'doc "1"') == 4
        assert await chunks.document_versions("kb") == {}
    finally:
        await store.close()


async def test_a_collection_is_looked_up_once_per_process(tmp_path: Path) -> None:
    store = CountingStore(Engine.open(tmp_path / "vec", fsync=False))
    try:
        chunks = ChunkStore(store, index_type="FLAT")
        assert not chunks.known("kb")
        await chunks.ensure_collection("kb", 8)
        assert chunks.known("kb")
        other = ChunkStore(store, index_type="FLAT")  # another process: it asks once, then knows
        assert await other.has_collection("kb") and other.known("kb")
        await store.drop_collection("kb")  # dropped behind both stores' backs
        vectors = np.ones((1, 8), np.float32)
        with pytest.raises(CollectionNotFound):
            await other.upsert("kb", _rows("d", 1, 1), vectors)
        assert not other.known("kb"), "a write that finds the collection gone forgets it"
        await other.ensure_collection("kb", 8)
        assert await other.upsert("kb", _rows("d", 1, 1), vectors) == 1
        assert store.calls.count("create_collection") == 2
    finally:
        await store.close()


async def test_search_of_a_collection_never_written_finds_nothing_in_one_call(tmp_path: Path) -> None:
    """A knowledge base nothing was written to has no collection: its searches find nothing, asked of
    the store once (the store's CollectionNotFound, not a lookup before every search)."""
    store = CountingStore(Engine.open(tmp_path / "vec", fsync=False))
    try:
        chunks = ChunkStore(store, index_type="FLAT")
        assert await chunks.search("kb", np.ones(8, np.float32), 3) == []
        await chunks.ensure_collection("kb", 8)
        await chunks.upsert("kb", _rows("d", 1, 2), np.eye(2, 8, dtype=np.float32))
        assert [h.document_id for h in await chunks.search("kb", np.eye(1, 8, dtype=np.float32)[0], 3)] == ["d", "d"]
        await store.drop_collection("kb")
        assert await chunks.search("kb", np.ones(8, np.float32), 3) == []
        assert not chunks.known("kb"), "a search that finds the collection gone forgets it"
        assert "has_collection" not in store.calls
    finally:
        await store.close()
