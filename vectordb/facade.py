"""`AsyncEngine`: the `VectorStore` interface over an in-process `Engine`, for an event loop.

Each call builds its task (`vectordb.requests`) and awaits it through `Proxy.run_async`, so the loop
never blocks on the engine (validation, I/O and FAISS run on worker threads). The embedded client is
an `AsyncEngine` that tracks its own writes (Session consistency); the REST server calls one without.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from vectordb.base import Filter, Rows
from vectordb.catalog import CollectionMeta
from vectordb.engine import Engine
from vectordb.proxy import Task
from vectordb.requests import Requests
from vectordb.results import Hit
from vectordb.schema import CollectionSchema, IndexParams
from vectordb.streaming.consistency import Session

T = TypeVar("T")


class AsyncEngine:
    """Async operations on `engine`; with `session`, reads see this caller's own writes (Session level)."""

    def __init__(self, engine: Engine, *, session: Session | None = None) -> None:
        self._engine = engine
        self._requests = Requests(engine.ops, session)

    @property
    def engine(self) -> Engine:
        return self._engine

    async def _run(self, task: Task[T]) -> T:
        return await self._engine.proxy.run_async(task)

    # ---------------------------------------------------------------------------------- collections

    async def create_collection(
        self, name: str, schema: CollectionSchema, *, index: IndexParams | None = None, if_not_exists: bool = False
    ) -> None:
        await self._run(self._requests.create_collection(name, schema, index, if_not_exists))

    async def has_collection(self, name: str) -> bool:
        return bool(await self._run(self._requests.has_collection(name)))

    async def drop_collection(self, name: str) -> None:
        await self._run(self._requests.drop_collection(name))

    async def list_collections(self) -> list[str]:
        return list(await self._run(self._requests.list_collections()))

    async def _meta(self, name: str) -> CollectionMeta:
        """Everything known about the collection: schema, index, partitions, segments."""
        meta: CollectionMeta = await self._run(self._requests.describe(name))
        return meta

    async def describe_collection(self, name: str) -> CollectionSchema:
        return (await self._meta(name)).schema

    async def describe_index(self, name: str, *, field_name: str | None = None) -> IndexParams:
        return (await self._meta(name)).index_of(field_name)

    async def create_index(self, name: str, index: IndexParams, *, field_name: str | None = None) -> None:
        """Replace the index definition and rebuild the index of every sealed segment (`field_name`: of
        that vector field; None: the first)."""
        await self._run(self._requests.create_index(name, index, field_name))

    async def flush(self, name: str) -> None:
        await self._run(self._requests.flush(name))

    async def compact(self, name: str) -> None:
        """Merge small sealed segments and purge deleted rows (see `Engine.compact`)."""
        await self._run(self._requests.compact(name))

    async def load_collection(self, name: str) -> None:
        await self._run(self._requests.load_collection(name))

    async def release_collection(self, name: str) -> None:
        await self._run(self._requests.release_collection(name))

    async def get_load_state(self, name: str) -> str:
        return str(await self._run(self._requests.get_load_state(name)))

    # ------------------------------------------------------------------------------------- entities

    async def insert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]:
        return list(await self._run(self._requests.write(name, rows, upsert=False, partition_name=partition_name)))

    async def upsert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]:
        return list(await self._run(self._requests.write(name, rows, upsert=True, partition_name=partition_name)))

    async def delete(self, name: str, *, ids: Sequence[Any] | None = None, filter: Filter | None = None) -> int:
        return int(await self._run(self._requests.delete(name, ids, filter)))

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
    ) -> list[list[Hit]]:
        task = self._requests.search(
            name,
            vectors,
            limit=limit,
            filter=filter,
            output_fields=output_fields,
            consistency_level=consistency_level,
            search_params=search_params,
            partition_names=partition_names,
            anns_field=anns_field,
        )
        return await self._run(task)  # type: ignore[no-any-return]

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
    ) -> list[dict[str, Any]]:
        task = self._requests.query(
            name,
            filter=filter,
            output_fields=output_fields,
            limit=limit,
            offset=offset,
            consistency_level=consistency_level,
            partition_names=partition_names,
        )
        return await self._run(task)  # type: ignore[no-any-return]

    async def get(
        self, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        return await self._run(self._requests.get(name, ids, output_fields))  # type: ignore[no-any-return]

    async def count(self, name: str) -> int:
        return int(await self._run(self._requests.count(name)))

    # ----------------------------------------------------------------------------------- partitions

    async def create_partition(self, name: str, partition: str) -> None:
        await self._run(self._requests.create_partition(name, partition))

    async def drop_partition(self, name: str, partition: str) -> None:
        """Delete the partition's rows and forget it; "_default" cannot be dropped."""
        await self._run(self._requests.drop_partition(name, partition))

    async def has_partition(self, name: str, partition: str) -> bool:
        return bool(await self._run(self._requests.has_partition(name, partition)))

    async def list_partitions(self, name: str) -> list[str]:
        return list(await self._run(self._requests.list_partitions(name)))
