"""The REST handlers of `docvec vectordb`: a subset of the Milvus RESTful API v2 over `AsyncEngine`.

Every call is `POST /v2/vectordb/<category>/<action>` with a JSON object body. Success is HTTP 200
with `{"code": 0, "data": ...}`; an error is `{"code": <non-zero>, "message": "..."}` with HTTP 200
(Milvus's convention), except 401 (missing/wrong token), 413 (body over `max_body_bytes`), 404
(unknown endpoint) and 405 (not POST). The numeric codes and the docvec exception each maps to are
tabled in `vectordb.restproto`: 100 collection not found, 105 bad schema, 1100 invalid parameter,
name, data type or filter, or an unsupported feature, 1800 not authenticated, 1804 bad row, 1806
duplicate primary key, 1851 collection exists, 1852 request timed out, 2 engine closing, 65535
unexpected (and a search limit or offset out of range, as Milvus answers it).

Endpoints (`dbName` may be given and must be "default"):

    collections/  create describe list has drop load release get_load_state get_stats flush compact
    entities/     insert upsert delete query get search
    partitions/   create drop has list load release get_stats
    indexes/      create describe list drop

docvec extensions to Milvus's request/response bodies (a Milvus client never needs them):
- collections/create `ifNotExists: false`: an error even when an identical collection exists (by
  default, as in Milvus, creating it again with the same schema succeeds);
- collections/compact: merge small sealed segments and purge deleted rows now;
- entities/delete `ids: [...]` as an alternative to `filter`; its data is `{"deleteCount": n}`;
- entities/search `defaultOutputFields: true` returns what the embedded client returns for
  `output_fields=None` (primary key, every scalar field, dynamic keys); without it and without
  `outputFields` the hits carry only the primary key and `distance`, as in Milvus (query and get
  without `outputFields` return every non-vector field, as Milvus does);
- entities/query `orderByPrimaryKey: true` sorts every match by primary key before `offset` and `limit`
  apply (the order a query iterator's primary-key cursor needs; the gRPC front end asks for it when
  pymilvus's query iterator sets `iterator`); it reads every match for each page;
- entities/search replies carry `topks` (hits per query vector, so a flat `data` list splits back
  per query, as Milvus does for several query vectors) and `primaryField` (the key holding the id).

Limits of this subset: partitions/load loads the whole collection and partitions/release does nothing
(load state is per collection); one index per vector field, whose name is not stored (describe
reports it under the field's name); the first vector field has the FAISS index, the others are
searched exactly (by their index's metric); an index cannot be dropped, only replaced by
indexes/create; the collection-level consistencyLevel and shardsNum are validated but not stored;
JSON bodies may carry NaN (Python's json), which the engine then rejects or stores as the embedded
client would.

Handlers call the async engine facade (`vectordb.facade.AsyncEngine`), as the embedded client does, so
the event loop never blocks. The HTTP app, auth and limits are `vectordb.server`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import DocvecError, InvalidRequest
from vectordb.catalog import CollectionMeta
from vectordb.engine import Engine
from vectordb.errors import RowError
from vectordb.facade import AsyncEngine
from vectordb.restproto import (
    DEFAULT_DB,
    LOAD_STATE_LOADED,
    LOAD_STATE_NOT_EXIST,
    SEARCH_RANGE_PREFIX,
    DatabaseNotFound,
    IncorrectParameterFormat,
    MissingParameter,
    PartitionNotFound,
    SearchRangeError,
    describe_to_rest,
    field_from_custom,
    index_from_rest,
    index_to_rest,
    int_param,
    parse_type,
    request_object,
    search_params_from_rest,
)
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams
from vectordb.validation import CONSISTENCY_LEVELS, MAX_LIMIT

DEFAULT_SEARCH_LIMIT = 100  # Milvus's default when a search names no limit
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Reply:
    """A handler's result: `data`, plus any extra top-level envelope keys (search's `topks`)."""

    data: Any
    extra: Mapping[str, Any] = field(default_factory=dict)


class Body:
    """Typed access to a request's JSON object; wrong or missing parameters raise Milvus-coded errors."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = request_object(raw, "request body")

    def get(self, key: str, default: Any = None) -> Any:
        value = self.raw.get(key, default)
        return default if value is None else value

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def required(self, key: str) -> Any:
        value = self.raw.get(key, _MISSING)
        if value is _MISSING or value is None:
            raise MissingParameter(f"missing required parameter {key!r}")
        return value

    def string(self, key: str) -> str:
        value = self.required(key)
        if not isinstance(value, str):
            raise IncorrectParameterFormat(f"parameter {key!r} must be a string, got {type(value).__name__}")
        return value

    def mapping(self, key: str) -> Mapping[str, Any]:
        return request_object(self.get(key, {}), f"parameter {key!r}")

    def flag(self, key: str, default: bool) -> bool:
        return as_bool(key, self.raw.get(key), default)

    def database(self) -> None:
        db = self.get("dbName", DEFAULT_DB)
        if db != DEFAULT_DB:
            raise DatabaseNotFound(f"database {db!r} not found; this server has only the {DEFAULT_DB!r} database")

    def collection(self) -> str:
        """`collectionName`, after checking `dbName`."""
        self.database()
        return self.string("collectionName")

    def partitions(self) -> list[str]:
        """`partitionNames` plus `partitionName`, if given (the engine checks that they exist)."""
        names = self.get("partitionNames", [])
        if not isinstance(names, list):
            raise IncorrectParameterFormat("partitionNames must be a list of names")
        if self.has("partitionName"):
            names = [*names, self.raw["partitionName"]]
        return names


