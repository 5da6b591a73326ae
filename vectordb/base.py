"""The vector-store interface every docvec client implements, and the column batch writes take.

`VectorStore` is what the rest of docvec programs against: `vectordb.connect(uri)` returns the
embedded client (`EmbeddedClient`), `HttpClient` (a `docvec vectordb` server) or `MilvusBackendClient`
(pymilvus: a Milvus server or Milvus Lite); all three have exactly these methods and signatures, return
the same types and raise the same exception classes (`tests/vectordb/test_backends.py` holds them to it).

Writes take rows (a list of dicts) or a `ColumnBatch`: ids, one float32 matrix, one list per scalar
field. The embedded store keeps a batch columnar from the caller to the segment (no per-row dicts,
no float lists); remote clients turn it into the JSON rows their protocol needs. Filters are Milvus
text or a `vectordb.filters.Where`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vectordb.filters import Where
from vectordb.results import Hit
from vectordb.schema import CollectionSchema, IndexParams


@dataclass(frozen=True, slots=True)
class ColumnBatch:
    """Rows as columns: `ids[i]`, `vectors[i]` and `columns[name][i]` make row i.

    `columns` holds every scalar field of the schema (and nothing else); `id_field` and `vector_field`
    name the primary key and vector fields, which must be the schema's.
    """

    ids: Sequence[Any]
    vectors: np.ndarray  # float32, shape (n, dim)
    columns: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    id_field: str = "id"
    vector_field: str = "vector"

    def __len__(self) -> int:
        return len(self.ids)

    def rows(self) -> list[dict[str, Any]]:
        """The batch as a list of row dicts (for transports that speak rows); vectors stay arrays."""
        names = list(self.columns)
        values = [self.columns[name] for name in names]
        out = []
        for i, key in enumerate(self.ids):
            row = {name: column[i] for name, column in zip(names, values, strict=True)}
            row[self.id_field] = key
            row[self.vector_field] = self.vectors[i]
            out.append(row)
        return out


Rows = Sequence[Mapping[str, Any]] | ColumnBatch
Filter = str | Where


@runtime_checkable
class VectorStore(Protocol):
    """The async client interface of a vector store (see the module docstring)."""

    async def create_collection(
        self, name: str, schema: CollectionSchema, *, index: IndexParams | None = None, if_not_exists: bool = False
    ) -> None: ...

    async def has_collection(self, name: str) -> bool: ...

    async def drop_collection(self, name: str) -> None: ...

    async def list_collections(self) -> list[str]: ...

    async def describe_collection(self, name: str) -> CollectionSchema: ...

    async def describe_index(self, name: str, *, field_name: str | None = None) -> IndexParams: ...

    async def create_index(self, name: str, index: IndexParams, *, field_name: str | None = None) -> None: ...

    async def insert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]: ...

    async def upsert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]: ...

    async def delete(self, name: str, *, ids: Sequence[Any] | None = None, filter: Filter | None = None) -> int: ...

    async def search(
        self,
        name: str,
        vectors: Any,
        *,
        limit: int,
        filter: Filter | None = None,
        output_fields: Sequence[str] | None = None,
        consistency_level: str = "Strong",
        search_params: Mapping[str, Any] | None = None,
        partition_names: Sequence[str] | None = None,
        anns_field: str | None = None,
    ) -> list[list[Hit]]: ...

    async def query(
        self,
        name: str,
        *,
        filter: Filter = "",
        output_fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        consistency_level: str = "Strong",
        partition_names: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]: ...

    async def get(
        self, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None = None
    ) -> list[dict[str, Any]]: ...

    async def count(self, name: str) -> int: ...

    async def flush(self, name: str) -> None: ...

    async def compact(self, name: str) -> None: ...

    async def load_collection(self, name: str) -> None: ...

    async def release_collection(self, name: str) -> None: ...

    async def get_load_state(self, name: str) -> str: ...

    async def create_partition(self, name: str, partition: str) -> None: ...

    async def drop_partition(self, name: str, partition: str) -> None: ...

    async def has_partition(self, name: str, partition: str) -> bool: ...

    async def list_partitions(self, name: str) -> list[str]: ...

    async def close(self) -> None: ...
