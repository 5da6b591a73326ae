"""The concrete proxy tasks behind every engine call (built by `vectordb.requests`).

A task validates its request in `pre_execute` (`vectordb.validation`, against the cached schema) and
does its work in `execute` through `vectordb.ops.EngineOps`, the engine's narrow interface for tasks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from typing import TYPE_CHECKING, Any

import numpy as np

from vectordb.base import Filter, Rows
from vectordb.catalog import CollectionMeta
from vectordb.errors import InvalidRequest, PartitionNotFound
from vectordb.expr import And, Expr, FieldRef, InList
from vectordb.proxy import Task
from vectordb.results import Hit
from vectordb.schema import COUNT_FIELD, PARTITION_FIELD, CollectionSchema, DataType, IndexParams, RowBatch
from vectordb.streaming.consistency import Session
from vectordb.validation import (
    check_create_collection,
    check_delete,
    check_get,
    check_index,
    check_query,
    check_rows,
    check_search,
)

if TYPE_CHECKING:
    from vectordb.collection import Collection
    from vectordb.ops import EngineOps

# ------------------------------------------------------------------------------------------------ DDL


class DdlTask(Task[Any]):
    queue_name = "ddl"

    def __init__(self, ops: EngineOps, name: str) -> None:
        super().__init__()
        self.ops = ops
        self.name = name

    def channel(self) -> str:
        return "ddl"  # one channel: strictly serial

    def post_execute(self, result: Any) -> Any:
        self.ops.meta_cache.invalidate(self.name)
        return result


class CreateCollectionTask(DdlTask):
    def __init__(
        self, ops: EngineOps, name: str, schema: CollectionSchema, index: IndexParams, if_not_exists: bool
    ) -> None:
        super().__init__(ops, name)
        self.schema, self.index, self.if_not_exists = schema, index, if_not_exists

    def pre_execute(self) -> None:
        check_create_collection(self.name, self.schema, self.index)

    def execute(self) -> bool:
        return self.ops.create(self.name, self.schema, self.index, self.if_not_exists, self.begin_ts)

    def post_execute(self, result: Any) -> None:
        if result:  # an `if_not_exists` that found the collection changed nothing: the cache stays
            self.ops.meta_cache.invalidate(self.name)


class DropCollectionTask(DdlTask):
    def execute(self) -> None:
        self.ops.drop(self.name)


class CreateIndexTask(DdlTask):
    def __init__(self, ops: EngineOps, name: str, index: IndexParams, field_name: str | None = None) -> None:
        super().__init__(ops, name)
        self.index, self.field_name = index, field_name

    def pre_execute(self) -> None:
        check_index(self.index)

    def execute(self) -> None:
        self.ops.get(self.name).set_index(self.index, self.field_name)


# ------------------------------------------------------------------------------------------------ DML


class DmlTask(Task[Any]):
    queue_name = "dml"
    session: Session | None = None  # set by a client that tracks its writes (Session consistency)

    def __init__(self, ops: EngineOps, name: str) -> None:
        super().__init__()
        self.ops = ops
        self.name = name
        self.meta: CollectionMeta | None = None

    def channel(self) -> str:
        return f"dml:{self.name}"

    def rate_cost(self) -> tuple[str, str, float] | None:
        return ("dml", self.name, 1.0)

    def pre_execute(self) -> None:
        self.meta = self.ops.meta_cache.get(self.name)

    def collection(self) -> Collection:
        assert self.meta is not None
        return self.ops.get(self.name, expect_id=self.meta.id)


class InsertTask(DmlTask):
    def __init__(
        self,
        ops: EngineOps,
        name: str,
        rows: Rows,
        *,
        upsert: bool,
        partition_name: str | None = None,
    ) -> None:
        super().__init__(ops, name)
        self.rows, self.upsert, self.partition_name = rows, upsert, partition_name
        self.batch: RowBatch | None = None

    def rate_cost(self) -> tuple[str, str, float] | None:
        return ("dml", self.name, float(max(len(self.rows), 1)) if isinstance(self.rows, Sized) else 1.0)

    def pre_execute(self) -> None:
        super().pre_execute()
        assert self.meta is not None
        schema = self.meta.schema
        new_ids = None if self.upsert or not schema.primary.auto_id else self._new_ids
        self.batch = check_rows(schema, self.rows, new_ids)
        _tag_partition(self.meta, self.batch, self.partition_name)

    def _new_ids(self, n: int) -> list[int]:
        first = self.ops.tso.next_block(n)
        return list(range(first, first + n))

    def execute(self) -> list[Any]:
        assert self.batch is not None
        coll = self.collection()
        write = coll.upsert if self.upsert else coll.insert
        ids = write(self.batch, session=self.session)
        self.ops.after_write(coll)
        return ids


class DeleteTask(DmlTask):
    def __init__(self, ops: EngineOps, name: str, ids: Sequence[Any] | None, filter: Filter | None) -> None:
        super().__init__(ops, name)
        self.ids, self.filter = ids, filter
        self.expr: Expr | None = None
        self.pks: list[Any] | None = None

    def pre_execute(self) -> None:
        super().pre_execute()
        assert self.meta is not None
        request = check_delete(self.meta.schema, self.ids, self.filter)
        self.pks, self.expr = request.pks, request.expr

    def execute(self) -> int:
        coll = self.collection()
        if self.pks is not None:
            return int(coll.delete_pks(self.pks, session=self.session))
        assert self.expr is not None
        return int(coll.delete_where(self.expr, session=self.session))


# ------------------------------------------------------------------------------------------------ DQL


class DqlTask(Task[Any]):
    queue_name = "dql"
    session: Session | None = None  # set by a client: Session consistency waits for its last write

    def rate_cost(self) -> tuple[str, str, float] | None:
        return ("dql", self.name, 1.0)

    def read_ts(self, coll: Any, level: str) -> int:
        """The MVCC timestamp to read at, after waiting for `level`'s guarantee timestamp."""
        return int(coll.read_ts(level, self.session.last_write_ts if self.session else None))

    def __init__(self, ops: EngineOps, name: str) -> None:
        super().__init__()
        self.ops = ops
        self.name = name
        self.meta: CollectionMeta | None = None

    def pre_execute(self) -> None:
        self.meta = self.ops.meta_cache.get(self.name)

    def collection(self) -> Collection:
        assert self.meta is not None
        return self.ops.get(self.name, expect_id=self.meta.id)