_BOOL_STRINGS = {
    **dict.fromkeys(("1", "t", "T", "true", "TRUE", "True"), True),
    **dict.fromkeys(("0", "f", "F", "false", "FALSE", "False"), False),
}


class IndexMissing(DocvecError):
    """A collection loaded while a vector field has no index (code 65535, as Milvus answers it)."""

    code = "index_missing"


def as_bool(key: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _BOOL_STRINGS:  # Go's strconv.ParseBool, as Milvus parses them
        return _BOOL_STRINGS[value]
    raise IncorrectParameterFormat(f"parameter {key!r} must be a boolean, got {value!r}")


def _check_consistency(value: Any) -> None:
    if value is not None and value not in CONSISTENCY_LEVELS:
        raise InvalidRequest(f"unknown consistency level {value!r}; use one of {list(CONSISTENCY_LEVELS)}")


Handler = Callable[[Body], Awaitable[Reply]]


class ServedEngine(AsyncEngine):
    """The async engine as the REST handlers use it: also the whole collection meta (its id, for
    collections/describe), which no client needs."""

    async def describe(self, name: str) -> CollectionMeta:
        return await self._meta(name)


class RestApi:
    """The endpoint handlers over one engine; `handler(category, action)` looks one up."""

    def __init__(self, engine: Engine) -> None:
        self._store = ServedEngine(engine)
        self._routes: dict[tuple[str, str], Handler] = {
            ("collections", "create"): self.create_collection,
            ("collections", "describe"): self.describe_collection,
            ("collections", "list"): self.list_collections,
            ("collections", "has"): self.has_collection,
            ("collections", "drop"): self.drop_collection,
            ("collections", "load"): self.load_collection,
            ("collections", "release"): self.release_collection,
            ("collections", "get_load_state"): self.get_load_state,
            ("collections", "get_stats"): self.get_stats,
            ("collections", "flush"): self.flush,
            ("collections", "compact"): self.compact,
            ("entities", "insert"): self.insert,
            ("entities", "upsert"): self.upsert,
            ("entities", "delete"): self.delete,
            ("entities", "query"): self.query,
            ("entities", "get"): self.get,
            ("entities", "search"): self.search,
            ("partitions", "create"): self.create_partition,
            ("partitions", "drop"): self.drop_partition,
            ("partitions", "has"): self.has_partition,
            ("partitions", "list"): self.list_partitions,
            ("partitions", "load"): self.load_partition_collection,
            ("partitions", "release"): self.load_partitions,
            ("partitions", "get_stats"): self.get_stats,
            ("indexes", "create"): self.create_index,
            ("indexes", "describe"): self.describe_index,
            ("indexes", "list"): self.list_indexes,
            ("indexes", "drop"): self.drop_index,
        }

    def handler(self, category: str, action: str) -> Handler | None:
        return self._routes.get((category, action))

    async def _meta(self, name: str) -> CollectionMeta:
        return await self._store.describe(name)

    # ---------------------------------------------------------------------------------- collections

    async def create_collection(self, body: Body) -> Reply:
        name = body.collection()
        if body.has("schema"):
            schema = self._custom_schema(body)
        else:
            schema = self._quick_schema(body)
        params = body.mapping("params")
        _check_consistency(params.get("consistencyLevel"))
        declared = self._indexes_for(body, schema)
        unindexed = [f.name for f in schema.vectors if f.name not in declared]
        index = declared.pop(schema.vector.name, None) or IndexParams(metric_type=body.get("metricType", "COSINE"))
        # As Milvus: creating a collection that exists with the same schema succeeds (concurrent clients
        # may all create it); with another schema it is CollectionExists.
        existed = await self._store.has_collection(name)
        await self._store.create_collection(name, schema, index=index, if_not_exists=body.flag("ifNotExists", True))
        if existed:
            return Reply({})
        for field_name, extra in declared.items():
            await self._store.create_index(name, extra, field_name=field_name)
        if body.has("schema") and unindexed:
            # A custom schema with a vector field left out of indexParams: Milvus leaves the collection
            # unloaded until every vector field has an index and it is loaded (docvec indexes the first
            # vector field by default; the collection is released here). With some indexes given, Milvus
            # tries to load it and answers that failure (the collection stays, unloaded).
            await self._store.release_collection(name)
            if len(unindexed) < len(schema.vectors):  # some vector field was indexed
                raise IndexMissing(f"collection {name!r} was created but not loaded: there is no vector index "
                                   f"on field: {unindexed}, please create index firstly")
        return Reply({})

    def _quick_schema(self, body: Body) -> CollectionSchema:
        auto_id = body.flag("autoID", False)
        dim = int_param("dimension", body.required("dimension"))
        params = body.mapping("params")
        pk_type = parse_type(body.get("primaryFieldName", "id"), body.get("idType", "Int64"))
        max_length = None
        if pk_type is DataType.VARCHAR:
            max_length = int_param("params.max_length", params.get("max_length"))
            if max_length is None:
                raise MissingParameter("params.max_length is required when idType is VarChar")
        return CollectionSchema(
            (
                FieldSchema(body.get("primaryFieldName", "id"), pk_type, is_primary=True, max_length=max_length,
                            auto_id=auto_id),
                FieldSchema(body.get("vectorFieldName", "vector"), DataType.FLOAT_VECTOR, dim=dim),
            ),
            enable_dynamic_field=as_bool("enableDynamicField", params.get("enableDynamicField"), True),
            description=str(body.get("description", "")),
        )

    def _custom_schema(self, body: Body) -> CollectionSchema:
        spec = body.mapping("schema")
        auto_id = as_bool("schema.autoID", spec.get("autoID"), False)
        fields = spec.get("fields")
        if not isinstance(fields, list) or not fields:
            raise MissingParameter("schema.fields must be a non-empty list")
        return CollectionSchema(
            tuple(field_from_custom(f, auto_id=auto_id) for f in fields),
            enable_dynamic_field=as_bool("enableDynamicField", spec.get("enableDynamicField"), False),
            description=str(body.get("description", "")),
        )

    @staticmethod
    def _indexes_for(body: Body, schema: CollectionSchema) -> dict[str, IndexParams]:
        """`indexParams`: the index of each vector field it names."""
        entries = body.get("indexParams", [])
        if not isinstance(entries, list):
            raise IncorrectParameterFormat("indexParams must be a list")
        vectors = {f.name for f in schema.vectors}
        found: dict[str, IndexParams] = {}
        for entry in entries:
            field_name = request_object(entry, "each indexParams entry").get("fieldName")
            if not isinstance(field_name, str):
                raise MissingParameter("indexParams[].fieldName is required")
            if field_name not in vectors:
                raise InvalidRequest(
                    f"cannot index field {field_name!r}: only vector fields ({sorted(vectors)}) can be indexed"
                )
            if field_name in found:
                raise InvalidRequest(f"the vector field {field_name!r} can have only one index")
            found[field_name] = index_from_rest(entry)
        return found

    async def describe_collection(self, body: Body) -> Reply:
        meta = await self._meta(body.collection())
        described = describe_to_rest(meta.name, meta.id, meta.schema, meta.index, meta.vector_indexes)
        described["load"] = await self._store.get_load_state(meta.name)
        return Reply(described)

    async def list_collections(self, body: Body) -> Reply:
        body.database()
        return Reply(await self._store.list_collections())

    async def has_collection(self, body: Body) -> Reply:
        return Reply({"has": await self._store.has_collection(body.collection())})

    async def drop_collection(self, body: Body) -> Reply:
        await self._store.drop_collection(body.collection())
        return Reply({})

    async def load_collection(self, body: Body) -> Reply:
        meta = await self._meta(body.collection())
        missing = [f.name for f in meta.schema.extra_vectors if f.name not in dict(meta.vector_indexes)]
        if missing:  # as Milvus: every vector field needs an index before the collection loads
            raise IndexMissing(f"there is no vector index on field: {missing}, please create index firstly")
        await self._store.load_collection(meta.name)
        return Reply({})

    async def release_collection(self, body: Body) -> Reply:
        await self._store.release_collection(body.collection())
        return Reply({})

    async def get_load_state(self, body: Body) -> Reply:
        name = body.collection()
        state = await self._store.get_load_state(name)  # a missing collection's state is "NotExist"
        if state != LOAD_STATE_NOT_EXIST:
            await self._check_partitions(name, body.partitions())
        return Reply({"loadState": state, "loadProgress": 100 if state == LOAD_STATE_LOADED else 0})

    async def get_stats(self, body: Body) -> Reply:
        name = body.collection()
        partitions = body.partitions()
        if partitions:
            rows = await self._store.query(name, output_fields=[], partition_names=partitions)
            return Reply({"rowCount": len(rows)})
        return Reply({"rowCount": await self._store.count(name)})

    async def _check_partitions(self, name: str, partitions: list[str]) -> None:
        if partitions:
            known = set(await self._store.list_partitions(name))
            missing = [p for p in partitions if p not in known]
            if missing:
                raise PartitionNotFound(f"partition {missing[0]!r} not found in {name!r}")

    async def flush(self, body: Body) -> Reply:
        await self._store.flush(body.collection())
        return Reply({})

    async def compact(self, body: Body) -> Reply:
        """docvec extension: merge small sealed segments and purge deleted rows now."""
        await self._store.compact(body.collection())
        return Reply({})

    # ------------------------------------------------------------------------------------- entities

    async def insert(self, body: Body) -> Reply:
        ids = await self._write(body, upsert=False)
        return Reply({"insertCount": len(ids), "insertIds": ids})

    async def upsert(self, body: Body) -> Reply:
        ids = await self._write(body, upsert=True)
        return Reply({"upsertCount": len(ids), "upsertIds": ids})

    async def _write(self, body: Body, *, upsert: bool) -> list[Any]:
        name = body.collection()
        partitions = body.partitions()
        if len(partitions) > 1:
            raise InvalidRequest("insert/upsert take one partitionName")
        rows = body.required("data")
        if isinstance(rows, Mapping):
            rows = [rows]  # Milvus accepts one entity object as well as a list
        write = self._store.upsert if upsert else self._store.insert
        try:
            return await write(name, rows, partition_name=partitions[0] if partitions else None)
        except RowError as exc:  # in Milvus's words first, then which row and field
            raise RowError(f"fail to deal the insert data: {exc.message}") from exc

    async def delete(self, body: Body) -> Reply:
        name = body.collection()
        await self._check_partitions(name, body.partitions())  # primary keys are unique across partitions
        n = await self._store.delete(name, ids=body.raw.get("ids"), filter=body.raw.get("filter"))
        return Reply({"deleteCount": n})

    @staticmethod
    def _output_fields(body: Body, *, default_all: bool = False) -> list[str] | None:
        """`outputFields`; without it, every non-vector field (None: query and get, as Milvus answers
        them) or the primary key alone (search), unless `defaultOutputFields` asks for every one."""
        if body.flag("defaultOutputFields", False) or (default_all and not body.has("outputFields")):
            return None
        fields = body.get("outputFields", [])
        return fields  # type: ignore[no-any-return]  # the engine validates it

    async def query(self, body: Body) -> Reply:
        name = body.collection()
        partitions = body.partitions()
        ordered = body.flag("orderByPrimaryKey", False)
        limit, offset = body.raw.get("limit"), body.get("offset", 0)
        rows = await self._store.query(
            name,
            filter=body.get("filter", ""),
            output_fields=self._output_fields(body, default_all=True),
            limit=None if ordered else limit,
            offset=0 if ordered else offset,
            consistency_level=body.get("consistencyLevel", "Strong"),
            partition_names=partitions or None,
        )
        if ordered:  # every match, in key order, then the page: what a query iterator's cursor needs
            pk = (await self._meta(name)).schema.primary.name
            rows = (await asyncio.to_thread(sorted, rows, key=lambda row: row[pk]))[
                int(offset): None if limit is None else int(offset) + int(limit)]
        return Reply(rows)

    async def get(self, body: Body) -> Reply:
        name = body.collection()
        await self._check_partitions(name, body.partitions())
        ids = body.required("id")
        if isinstance(ids, int | str):
            ids = [ids]  # Milvus's `id` is one key or a list
        return Reply(await self._store.get(name, ids, self._output_fields(body, default_all=True)))

    async def search(self, body: Body) -> Reply:
        name = body.collection()
        partitions = body.partitions()
        schema = (await self._meta(name)).schema
        anns = body.get("annsField")
        limit = body.get("limit", DEFAULT_SEARCH_LIMIT)
        offset = body.get("offset", 0)
        limit = self._paged_limit(limit, offset)
        per_query = await self._store.search(
            name,
            body.required("data"),
            limit=limit,
            filter=body.raw.get("filter") or None,
            output_fields=self._output_fields(body),
            consistency_level=body.get("consistencyLevel", "Strong"),
            search_params=search_params_from_rest(body.raw.get("searchParams")),
            partition_names=partitions or None,
            anns_field=anns,
        )
        pk = schema.primary.name
        rows: list[dict[str, Any]] = []
        topks: list[int] = []
        for hits in per_query:
            page = hits[offset:]
            topks.append(len(page))
            rows.extend({**hit.entity, pk: hit.id, "distance": hit.distance} for hit in page)
        return Reply(rows, {"topks": topks, "primaryField": pk})

    @staticmethod
    def _paged_limit(limit: Any, offset: Any) -> int:
        """The hits to fetch for `offset` + `limit`; out of Milvus's range (limit 1..16384, offset >= 0,
        both within 16384) a `SearchRangeError`, code 65535 as Milvus answers it."""
        for key, value, least in (("limit", limit, 1), ("offset", offset, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= MAX_LIMIT:
                raise SearchRangeError(
                    f"{SEARCH_RANGE_PREFIX}{key} must be an integer in [{least}, {MAX_LIMIT}], got {value!r}")
        if limit + offset > MAX_LIMIT:
            raise SearchRangeError(f"{SEARCH_RANGE_PREFIX}limit + offset must be at most {MAX_LIMIT}, "
                                   f"got {limit + offset}")
        return int(limit + offset)

    # ----------------------------------------------------------------------------------- partitions

    async def list_partitions(self, body: Body) -> Reply:
        return Reply(await self._store.list_partitions(body.collection()))

    async def has_partition(self, body: Body) -> Reply:
        name = body.collection()
        return Reply({"has": await self._store.has_partition(name, body.string("partitionName"))})

    async def create_partition(self, body: Body) -> Reply:
        name = body.collection()
        await self._store.create_partition(name, body.string("partitionName"))
        return Reply({})

    async def drop_partition(self, body: Body) -> Reply:
        name = body.collection()
        await self._store.drop_partition(name, body.string("partitionName"))
        return Reply({})

    async def load_partitions(self, body: Body) -> Reply:
        """Load state is per collection: partitions/load loads the collection, partitions/release is a no-op."""
        name = body.collection()
        await self._check_partitions(name, body.partitions())
        return Reply({})

    async def load_partition_collection(self, body: Body) -> Reply:
        name = body.collection()
        await self._check_partitions(name, body.partitions())
        await self._store.load_collection(name)
        return Reply({})

    # -------------------------------------------------------------------------------------- indexes

    async def create_index(self, body: Body) -> Reply:
        name = body.collection()
        schema = (await self._meta(name)).schema
        indexes = self._indexes_for(body, schema)
        if not indexes:
            raise MissingParameter("indexParams must name a vector field's index")
        for field_name, index in indexes.items():
            await self._store.create_index(name, index, field_name=field_name)
        return Reply({})

    async def describe_index(self, body: Body) -> Reply:
        meta = await self._meta(body.collection())
        entries = [index_to_rest(meta.schema, meta.index)]
        entries += [index_to_rest(meta.schema, index, field) for field, index in meta.vector_indexes]
        for entry in entries:
            entry.update({"indexState": "Finished", "failReason": ""})
        return Reply(entries)

    async def list_indexes(self, body: Body) -> Reply:
        meta = await self._meta(body.collection())
        return Reply([meta.schema.vector.name, *(field for field, _ in meta.vector_indexes)])

    async def drop_index(self, body: Body) -> Reply:
        await self._meta(body.collection())
        raise InvalidRequest(
            "dropping an index is not supported: every collection keeps an index on its vector field; "
            "replace it with indexes/create"
        )
