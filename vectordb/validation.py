"""Request validation shared by every backend: pure functions of a schema and the caller's arguments.

The embedded engine's proxy tasks call these in `pre_execute`; `MilvusBackendClient` calls them before
sending, so a bad request raises the same typed error whichever backend the caller uses.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vectordb.base import ColumnBatch
from vectordb.collection import resolve_output_fields
from vectordb.errors import InvalidRequest, RowError
from vectordb.expr import Expr
from vectordb.filters import compile_any
from vectordb.index import check_metric
from vectordb.schema import (
    CollectionSchema,
    DataType,
    FieldSchema,
    IndexParams,
    RowBatch,
    check_name,
    normalize_pk,
    validate_columns,
    validate_rows,
)

MAX_LIMIT = 16384
MAX_QUERY_VECTORS = 16384
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")


@dataclass(frozen=True, slots=True)
class SearchSpec:
    """A checked search: float32 queries of shape (n, dim), the compiled filter, fields to return."""

    queries: np.ndarray
    expr: Expr | None
    fields: list[str]


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """A checked query: the compiled filter and the fields to return (primary key first)."""

    expr: Expr | None
    fields: list[str]


@dataclass(frozen=True, slots=True)
class GetRequest:
    """A checked point lookup: normalized primary keys and the fields to return (primary key first)."""

    pks: list[Any]
    fields: list[str]


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """A checked delete: exactly one of `pks` (normalized) or `expr` (a non-empty filter) is set."""

    pks: list[Any] | None
    expr: Expr | None


def check_limit(name: str, value: Any, *, allow_zero: bool = False) -> int:
    """An integer in [1, MAX_LIMIT] (or [0, ...] with `allow_zero`)."""
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_LIMIT:
        raise InvalidRequest(f"{name} must be an integer in [{low}, {MAX_LIMIT}], got {value!r}")
    return value


def check_offset(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequest(f"offset must be a non-negative integer, got {value!r}")
    return value


def check_consistency(level: Any) -> None:
    if level not in CONSISTENCY_LEVELS:
        raise InvalidRequest(f"unknown consistency level {level!r}; use one of {list(CONSISTENCY_LEVELS)}")


def check_create_collection(name: Any, schema: Any, index: Any) -> None:
    """A valid collection name, a CollectionSchema and an IndexParams (each validated on construction)."""
    check_name("collection", name)
    if not isinstance(schema, CollectionSchema):
        raise InvalidRequest("schema must be a CollectionSchema")
    check_index(index)


def check_index(index: Any) -> None:
    if not isinstance(index, IndexParams):
        raise InvalidRequest("index must be an IndexParams")


def check_rows(schema: CollectionSchema, rows: Any, new_ids: Callable[[int], list[int]] | None = None) -> RowBatch:
    """Rows (a list of dicts or a `ColumnBatch`) for insert/upsert, as a columnar batch (RowError names
    the row and field). `new_ids`: the keys of an insert into an autoID collection (see `validate_rows`)."""
    if isinstance(rows, ColumnBatch):
        if new_ids is not None and schema.primary.auto_id:
            raise RowError("a column batch carries its own primary keys; it cannot insert into an autoID collection")
        return validate_columns(
            schema, rows.ids, rows.vectors, rows.columns, id_field=rows.id_field, vector_field=rows.vector_field
        )
    return validate_rows(schema, rows, new_ids)


def check_ids(schema: CollectionSchema, ids: Any) -> list[Any]:
    """A list (or array) of primary keys, each normalized to the primary key's type."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | np.ndarray):
        raise InvalidRequest("ids must be a list of primary keys")
    return [normalize_pk(schema, pk, where="ids") for pk in ids]


def check_anns_field(schema: CollectionSchema, anns_field: Any) -> FieldSchema:
    """The vector field a search ranks by: `anns_field`, or the first vector field when it is None."""
    if anns_field is None:
        return schema.vector
    field = schema.field(anns_field) if isinstance(anns_field, str) else None
    if field is None or field.dtype is not DataType.FLOAT_VECTOR:
        vectors = [f.name for f in schema.vectors]
        raise InvalidRequest(f"anns_field {anns_field!r} is not a vector field of the collection; use one of {vectors}")
    return field


def check_query_vectors(schema: CollectionSchema, vectors: Any, dim: int | None = None) -> np.ndarray:
    """Query vectors as float32 of shape (1..MAX_QUERY_VECTORS, dim) (`dim`: the first vector field's
    unless given); a single 1-D vector is one query."""
    try:
        q = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        raise InvalidRequest("vectors must be a list of float lists or a 2-D array") from None
    if q.ndim == 1:
        q = q[None, :]
    dim = schema.dim if dim is None else dim
    if q.ndim != 2 or q.shape[1] != dim or not 1 <= q.shape[0] <= MAX_QUERY_VECTORS:
        raise InvalidRequest(f"query vectors must have shape (1..{MAX_QUERY_VECTORS}, {dim}), got {q.shape}")
    if not np.isfinite(q).all():
        raise InvalidRequest("query vectors contain NaN or infinity")
    return q


def check_search_params(index: IndexParams, search_params: Any) -> dict[str, Any]:
    """`search_params` flattened (`{"ef": ..}`), its metric (if given) matching the index's."""
    if search_params is not None and not isinstance(search_params, Mapping):
        raise InvalidRequest("search_params must be a dict")
    return check_metric(index, search_params)


def check_search(
    schema: CollectionSchema,
    index: IndexParams,
    vectors: Any,
    *,
    limit: Any,
    filter: Any,
    output_fields: Any,
    consistency_level: Any,
    search_params: Any,
    anns_field: Any = None,
) -> SearchSpec:
    """Everything a search is checked for before it runs, in the order the engine checks it. `index`:
    the index of the vector field searched (`anns_field`; the first when None)."""
    check_limit("limit", limit)
    check_consistency(consistency_level)
    field = check_anns_field(schema, anns_field)
    queries = check_query_vectors(schema, vectors, field.dim)
    if search_params is not None and not isinstance(search_params, Mapping):
        raise InvalidRequest("search_params must be a dict")
    expr = compile_any(filter, schema)
    fields = resolve_output_fields(schema, output_fields, include_pk=False)
    check_search_params(index, search_params)
    return SearchSpec(queries, expr, fields)


def check_query(
    schema: CollectionSchema, *, filter: Any, output_fields: Any, limit: Any, offset: Any, consistency_level: Any
) -> QueryRequest:
    """Everything a query is checked for before it runs, in the order the engine checks it."""
    if limit is not None:
        check_limit("limit", limit)
    check_offset(offset)
    check_consistency(consistency_level)
    expr = compile_any(filter, schema)
    return QueryRequest(expr, resolve_output_fields(schema, output_fields, include_pk=True))


def check_get(schema: CollectionSchema, ids: Any, output_fields: Any) -> GetRequest:
    pks = check_ids(schema, ids)
    return GetRequest(pks, resolve_output_fields(schema, output_fields, include_pk=True))


def check_delete(schema: CollectionSchema, ids: Any, filter: Any) -> DeleteRequest:
    """Exactly one of `ids` or a non-empty `filter`."""
    if (ids is None) == (filter is None):
        raise InvalidRequest("delete needs exactly one of ids= or filter=")
    if ids is not None:
        return DeleteRequest(check_ids(schema, ids), None)
    expr = compile_any(filter, schema)
    if expr is None:
        raise InvalidRequest("an empty filter would delete everything; drop the collection instead")
    return DeleteRequest(None, expr)
