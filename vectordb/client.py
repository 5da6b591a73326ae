"""The client interface the rest of docvec uses, and `connect()` which picks the transport by URI."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from vectordb.engine import Engine
from vectordb.errors import InvalidRequest, UnsupportedUri
from vectordb.http_client import HttpClient
from vectordb.results import Hit
from vectordb.schema import CollectionSchema, IndexParams
from vectordb.streaming.consistency import Session
from vectordb.tasks import (
    CompactTask,
    CountTask,
    CreateCollectionTask,
    CreatePartitionTask,
    DeleteTask,
    DescribeCollectionTask,
    DmlTask,
    DqlTask,
    DropCollectionTask,
    DropPartitionTask,
    FlushTask,
    GetLoadStateTask,
    GetTask,
    HasCollectionTask,
    HasPartitionTask,
    InsertTask,
    ListCollectionsTask,
    ListPartitionsTask,
    LoadCollectionTask,
    PartitionedQueryTask,
    PartitionedSearchTask,
    ReleaseCollectionTask,
)

if TYPE_CHECKING:
    from vectordb.milvus_client import MilvusBackendClient

T = TypeVar("T")


class EmbeddedClient:
    """Async client over an in-process `Engine`. Calls hand a proxy task to `Proxy.run_async`, so the
    event loop never blocks on the engine (validation, I/O and FAISS run on worker threads).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._session = Session()  # this client's last write timestamp, for Session consistency

    @property
    def engine(self) -> Engine:
        return self._engine

    async def _run(self, task: Any) -> Any:
        if isinstance(task, DmlTask | DqlTask):
            task.session = self._session
        return await self._engine.proxy.run_async(task)

    async def create_collection(
        self, name: str, schema: CollectionSchema, *, index: IndexParams | None = None, if_not_exists: bool = False
    ) -> None:
        await self._run(CreateCollectionTask(self._engine, name, schema, index or IndexParams(), if_not_exists))

    async def has_collection(self, name: str) -> bool:
        return bool(await self._run(HasCollectionTask(self._engine, name)))

    async def drop_collection(self, name: str) -> None:
        await self._run(DropCollectionTask(self._engine, name))

    async def list_collections(self) -> list[str]:
        return list(await self._run(ListCollectionsTask(self._engine, "")))

    async def describe_collection(self, name: str) -> CollectionSchema:
        return (await self._run(DescribeCollectionTask(self._engine, name))).schema  # type: ignore[no-any-return]

    async def describe_index(self, name: str) -> IndexParams:
        return (await self._run(DescribeCollectionTask(self._engine, name))).index  # type: ignore[no-any-return]

    async def insert(
        self, name: str, rows: Sequence[Mapping[str, Any]], *, partition_name: str | None = None
    ) -> list[Any]:
        return list(await self._run(InsertTask(self._engine, name, rows, upsert=False, partition_name=partition_name)))

    async def upsert(
        self, name: str, rows: Sequence[Mapping[str, Any]], *, partition_name: str | None = None
    ) -> list[Any]:
        return list(await self._run(InsertTask(self._engine, name, rows, upsert=True, partition_name=partition_name)))

    async def delete(self, name: str, *, ids: Sequence[Any] | None = None, filter: str | None = None) -> int:
        return int(await self._run(DeleteTask(self._engine, name, ids, filter)))

    async def search(
        self,
        name: str,
        vectors: Any,
        *,
        limit: int,
        filter: str | None = None,
        output_fields: Sequence[str] | None = None,
        consistency_level: str = "Strong",
        search_params: Mapping[str, Any] | None = None,
        partition_names: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        task = PartitionedSearchTask(
            self._engine,
            name,
            vectors,
            limit=limit,
            filter=filter,
            output_fields=output_fields,
            consistency_level=consistency_level,
            search_params=search_params,
            partition_names=partition_names,
        )
        return await self._run(task)  # type: ignore[no-any-return]

    async def query(
        self,
        name: str,
        *,
        filter: str = "",
        output_fields: Sequence[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        consistency_level: str = "Strong",
        partition_names: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        task = PartitionedQueryTask(
            self._engine,
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
        return await self._run(GetTask(self._engine, name, ids, output_fields))  # type: ignore[no-any-return]

    async def count(self, name: str) -> int:
        return int(await self._run(CountTask(self._engine, name)))

    async def flush(self, name: str) -> None:
        await self._run(FlushTask(self._engine, name))

    async def compact(self, name: str) -> None:
        """Merge small sealed segments and purge deleted rows (see `Engine.compact`)."""
        await self._run(CompactTask(self._engine, name))

    async def load_collection(self, name: str) -> None:
        await self._run(LoadCollectionTask(self._engine, name))

    async def release_collection(self, name: str) -> None:
        await self._run(ReleaseCollectionTask(self._engine, name))

    async def get_load_state(self, name: str) -> str:
        return str(await self._run(GetLoadStateTask(self._engine, name)))

    async def create_partition(self, name: str, partition: str) -> None:
        await self._run(CreatePartitionTask(self._engine, name, partition))

    async def drop_partition(self, name: str, partition: str) -> None:
        await self._run(DropPartitionTask(self._engine, name, partition))

    async def has_partition(self, name: str, partition: str) -> bool:
        return bool(await self._run(HasPartitionTask(self._engine, name, partition)))

    async def list_partitions(self, name: str) -> list[str]:
        return list(await self._run(ListPartitionsTask(self._engine, name)))

    async def close(self) -> None:
        """Drain queued work and release the data directory (off the event loop)."""
        await asyncio.to_thread(self._engine.close)

    async def __aenter__(self) -> EmbeddedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_engine(path: str, **options: Any) -> Engine:
    """Open a synchronous engine on a data directory (see `Engine.open` for options)."""
    return Engine.open(path, **options)


def connect(uri: str, *, token: str = "", **options: Any) -> EmbeddedClient | HttpClient | MilvusBackendClient:
    """Connect to a vector store.

    - a directory path (or `file://` path): the embedded in-process store; `options` go to `Engine.open`;
    - `http://` / `https://`: a `docvec vectordb` server (Milvus RESTful v2 subset); `token` is sent as
      `Authorization: Bearer <token>`; `options` go to `HttpClient` (`timeout_s`, `retry_attempts`, ...);
    - `milvus://host:port` (a Milvus server) or `milvus:///path/x.db` (Milvus Lite): pymilvus, for users
      who outgrow one machine; `options` go to `MilvusBackendClient`;
    - other remote schemes (tcp, grpc, unix) raise UnsupportedUri.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidRequest("a vector store URI (a directory path or http:// URL) is required")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        return HttpClient(uri, token=token, **options)
    if scheme == "milvus":
        from vectordb.milvus_client import MilvusBackendClient as _Milvus  # pymilvus is optional

        return _Milvus(uri, token=token, **options)
    if scheme in ("tcp", "grpc", "unix"):
        raise UnsupportedUri(f"{scheme}:// vector store URIs are not supported yet; use a directory path or http://")
    if scheme == "file":
        uri = uri.split("://", 1)[1]
    elif scheme:
        raise InvalidRequest(f"unknown vector store URI scheme {scheme!r}")
    return EmbeddedClient(Engine.open(uri, **options))
