"""docvec's chunk collections on top of the vector-store client.

One collection per knowledge base. Chunk ids are derived from (document, parse version, ordinal,
content hash), so re-running a task writes the same ids (an upsert) and a finished parse version
replaces the previous one as a whole. Which chunk sets are live is the database's business
(`lifecycle`): this module stores, finds and removes chunks, and reports the store being unreachable
as `DependencyUnavailable` (vector_store).

Writes go to the store as a `ColumnBatch` (the embedder's float32 matrix as it is) and filters as
`Where` conditions; a collection this process has seen is not asked about again (`known`), until a
write finds it gone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from common.dependencies import Dependency
from common.errors import DependencyUnavailable, TransientError
from vectordb.base import ColumnBatch, VectorStore
from vectordb.errors import CollectionNotFound
from vectordb.filters import Where
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

T = TypeVar("T")

TITLE_MAX_CHARS = 1024
TEXT_MAX_CHARS = 65_535
FILENAME_MAX_CHARS = 512
NO_PAGE = -1

OUTPUT_FIELDS = ["document_id", "parse_version", "ordinal", "title", "text", "filename", "page"]


def chunk_id(document_id: str, parse_version: int, ordinal: int, text: str) -> str:
    """Stable id of one chunk: the same document, version, position and text give the same id."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    key = f"{document_id}:{parse_version}:{ordinal}:{digest}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def chunk_schema(dim: int) -> CollectionSchema:
    return CollectionSchema(
        fields=(
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=64),
            FieldSchema("vector", DataType.FLOAT_VECTOR, dim=dim),
            FieldSchema("document_id", DataType.VARCHAR, max_length=64),
            FieldSchema("parse_version", DataType.INT64),
            FieldSchema("ordinal", DataType.INT64),
            FieldSchema("title", DataType.VARCHAR, max_length=TITLE_MAX_CHARS),
            FieldSchema("text", DataType.VARCHAR, max_length=TEXT_MAX_CHARS),
            FieldSchema("filename", DataType.VARCHAR, max_length=FILENAME_MAX_CHARS),
            FieldSchema("page", DataType.INT64),
            FieldSchema("start_char", DataType.INT64),
            FieldSchema("end_char", DataType.INT64),
            FieldSchema("token_count", DataType.INT64),
        ),
        description="docvec chunks",
    )


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """What the worker writes for one chunk."""

    document_id: str
    parse_version: int
    ordinal: int
    title: str
    text: str
    filename: str
    page: int | None
    start_char: int
    end_char: int
    token_count: int

    @property
    def id(self) -> str:
        return chunk_id(self.document_id, self.parse_version, self.ordinal, self.text)


@dataclass(frozen=True, slots=True)
class ChunkHit:
    """One search result."""

    chunk_id: str
    document_id: str
    filename: str
    title: str
    text: str
    score: float
    page: int | None
    parse_version: int = 0


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """One stored chunk of a document's parse version, as the store holds it (no vector)."""

    chunk_id: str
    ordinal: int
    title: str
    text: str
    page: int | None
    start_char: int
    end_char: int
    token_count: int


CHUNK_FIELDS = ["ordinal", "title", "text", "page", "start_char", "end_char", "token_count"]


