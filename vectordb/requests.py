"""One place that turns each vector-store operation into its proxy task.

`Engine`'s synchronous methods and `AsyncEngine` (the embedded client and the REST server) both build
their tasks here, so an operation's arguments, defaults and session handling are written once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from vectordb.base import Filter, Rows
from vectordb.ops import EngineOps
from vectordb.schema import CollectionSchema, IndexParams
from vectordb.streaming.consistency import Session
from vectordb.tasks import (
    CompactTask,
    CountTask,
    CreateCollectionTask,
    CreateIndexTask,
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

TaskT = TypeVar("TaskT", bound=DmlTask | DqlTask)


class Requests:
    """Task factory over one engine; with `session`, reads wait for that session's own writes."""

    def __init__(self, ops: EngineOps, session: Session | None = None) -> None:
        self._ops = ops
        self._session = session

    def _tracked(self, task: TaskT) -> TaskT:
        task.session = self._session
        return task

    # ---------------------------------------------------------------------------------- collections

    def create_collection(
        self, name: str, schema: CollectionSchema, index: IndexParams | None, if_not_exists: bool
    ) -> CreateCollectionTask:
        return CreateCollectionTask(self._ops, name, schema, index or IndexParams(), if_not_exists)

    def drop_collection(self, name: str) -> DropCollectionTask:
        return DropCollectionTask(self._ops, name)

    def has_collection(self, name: str) -> HasCollectionTask:
        return HasCollectionTask(self._ops, name)

    def list_collections(self) -> ListCollectionsTask:
        return ListCollectionsTask(self._ops, "")

    def describe(self, name: str) -> DescribeCollectionTask:
        """The collection's meta: schema, index, partitions."""
        return DescribeCollectionTask(self._ops, name)

    def create_index(self, name: str, index: IndexParams, field_name: str | None = None) -> CreateIndexTask:
        return CreateIndexTask(self._ops, name, index, field_name)

    def flush(self, name: str) -> FlushTask:
        return FlushTask(self._ops, name)

    def compact(self, name: str) -> CompactTask:
        return CompactTask(self._ops, name)

    def load_collection(self, name: str) -> LoadCollectionTask:
        return LoadCollectionTask(self._ops, name)

    def release_collection(self, name: str) -> ReleaseCollectionTask:
        return ReleaseCollectionTask(self._ops, name)

    def get_load_state(self, name: str) -> GetLoadStateTask:
        return GetLoadStateTask(self._ops, name)

    # ------------------------------------------------------------------------------------- entities

    def write(self, name: str, rows: Rows, *, upsert: bool, partition_name: str | None) -> InsertTask:
        return self._tracked(InsertTask(self._ops, name, rows, upsert=upsert, partition_name=partition_name))

    def delete(self, name: str, ids: Sequence[Any] | None, filter: Filter | None) -> DeleteTask:
        return self._tracked(DeleteTask(self._ops, name, ids, filter))

    def search(
        self,
        name: str,
        vectors: Any,
        *,
        limit: int,
        filter: Filter | None,
        output_fields: Sequence[str] | None,
        consistency_level: str,
        search_params: Mapping[str, Any] | None,
        partition_names: Sequence[str] | None,
        anns_field: str | None = None,
    ) -> PartitionedSearchTask:
        task = PartitionedSearchTask(
            self._ops,
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
        return self._tracked(task)

    def query(
        self,
        name: str,
        *,
        filter: Filter,
        output_fields: Sequence[str] | None,
        limit: int | None,
        offset: int,
        consistency_level: str,
        partition_names: Sequence[str] | None,
    ) -> PartitionedQueryTask:
        task = PartitionedQueryTask(
            self._ops,
            name,
            filter=filter,
            output_fields=output_fields,
            limit=limit,
            offset=offset,
            consistency_level=consistency_level,
            partition_names=partition_names,
        )
        return self._tracked(task)

    def get(self, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None) -> GetTask:
        return self._tracked(GetTask(self._ops, name, ids, output_fields))

    def count(self, name: str) -> CountTask:
        return self._tracked(CountTask(self._ops, name))

    # ----------------------------------------------------------------------------------- partitions

    def create_partition(self, name: str, partition: str) -> CreatePartitionTask:
        return CreatePartitionTask(self._ops, name, partition)

    def drop_partition(self, name: str, partition: str) -> DropPartitionTask:
        return DropPartitionTask(self._ops, name, partition)

    def has_partition(self, name: str, partition: str) -> HasPartitionTask:
        return HasPartitionTask(self._ops, name, partition)

    def list_partitions(self, name: str) -> ListPartitionsTask:
        return ListPartitionsTask(self._ops, name)