class HasCollectionTask(DqlTask):
    def pre_execute(self) -> None:
        pass

    def execute(self) -> bool:
        return self.ops.exists(self.name)


class ListCollectionsTask(DqlTask):
    def pre_execute(self) -> None:
        pass

    def execute(self) -> list[str]:
        return self.ops.names()


class DescribeCollectionTask(DqlTask):
    def execute(self) -> CollectionMeta:
        return self.collection().meta


class CountTask(DqlTask):
    def execute(self) -> int:
        return int(self.collection().count())


class SearchTask(DqlTask):
    def __init__(
        self,
        ops: EngineOps,
        name: str,
        vectors: Any,
        *,
        limit: int,
        filter: Filter | None,
        output_fields: Sequence[str] | None,
        consistency_level: str,
        search_params: Mapping[str, Any] | None,
        anns_field: str | None = None,
    ) -> None:
        super().__init__(ops, name)
        self.vectors, self.limit, self.filter = vectors, limit, filter
        self.output_fields, self.consistency_level, self.search_params = output_fields, consistency_level, search_params
        self.anns_field = anns_field
        self.queries: np.ndarray | None = None
        self.expr: Expr | None = None
        self.fields: list[str] = []

    def pre_execute(self) -> None:
        super().pre_execute()
        assert self.meta is not None
        request = check_search(
            self.meta.schema,
            self.meta.index_of(self.anns_field),
            self.vectors,
            limit=self.limit,
            filter=self.filter,
            output_fields=self.output_fields,
            consistency_level=self.consistency_level,
            search_params=self.search_params,
            anns_field=self.anns_field,
        )
        self.queries, self.expr, self.fields = request.queries, request.expr, request.fields

    def execute(self) -> list[list[Hit]]:
        assert self.queries is not None
        coll = self.collection()
        read_ts = self.read_ts(coll, self.consistency_level)
        return coll.search(self.queries, self.limit, self.expr, self.fields, self.search_params,  # type: ignore[no-any-return]
                           read_ts=read_ts, anns_field=self.anns_field)


class QueryTask(DqlTask):
    def __init__(
        self,
        ops: EngineOps,
        name: str,
        *,
        filter: Filter,
        output_fields: Sequence[str] | None,
        limit: int | None,
        offset: int,
        consistency_level: str,
    ) -> None:
        super().__init__(ops, name)
        self.filter, self.output_fields, self.limit, self.offset = filter, output_fields, limit, offset
        self.consistency_level = consistency_level
        self.expr: Expr | None = None
        self.fields: list[str] = []
        # `output_fields=["count(*)"]`: one row, {"count(*)": how many rows match}, as Milvus answers it.
        self.counting = output_fields is not None and not isinstance(output_fields, str) and [
            str(f).lower() for f in output_fields] == [COUNT_FIELD]

    def pre_execute(self) -> None:
        super().pre_execute()
        assert self.meta is not None
        if self.counting and (self.limit or self.offset):
            raise InvalidRequest(f"{COUNT_FIELD} counts every matching row: it takes no limit or offset")
        request = check_query(
            self.meta.schema,
            filter=self.filter,
            output_fields=[] if self.counting else self.output_fields,
            limit=None if self.counting else self.limit,
            offset=0 if self.counting else self.offset,
            consistency_level=self.consistency_level,
        )
        self.expr, self.fields = request.expr, request.fields

    def execute(self) -> list[dict[str, Any]]:
        coll = self.collection()
        read_ts = self.read_ts(coll, self.consistency_level)
        if self.counting:
            return [{COUNT_FIELD: len(coll.query(self.expr, self.fields, None, 0, read_ts=read_ts))}]
        return coll.query(self.expr, self.fields, self.limit, self.offset, read_ts=read_ts)  # type: ignore[no-any-return]