class ChunkStore:
    """Chunk-level operations on a vector-store client (`vectordb.connect(...)`)."""

    def __init__(self, client: VectorStore, *, index_type: str = "AUTOINDEX", metric_type: str = "COSINE") -> None:
        self._client = client
        self._index = IndexParams(index_type=index_type, metric_type=metric_type)
        self._known: set[str] = set()  # collections seen to exist by this process

    def known(self, collection: str) -> bool:
        """Whether this process has seen `collection` exist (and no write has found it gone since)."""
        return collection in self._known

    @staticmethod
    async def _reach(call: Awaitable[T]) -> T:
        """Await a client call; the store being unreachable or failing (any TransientError of the
        client: connection refused, timeouts, 5xx, a full disk) is the vector store being unavailable."""
        try:
            return await call
        except DependencyUnavailable:
            raise
        except TransientError as exc:
            raise DependencyUnavailable(Dependency.VECTOR_STORE, f"vector store: {exc.message}") from exc

    async def ping(self) -> None:
        """A cheap call that succeeds only when the store answers (the worker's dependency probe)."""
        await self._reach(self._client.list_collections())

    async def ensure_collection(self, collection: str, dim: int) -> None:
        """Create the collection unless it exists (with the chunk schema for `dim`)."""
        await self._reach(self._client.create_collection(
            collection, chunk_schema(dim), index=self._index, if_not_exists=True
        ))
        self._known.add(collection)

    async def has_collection(self, collection: str) -> bool:
        exists = bool(await self._reach(self._client.has_collection(collection)))
        if exists:
            self._known.add(collection)
        else:
            self._known.discard(collection)
        return exists

    async def drop_collection(self, collection: str) -> None:
        if await self.has_collection(collection):
            self._known.discard(collection)
            await self._reach(self._client.drop_collection(collection))

    async def upsert(self, collection: str, rows: Sequence[ChunkRow], vectors: np.ndarray) -> int:
        """Write `rows` with their `vectors` (one float32 row each); CollectionNotFound if it is gone."""
        if len(rows) != len(vectors):
            raise ValueError(f"{len(rows)} chunk rows but {len(vectors)} vectors")
        if not rows:
            return 0
        batch = ColumnBatch(
            ids=[row.id for row in rows],
            vectors=np.asarray(vectors, dtype=np.float32),
            columns={
                "document_id": [row.document_id for row in rows],
                "parse_version": [row.parse_version for row in rows],
                "ordinal": [row.ordinal for row in rows],
                "title": [row.title[:TITLE_MAX_CHARS] for row in rows],
                "text": [row.text[:TEXT_MAX_CHARS] for row in rows],
                "filename": [row.filename[:FILENAME_MAX_CHARS] for row in rows],
                "page": [NO_PAGE if row.page is None else row.page for row in rows],
                "start_char": [row.start_char for row in rows],
                "end_char": [row.end_char for row in rows],
                "token_count": [row.token_count for row in rows],
            },
        )
        try:
            await self._reach(self._client.upsert(collection, batch))
        except CollectionNotFound:
            self._known.discard(collection)
            raise
        return len(rows)

    async def delete_document(self, collection: str, document_id: str, *, only_version: int | None = None) -> int:
        """Delete a document's chunks, all of them or one parse version's; returns how many went."""
        if not await self.has_collection(collection):
            return 0
        where = Where.eq("document_id", document_id)
        if only_version is not None:
            where &= Where.eq("parse_version", int(only_version))
        return int(await self._reach(self._client.delete(collection, filter=where)))

    async def count_document(self, collection: str, document_id: str) -> int:
        if not await self.has_collection(collection):
            return 0
        rows = await self._reach(self._client.query(
            collection, filter=Where.eq("document_id", document_id), output_fields=["id"]
        ))
        return len(rows)

    async def document_versions(self, collection: str, document_id: str | None = None) -> dict[str, dict[int, int]]:
        """Chunks per (document, parse version) in the store: {document id: {version: count}} (audits)."""
        if not await self.has_collection(collection):
            return {}
        expr = Where.eq("document_id", document_id) if document_id else Where.ne("document_id", "")
        rows = await self._reach(self._client.query(
            collection, filter=expr, output_fields=["document_id", "parse_version"]
        ))
        out: dict[str, dict[int, int]] = {}
        for row in rows:
            versions = out.setdefault(str(row["document_id"]), {})
            versions[int(row["parse_version"])] = versions.get(int(row["parse_version"]), 0) + 1
        return out

    async def ordinals(self, collection: str, document_id: str, parse_version: int) -> list[int]:
        """The ordinals of one parse version's chunks, ascending (none when the collection is gone)."""
        if not await self.has_collection(collection):
            return []
        rows = await self._reach(self._client.query(
            collection, filter=Where.eq("document_id", document_id) & Where.eq("parse_version", int(parse_version)),
            output_fields=["ordinal"],
        ))
        return sorted(int(row["ordinal"]) for row in rows)

    async def chunks_at(self, collection: str, document_id: str, parse_version: int,
                        ordinals: Sequence[int]) -> list[StoredChunk]:
        """The chunks of one parse version at `ordinals`, in ordinal order."""
        if not ordinals or not await self.has_collection(collection):
            return []
        where = (Where.eq("document_id", document_id) & Where.eq("parse_version", int(parse_version))
                 & Where.one_of("ordinal", [int(o) for o in ordinals]))
        rows = await self._reach(self._client.query(collection, filter=where, output_fields=["id", *CHUNK_FIELDS]))
        chunks = [StoredChunk(
            chunk_id=str(row["id"]), ordinal=int(row["ordinal"]), title=str(row.get("title", "")),
            text=str(row.get("text", "")), page=None if int(row.get("page", NO_PAGE)) == NO_PAGE else int(row["page"]),
            start_char=int(row.get("start_char", 0)), end_char=int(row.get("end_char", 0)),
            token_count=int(row.get("token_count", 0)),
        ) for row in rows]
        return sorted(chunks, key=lambda c: c.ordinal)

    async def search(self, collection: str, vector: np.ndarray, top_k: int,
                     filter: str | None = None) -> list[ChunkHit]:
        """The `top_k` nearest chunks of any version (the caller keeps only live ones); none when the
        collection does not exist (a knowledge base nothing was written to yet)."""
        try:
            results = await self._reach(self._client.search(
                collection, np.asarray(vector, dtype=np.float32).reshape(1, -1), limit=top_k,
                filter=filter or None, output_fields=OUTPUT_FIELDS,
            ))
        except CollectionNotFound:
            self._known.discard(collection)
            return []
        hits: list[ChunkHit] = []
        for hit in results[0] if results else []:
            entity = hit.entity
            page = int(entity.get("page", NO_PAGE))
            hits.append(ChunkHit(
                chunk_id=str(hit.id),
                document_id=str(entity.get("document_id", "")),
                filename=str(entity.get("filename", "")),
                title=str(entity.get("title", "")),
                text=str(entity.get("text", "")),
                score=float(hit.distance),
                page=None if page == NO_PAGE else page,
                parse_version=int(entity.get("parse_version", 0)),
            ))
        return hits
