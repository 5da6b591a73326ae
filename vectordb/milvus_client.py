"""The docvec vector-store client interface over pymilvus, for a real Milvus deployment or Milvus Lite.

`vectordb.connect("milvus://host:19530")` talks to a Milvus server; `vectordb.connect("milvus:///abs/x.db")`
(or any pymilvus URI ending in `.db`) opens Milvus Lite. Callers get the same methods, return types
and exception classes as the embedded and HTTP clients, so the worker and the API cannot tell the
backends apart:

- every request is checked client-side by `vectordb.validation` against the collection's schema (cached
  per collection) before it is sent, so bad input raises exactly the engine's error types;
- docvec behaviour Milvus lacks is emulated here: insert rejects primary keys that already exist,
  upsert keeps the last of duplicate keys in a batch, delete returns how many rows it removed, an
  unbounded query pages through every match, get keeps the requested order, the index definition is
  stored as a collection property so describe_index returns exactly what was created;
- pymilvus errors are mapped by exception class and error code, never by message text.

pymilvus is synchronous: every call runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any

from common.errors import InvalidRequest, TransientError
from vectordb.base import Filter, Rows
from vectordb.errors import CollectionExists, CollectionNotFound, DuplicatePrimaryKey
from vectordb.filters import filter_text
from vectordb.results import Hit
from vectordb.schema import DYNAMIC_FIELD, CollectionSchema, DataType, FieldSchema, IndexParams, RowBatch
from vectordb.validation import (
    check_create_collection,
    check_delete,
    check_get,
    check_index,
    check_query,
    check_rows,
    check_search,
)

QUERY_PAGE_ROWS = 16_384  # Milvus caps offset + limit of one query at 16,384
DOCVEC_DEPLOY_MODE = "docvec"  # what docvec vectordb's gRPC front end answers as its deploy mode
INDEX_PROPERTY = "docvec.index"  # collection property holding the IndexParams docvec created it with
_RATE_LIMIT_CODE = 8  # pymilvus ErrorCode.RATE_LIMIT
_COLLECTION_NOT_FOUND_CODE = 100  # pymilvus ErrorCode.COLLECTION_NOT_FOUND
_LEGACY_COLLECTION_NOT_EXISTS = 4  # common_pb2.CollectionNotExists, servers before 2.3

_TO_MILVUS = {
    DataType.INT64: "INT64",
    DataType.VARCHAR: "VARCHAR",
    DataType.FLOAT_VECTOR: "FLOAT_VECTOR",
    DataType.FLOAT: "FLOAT",
    DataType.DOUBLE: "DOUBLE",
    DataType.BOOL: "BOOL",
    DataType.JSON: "JSON",
    DataType.ARRAY: "ARRAY",
}
_FROM_MILVUS = {v: k for k, v in _TO_MILVUS.items()}


def milvus_uri(uri: str) -> str:
    """`milvus://host:port` -> `http://host:port`; `milvus:///path/x.db` -> `/path/x.db` (Milvus Lite)."""
    rest = uri.split("://", 1)[1] if "://" in uri else uri
    if rest.startswith("/") or rest.endswith(".db"):
        return rest
    return f"http://{rest}"


class MilvusBackendClient:
    """Async docvec client over `pymilvus.MilvusClient` (see the module docstring for what it emulates)."""

    def __init__(self, uri: str, *, token: str = "", timeout_s: float = 30.0) -> None:
        from pymilvus import MilvusClient  # optional dependency: only Milvus users need it
        from pymilvus.exceptions import MilvusException

        try:
            self._client = MilvusClient(uri=milvus_uri(uri), token=token or "", timeout=timeout_s)
        except MilvusException as exc:
            raise _translate(exc) from exc
        self._schemas: dict[str, CollectionSchema] = {}
        self._indexes: dict[str, IndexParams] = {}
        self._replaces_indexes: bool | None = None  # the server is docvec vectordb (known after one ask)

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from pymilvus.exceptions import MilvusException

        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except MilvusException as exc:
            error = _translate(exc)
            if isinstance(error, CollectionNotFound) and args and isinstance(args[0], str):
                self._forget(args[0])  # dropped behind our back: the cached schema is stale
            raise error from exc

    def _forget(self, name: str) -> None:
        self._schemas.pop(name, None)
        self._indexes.pop(name, None)

    async def _schema(self, name: str) -> CollectionSchema:
        if name not in self._schemas:
            self._schemas[name] = await self.describe_collection(name)
        return self._schemas[name]

    async def _index(self, name: str) -> IndexParams:
        if name not in self._indexes:
            self._indexes[name] = await self.describe_index(name)
        return self._indexes[name]

    # ------------------------------------------------------------------ collections

    async def create_collection(
        self, name: str, schema: CollectionSchema, *, index: IndexParams | None = None, if_not_exists: bool = False
    ) -> None:
        index = index or IndexParams()
        check_create_collection(name, schema, index)
        if await self.has_collection(name):
            # Milvus Lite does not keep a collection's description: compare what defines the data.
            existing = await self.describe_collection(name)
            if if_not_exists and (existing.fields, existing.enable_dynamic_field) == (
                schema.fields, schema.enable_dynamic_field
            ):
                return
            detail = " with a different schema" if if_not_exists else ""
            raise CollectionExists(f"collection {name!r} already exists{detail}")
        await self._call(
            self._client.create_collection,
            name,
            schema=_milvus_schema(schema),
            index_params=self._index_params(schema, index),
            properties={INDEX_PROPERTY: json.dumps(index.to_dict())},
        )
        self._schemas[name] = schema
        self._indexes[name] = index

    def _index_params(self, schema: CollectionSchema, index: IndexParams) -> Any:
        params = self._client.prepare_index_params()
        params.add_index(
            field_name=schema.vector.name,
            index_type=index.resolved_type.value,
            metric_type=index.metric_type,
            params=dict(index.params),
        )
        return params

    async def has_collection(self, name: str) -> bool:
        return bool(await self._call(self._client.has_collection, name))

    async def drop_collection(self, name: str) -> None:
        """Drop `name`; dropping a collection that does not exist is not an error."""
        self._forget(name)
        if await self.has_collection(name):
            await self._call(self._client.drop_collection, name)

    async def list_collections(self) -> list[str]:
        return sorted(await self._call(self._client.list_collections))

    async def describe_collection(self, name: str) -> CollectionSchema:
        desc = await self._call(self._client.describe_collection, name)
        return CollectionSchema(
            tuple(_field_from_milvus(f) for f in desc["fields"]),
            enable_dynamic_field=bool(desc.get("enable_dynamic_field")),
            description=str(desc.get("description") or ""),
        )

    async def describe_index(self, name: str, *, field_name: str | None = None) -> IndexParams:
        """The IndexParams the collection was created with; Milvus's own description for other collections."""
        await self._first_vector_only(name, field_name)
        desc = await self._call(self._client.describe_collection, name)
        stored = (desc.get("properties") or {}).get(INDEX_PROPERTY)
        if stored:
            return IndexParams.from_dict(json.loads(stored))
        schema = await self._schema(name)
        names = await self._call(self._client.list_indexes, name, field_name=schema.vector.name)
        if not names:
            return IndexParams()
        info = await self._call(self._client.describe_index, name, names[0])
        params = {k: int(v) for k, v in info.items() if k in ("M", "efConstruction", "nlist")}
        return IndexParams(index_type=info["index_type"], metric_type=info["metric_type"], params=params)

    async def _server_replaces_indexes(self) -> bool:
        """Whether the server is docvec vectordb (its Connect answers deploy mode "docvec")."""
        if self._replaces_indexes is None:
            info = await self._call(self._client.get_server_version, detail=True)
            self._replaces_indexes = isinstance(info, dict) and info.get("deploy_mode") == DOCVEC_DEPLOY_MODE
        return self._replaces_indexes

    async def _first_vector_only(self, name: str, field_name: str | None) -> None:
        if field_name is not None and field_name != (await self._schema(name)).vector.name:
            raise InvalidRequest("the milvus:// backend indexes and searches the first vector field only; "
                                 f"{field_name!r} is another")

    async def create_index(self, name: str, index: IndexParams, *, field_name: str | None = None) -> None:
        """Replace the vector index (Milvus: release, drop, create, load) and the stored definition."""
        check_index(index)
        await self._first_vector_only(name, field_name)
        schema = await self._schema(name)
        vector = schema.vector.name
        if await self._server_replaces_indexes():
            # docvec vectordb replaces an index in place on create (it cannot drop one, and keeps no
            # collection properties): no release, no window without search, and its DescribeIndex
            # reports the definition itself.
            await self._call(self._client.create_index, name, self._index_params(schema, index))
            self._indexes[name] = index
            return
        await self._call(self._client.release_collection, name)
        for existing in await self._call(self._client.list_indexes, name, field_name=vector):
            await self._call(self._client.drop_index, name, existing)
        await self._call(self._client.create_index, name, self._index_params(schema, index))
        await self._call(
            self._client.alter_collection_properties, name, properties={INDEX_PROPERTY: json.dumps(index.to_dict())}
        )
        self._indexes[name] = index
        await self._call(self._client.load_collection, name)

    # ------------------------------------------------------------------ writes

    async def insert(
        self, name: str, rows: Rows, *, partition_name: str | None = None
    ) -> list[Any]:
        """Insert rows whose primary keys must all be new (checked here: Milvus itself would keep both)."""
        schema = await self._schema(name)
        batch = check_rows(schema, rows)
        if len(set(batch.pks)) != len(batch.pks):
            raise DuplicatePrimaryKey("a primary key appears twice in one insert")
        taken = [r[schema.primary.name] for r in await self._get_rows(name, batch.pks, [schema.primary.name])]
        if taken:
            raise DuplicatePrimaryKey(
                f"primary key(s) {taken[:5]!r} already exist in {name!r}; use upsert to replace rows"
            )
        await self._call(self._client.insert, name, _milvus_rows(schema, batch), **_partition(partition_name))
        return list(batch.pks)

    async def upsert(
        self, name: str, rows: Rows, *, partition_name: str | None = None
    ) -> list[Any]:
        """Insert rows, replacing live rows with the same primary key (the last one in the batch wins)."""
        schema = await self._schema(name)
        batch = check_rows(schema, rows)
        last = list({pk: i for i, pk in enumerate(batch.pks)}.values())
        unique = batch if len(last) == len(batch) else batch.select(sorted(last))
        await self._call(self._client.upsert, name, _milvus_rows(schema, unique), **_partition(partition_name))
        return list(batch.pks)

    async def delete(self, name: str, *, ids: Sequence[Any] | None = None, filter: Filter | None = None) -> int:
        """Delete by primary keys or by filter; returns the number of live rows removed."""
        schema = await self._schema(name)
        request = check_delete(schema, ids, filter)
        pk = schema.primary.name
        if request.pks is not None:
            live = [r[pk] for r in await self._get_rows(name, list(dict.fromkeys(request.pks)), [pk])]
            for chunk in _chunks(live):
                await self._call(self._client.delete, name, ids=chunk)
            return len(live)
        text = filter_text(filter)
        assert text is not None
        matching = await self._count_matching(name, text)
        if matching:
            await self._call(self._client.delete, name, filter=text)
        return matching

    async def flush(self, name: str) -> None:
        await self._schema(name)
        await self._call(self._client.flush, name)

    async def compact(self, name: str) -> None:
        await self._schema(name)
        await self._call(self._client.compact, name)

    # ------------------------------------------------------------------ reads

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
        await self._first_vector_only(name, anns_field)
        schema, index = await self._schema(name), await self._index(name)
        request = check_search(
            schema,
            index,
            vectors,
            limit=limit,
            filter=filter,
            output_fields=output_fields,
            consistency_level=consistency_level,
            search_params=search_params,
        )
        flat = _flat_search_params(search_params)
        result = await self._call(
            self._client.search,
            name,
            data=request.queries.tolist(),
            limit=limit,
            filter=filter_text(filter) or "",
            output_fields=_milvus_fields(schema, request.fields),
            search_params={"metric_type": index.metric_type, "params": flat},
            consistency_level=consistency_level,
            **_partitions(partition_names),
        )
        return [
            [Hit(h["id"], float(h["distance"]), _shape(schema, request.fields, h.get("entity", {}))) for h in hits]
            for hits in result
        ]

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
        """Rows matching `filter` in primary-key order; with no `limit`, every match (paged through)."""
        schema = await self._schema(name)
        request = check_query(
            schema,
            filter=filter,
            output_fields=output_fields,
            limit=limit,
            offset=offset,
            consistency_level=consistency_level,
        )
        rows = await self._scan(
            name,
            schema,
            filter_text(filter) or "",
            request.fields,
            limit=limit,
            offset=offset,
            consistency_level=consistency_level,
            partition_names=partition_names,
        )
        return [_shape(schema, request.fields, r) for r in rows]

    async def get(
        self, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Live rows for `ids`, in the order asked for; missing keys are skipped."""
        schema = await self._schema(name)
        request = check_get(schema, ids, output_fields)
        rows = await self._get_rows(name, request.pks, request.fields)
        return [_shape(schema, request.fields, r) for r in rows]

    async def count(self, name: str) -> int:
        await self._schema(name)
        return await self._count_matching(name, "")

    async def _get_rows(self, name: str, pks: list[Any], fields: list[str]) -> list[dict[str, Any]]:
        schema = await self._schema(name)
        pk = schema.primary.name
        found: dict[Any, dict[str, Any]] = {}
        for chunk in _chunks(list(dict.fromkeys(pks))):
            got = await self._call(self._client.get, name, ids=chunk, output_fields=_milvus_fields(schema, fields))
            found.update((r[pk], dict(r)) for r in got)
        return [found[p] for p in pks if p in found]

    async def _scan(
        self,
        name: str,
        schema: CollectionSchema,
        filter: str,
        fields: list[str],
        *,
        limit: int | None,
        offset: int,
        consistency_level: str,
        partition_names: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows matching `filter`. A page within Milvus's cap (offset + limit <= 16,384) is one query, in
        Milvus's order; anything else (docvec has no cap) walks a query iterator, in primary-key order."""
        expr = filter if filter and filter.strip() else _always(schema)
        output = _milvus_fields(schema, fields)
        if limit is not None and offset + limit <= QUERY_PAGE_ROWS:
            got = await self._call(
                self._client.query,
                name,
                filter=expr,
                output_fields=output,
                limit=limit,
                offset=offset,
                consistency_level=consistency_level,
                **_partitions(partition_names),
            )
            return [dict(r) for r in got]
        return list(
            await self._call(
                self._iterate, name, expr, output, limit, offset, consistency_level, _partitions(partition_names)
            )
        )

    def _iterate(
        self,
        name: str,
        expr: str,
        output: list[str],
        limit: int | None,
        offset: int,
        consistency_level: str,
        partitions: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Blocking: every row of a query iterator from `offset`, up to `limit` rows."""
        iterator = self._client.query_iterator(
            name,
            batch_size=QUERY_PAGE_ROWS,
            filter=expr,
            output_fields=output,
            consistency_level=consistency_level,
            **partitions,
        )
        rows: list[dict[str, Any]] = []
        skip = offset
        try:
            while limit is None or len(rows) < limit:
                batch = iterator.next()
                if not batch:
                    break
                used = min(skip, len(batch))
                skip -= used
                rows.extend(dict(r) for r in batch[used:])
        finally:
            iterator.close()
        return rows if limit is None else rows[:limit]

    async def _count_matching(self, name: str, filter: str) -> int:
        got = await self._call(
            self._client.query, name, filter=filter, output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(got[0]["count(*)"])

    # ------------------------------------------------------------------ load state and partitions

    async def load_collection(self, name: str) -> None:
        await self._call(self._client.load_collection, name)

    async def release_collection(self, name: str) -> None:
        await self._call(self._client.release_collection, name)

    async def get_load_state(self, name: str) -> str:
        """docvec's names for Milvus's load states ("LoadStateLoaded", ...)."""
        got = await self._call(self._client.get_load_state, name)
        return f"LoadState{got['state'].name}"

    async def create_partition(self, name: str, partition: str) -> None:
        await self._call(self._client.create_partition, name, partition)

    async def drop_partition(self, name: str, partition: str) -> None:
        await self._call(self._client.drop_partition, name, partition)

    async def has_partition(self, name: str, partition: str) -> bool:
        return bool(await self._call(self._client.has_partition, name, partition))

    async def list_partitions(self, name: str) -> list[str]:
        return list(await self._call(self._client.list_partitions, name))

    async def close(self) -> None:
        await asyncio.to_thread(self._client.close)

    async def __aenter__(self) -> MilvusBackendClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# ---------------------------------------------------------------------------------- conversions


def _milvus_schema(schema: CollectionSchema) -> Any:
    from pymilvus import DataType as MilvusDataType
    from pymilvus import MilvusClient

    out = MilvusClient.create_schema(
        auto_id=schema.primary.auto_id, enable_dynamic_field=schema.enable_dynamic_field,
        description=schema.description,
    )
    for f in schema.fields:
        if f.optional:
            raise InvalidRequest(f"field {f.name!r}: the milvus:// backend does not support nullable fields or "
                                 "default values yet")
        kwargs: dict[str, Any] = {"is_primary": f.is_primary}
        if f.auto_id:
            kwargs["auto_id"] = True
        if f.element_type is not None:
            kwargs["element_type"] = getattr(MilvusDataType, _TO_MILVUS[f.element_type])
            kwargs["max_capacity"] = f.max_capacity
        if f.dim is not None:
            kwargs["dim"] = f.dim
        if f.max_length is not None:
            kwargs["max_length"] = f.max_length
        out.add_field(f.name, getattr(MilvusDataType, _TO_MILVUS[f.dtype]), **kwargs)
    return out


def _field_from_milvus(f: Mapping[str, Any]) -> FieldSchema:
    params = f.get("params") or {}
    dtype = _FROM_MILVUS.get(str(getattr(f["type"], "name", f["type"])))
    if dtype is None:
        raise InvalidRequest(f"field {f['name']!r} has Milvus type {f['type']}, which docvec does not support")
    return FieldSchema(
        f["name"],
        dtype,
        is_primary=bool(f.get("is_primary")),
        dim=int(params["dim"]) if "dim" in params else None,
        max_length=int(params["max_length"]) if "max_length" in params else None,
        auto_id=bool(f.get("auto_id")),
        element_type=_FROM_MILVUS.get(str(getattr(f.get("element_type"), "name", f.get("element_type")))),
        max_capacity=int(params["max_capacity"]) if "max_capacity" in params else None,
    )


def _milvus_rows(schema: CollectionSchema, batch: RowBatch) -> list[dict[str, Any]]:
    """Validated (normalized) rows back in Milvus's row form; dynamic keys flattened in."""
    pk, vec = schema.primary.name, schema.vector.name
    rows = []
    for i, key in enumerate(batch.pks):
        row: dict[str, Any] = dict(batch.dynamic[i]) if batch.dynamic is not None else {}
        row.update({name: values[i] for name, values in batch.columns.items()})
        row[pk], row[vec] = key, batch.vectors[i].tolist()
        rows.append(row)
    return rows


def _milvus_fields(schema: CollectionSchema, fields: list[str]) -> list[str]:
    """Output fields for Milvus: never empty (Milvus reads [] as "all fields")."""
    return fields or [schema.primary.name]


def _shape(schema: CollectionSchema, fields: list[str], got: Mapping[str, Any]) -> dict[str, Any]:
    """A Milvus row or entity in docvec's form: exactly `fields`, dynamic keys flattened (as segment.row)."""
    out: dict[str, Any] = {}
    for name in fields:
        if name == DYNAMIC_FIELD:
            out.update({k: v for k, v in got.items() if schema.field(k) is None and k != DYNAMIC_FIELD})
        elif name == schema.vector.name and name in got:
            out[name] = [float(x) for x in got[name]]
        elif name in got:
            out[name] = got[name]
    return out


def _always(schema: CollectionSchema) -> str:
    """A filter every row matches (Milvus wants a filter or a limit on every query)."""
    pk = schema.primary.name
    return f'{pk} != ""' if schema.primary.dtype is DataType.VARCHAR else f"{pk} >= {-(2**63)}"


def _flat_search_params(search_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """`{"metric_type": .., "params": {"ef": ..}, ..}` as one flat dict of index search parameters."""
    sp = dict(search_params or {})
    nested = sp.pop("params", None) or {}
    sp.pop("metric_type", None)
    sp.update(nested)
    return sp


def _chunks(items: list[Any]) -> list[list[Any]]:
    """Lists of at most QUERY_PAGE_ROWS items (one Milvus get or delete each)."""
    return [items[i : i + QUERY_PAGE_ROWS] for i in range(0, len(items), QUERY_PAGE_ROWS)]


def _partition(partition_name: str | None) -> dict[str, Any]:
    return {} if partition_name is None else {"partition_name": partition_name}


def _partitions(partition_names: Sequence[str] | None) -> dict[str, Any]:
    return {} if not partition_names else {"partition_names": list(partition_names)}


def _translate(exc: Any) -> Exception:
    """Map a pymilvus error to docvec's error classes, by exception class and error code."""
    from pymilvus.exceptions import CollectionNotExistException, ConnectError, MilvusUnavailableException

    code = int(getattr(exc, "code", 0) or 0)
    message = str(getattr(exc, "message", "") or exc)
    legacy_code = getattr(exc, "compatible_code", None)
    if (
        isinstance(exc, CollectionNotExistException)
        or code == _COLLECTION_NOT_FOUND_CODE
        or (legacy_code == _LEGACY_COLLECTION_NOT_EXISTS)
    ):
        return CollectionNotFound(message)
    if isinstance(exc, ConnectError | MilvusUnavailableException) or getattr(exc, "retriable", False):
        return TransientError(f"milvus unavailable: {message}")
    if code == _RATE_LIMIT_CODE:
        return TransientError(f"milvus rate limit: {message}")
    return InvalidRequest(f"milvus: {message}")