class GetTask(DqlTask):
    def __init__(self, ops: EngineOps, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None) -> None:
        super().__init__(ops, name)
        self.ids, self.output_fields = ids, output_fields
        self.pks: list[Any] = []
        self.fields: list[str] = []

    def pre_execute(self) -> None:
        super().pre_execute()
        assert self.meta is not None
        request = check_get(self.meta.schema, self.ids, self.output_fields)
        self.pks, self.fields = request.pks, request.fields

    def execute(self) -> list[dict[str, Any]]:
        return self.collection().get(self.pks, self.fields)  # type: ignore[no-any-return]


# -------------------------------------------------------------------------------------------- control


class ControlTask(Task[Any]):
    """Control-queue tasks run one at a time per collection (with flush)."""

    queue_name = "control"

    def __init__(self, ops: EngineOps, name: str) -> None:
        super().__init__()
        self.ops = ops
        self.name = name

    def channel(self) -> str:
        return f"control:{self.name}"


class FlushTask(ControlTask):
    def execute(self) -> None:
        self.ops.get(self.name).flush()
        self.ops.after_flush(self.name)


# ------------------------------------------------------------------- partitions, compaction, load


def _partition_ids(meta: CollectionMeta, names: Sequence[str]) -> list[int]:
    if isinstance(names, str) or not isinstance(names, Sequence):
        raise InvalidRequest("partition_names must be a list of partition names")
    ids = []
    for name in names:
        p = meta.partition(name) if isinstance(name, str) else None
        if p is None:
            raise PartitionNotFound(f"partition {name!r} not found in {meta.name!r}")
        ids.append(p.id)
    return ids


def _tag_partition(meta: CollectionMeta, batch: RowBatch, partition_name: str | None) -> None:
    """Write the partition id into the batch's hidden column (absent means "_default")."""
    if partition_name is None:
        return
    (pid,) = _partition_ids(meta, [partition_name])
    if pid:
        batch.columns[PARTITION_FIELD] = [pid] * len(batch)


def _restrict_to_partitions(expr: Expr | None, ids: list[int]) -> Expr:
    """`expr and $partition in ids`: a row mask evaluated with the filter on every segment."""
    in_partitions = InList(FieldRef(PARTITION_FIELD, (), DataType.INT64, 0), tuple(ids), False)
    return in_partitions if expr is None else And((expr, in_partitions))


class _PartitionScoped:
    """Mixin for reads that need the collection loaded and may be limited to some partitions."""

    ops: EngineOps
    name: str
    meta: CollectionMeta | None
    expr: Expr | None

    def __init__(self, *args: Any, partition_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.partition_names = partition_names

    def pre_execute(self) -> None:
        super().pre_execute()  # type: ignore[misc]
        assert self.meta is not None
        self.ops.check_loaded(self.name)
        if self.partition_names:
            self.expr = _restrict_to_partitions(self.expr, _partition_ids(self.meta, self.partition_names))


class PartitionedSearchTask(_PartitionScoped, SearchTask):
    """A search that needs the collection loaded and may be limited to some partitions."""


class PartitionedQueryTask(_PartitionScoped, QueryTask):
    """A query that needs the collection loaded and may be limited to some partitions."""


class CreatePartitionTask(DdlTask):
    def __init__(self, ops: EngineOps, name: str, partition: str) -> None:
        super().__init__(ops, name)
        self.partition = partition

    def execute(self) -> None:
        self.ops.create_partition(self.name, self.partition, self.begin_ts)


class DropPartitionTask(CreatePartitionTask):
    def execute(self) -> None:
        self.ops.drop_partition(self.name, self.partition)


class HasPartitionTask(DqlTask):
    def __init__(self, ops: EngineOps, name: str, partition: str) -> None:
        super().__init__(ops, name)
        self.partition = partition

    def execute(self) -> bool:
        return self.collection().meta.partition(self.partition) is not None


class ListPartitionsTask(DqlTask):
    def execute(self) -> list[str]:
        return [p.name for p in self.collection().meta.partitions]


class CompactTask(ControlTask):
    def execute(self) -> Any:
        return self.ops.compact(self.name)


class LoadCollectionTask(ControlTask):
    def execute(self) -> None:
        self.ops.load(self.name)


class ReleaseCollectionTask(ControlTask):
    def execute(self) -> None:
        self.ops.release(self.name)


class GetLoadStateTask(DqlTask):
    def pre_execute(self) -> None:
        pass

    def execute(self) -> str:
        return str(self.ops.load_state(self.name))
