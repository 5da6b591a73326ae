"""An HTTP server over one `Engine`, speaking a subset of the Milvus RESTful API v2.

Every call is `POST /v2/vectordb/<category>/<action>` with a JSON object body. Success is HTTP 200
with `{"code": 0, "data": ...}`; an error is `{"code": <non-zero>, "message": "..."}` with HTTP 200
(Milvus's convention), except 401 (missing/wrong token), 413 (body over `max_body_bytes`), 404
(unknown endpoint) and 405 (not POST). The numeric codes and the docvec exception each maps to are
tabled in `vectordb.restproto`: 100 collection not found, 105 bad schema, 1100 invalid parameter or
unsupported feature, 1800 not authenticated, 1804 bad row, 1806 duplicate primary key, 1850 bad
filter, 1851 collection exists, 1852 request timed out, 2 engine closing, 65535 unexpected.

Endpoints (`dbName` may be given and must be "default"):

    collections/  create describe list has drop load release get_load_state get_stats flush
    entities/     insert upsert delete query get search
    partitions/   create drop has list load release get_stats
    indexes/      create describe list drop

docvec extensions to Milvus's request/response bodies (a Milvus client never needs them):
- collections/create `ifNotExists: true` (no error when an identical collection exists);
- entities/delete `ids: [...]` as an alternative to `filter`; its data is `{"deleteCount": n}`;
- entities/query|get|search `defaultOutputFields: true` returns what the embedded client returns for
  `output_fields=None` (primary key, every scalar field, dynamic keys); without it and without
  `outputFields` the rows carry only the primary key (and `distance`), as in Milvus;
- entities/search replies carry `topks` (hits per query vector, so a flat `data` list splits back
  per query, as Milvus does for several query vectors) and `primaryField` (the key holding the id).

Limits of this subset: partitions/load loads the whole collection and partitions/release does nothing
(load state is per collection); one index per collection, on the
vector field, whose name is not stored (describe reports it under the vector field's name); an index
cannot be dropped, only replaced by indexes/create; autoID is refused; the collection-level
consistencyLevel and shardsNum are validated but not stored; JSON bodies may carry NaN (Python's json),
which the engine then rejects or stores as the embedded client would.

Engine calls go through `Proxy.run_async` (reads on a worker thread, writes through the proxy's
queues), so the event loop never blocks. A request past its timeout gets code 1852; the proxy task is cancelled if it
has not started, but a write already running completes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from common.errors import DocvecError, InvalidRequest, LimitExceeded, StageTimeout, Unauthorized
from vectordb.catalog import CollectionMeta
from vectordb.engine import DEFAULT_SEAL_ROWS, Engine
from vectordb.errors import InsecureServer
from vectordb.proxy import Task
from vectordb.restproto import (
    API_PREFIX,
    CODE_PARAMETER_INVALID,
    DEFAULT_DB,
    LOAD_STATE_LOADED,
    DatabaseNotFound,
    IncorrectParameterFormat,
    MissingParameter,
    PartitionNotFound,
    code_for,
    describe_to_rest,
    field_from_custom,
    index_from_rest,
    index_to_rest,
    int_param,
    parse_type,
    search_params_from_rest,
)
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams
from vectordb.tasks import (
    CONSISTENCY_LEVELS,
    MAX_LIMIT,
    CountTask,
    CreateCollectionTask,
    CreateIndexTask,
    CreatePartitionTask,
    DeleteTask,
    DescribeCollectionTask,
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

log = logging.getLogger(__name__)

DEFAULT_PORT = 19530
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 60.0
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
        self.raw = raw

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
        value = self.get(key, {})
        if not isinstance(value, Mapping):
            raise IncorrectParameterFormat(f"parameter {key!r} must be an object")
        return value

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


def as_bool(key: str, value: Any, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise IncorrectParameterFormat(f"parameter {key!r} must be a boolean, got {value!r}")


def _check_consistency(value: Any) -> None:
    if value is not None and value not in CONSISTENCY_LEVELS:
        raise InvalidRequest(f"unknown consistency level {value!r}; use one of {list(CONSISTENCY_LEVELS)}")


def _refuse_auto_id(value: Any) -> None:
    if as_bool("autoID", value, False):
        raise InvalidRequest("autoID is not supported by docvec's vector store; supply the primary keys")


Handler = Callable[[Body], Awaitable[Reply]]


class RestApi:
    """The endpoint handlers over one engine; `handler(category, action)` looks one up."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
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

    async def _run(self, task: Task[Any]) -> Any:
        return await self._engine.proxy.run_async(task)

    async def _meta(self, name: str) -> CollectionMeta:
        meta: CollectionMeta = await self._run(DescribeCollectionTask(self._engine, name))
        return meta

    # ---------------------------------------------------------------------------------- collections

    async def create_collection(self, body: Body) -> Reply:
        name = body.collection()
        if body.has("schema"):
            schema = self._custom_schema(body)
        else:
            schema = self._quick_schema(body)
        params = body.mapping("params")
        _check_consistency(params.get("consistencyLevel"))
        index = self._index_for(body, schema) or IndexParams(metric_type=body.get("metricType", "COSINE"))
        await self._run(CreateCollectionTask(self._engine, name, schema, index, body.flag("ifNotExists", False)))
        return Reply({})

    def _quick_schema(self, body: Body) -> CollectionSchema:
        _refuse_auto_id(body.raw.get("autoID"))
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
                FieldSchema(body.get("primaryFieldName", "id"), pk_type, is_primary=True, max_length=max_length),
                FieldSchema(body.get("vectorFieldName", "vector"), DataType.FLOAT_VECTOR, dim=dim),
            ),
            enable_dynamic_field=as_bool("enableDynamicField", params.get("enableDynamicField"), True),
            description=str(body.get("description", "")),
        )

    def _custom_schema(self, body: Body) -> CollectionSchema:
        spec = body.mapping("schema")
        _refuse_auto_id(spec.get("autoID"))
        fields = spec.get("fields")
        if not isinstance(fields, list) or not fields:
            raise MissingParameter("schema.fields must be a non-empty list")
        return CollectionSchema(
            tuple(field_from_custom(f) for f in fields),
            enable_dynamic_field=as_bool("enableDynamicField", spec.get("enableDynamicField"), False),
            description=str(body.get("description", "")),
        )

    @staticmethod
    def _index_for(body: Body, schema: CollectionSchema) -> IndexParams | None:
        entries = body.get("indexParams", [])
        if not isinstance(entries, list):
            raise IncorrectParameterFormat("indexParams must be a list")
        found: IndexParams | None = None
        for entry in entries:
            field_name = entry.get("fieldName") if isinstance(entry, Mapping) else None
            if not isinstance(field_name, str):
                raise MissingParameter("indexParams[].fieldName is required")
            if field_name != schema.vector.name:
                raise InvalidRequest(
                    f"cannot index field {field_name!r}: only the vector field {schema.vector.name!r} can be indexed"
                )
            if found is not None:
                raise InvalidRequest(f"the vector field {field_name!r} can have only one index")
            found = index_from_rest(entry)
        return found

    async def describe_collection(self, body: Body) -> Reply:
        meta = await self._meta(body.collection())
        return Reply(describe_to_rest(meta.name, meta.id, meta.schema, meta.index))

    async def list_collections(self, body: Body) -> Reply:
        body.database()
        return Reply(await self._run(ListCollectionsTask(self._engine, "")))

    async def has_collection(self, body: Body) -> Reply:
        return Reply({"has": bool(await self._run(HasCollectionTask(self._engine, body.collection())))})

    async def drop_collection(self, body: Body) -> Reply:
        await self._run(DropCollectionTask(self._engine, body.collection()))
        return Reply({})

    async def load_collection(self, body: Body) -> Reply:
        await self._run(LoadCollectionTask(self._engine, body.collection()))
        return Reply({})

    async def release_collection(self, body: Body) -> Reply:
        await self._run(ReleaseCollectionTask(self._engine, body.collection()))
        return Reply({})

    async def get_load_state(self, body: Body) -> Reply:
        name = body.collection()
        await self._meta(name)
        await self._check_partitions(name, body.partitions())
        state = await self._run(GetLoadStateTask(self._engine, name))
        return Reply({"loadState": state, "loadProgress": 100 if state == LOAD_STATE_LOADED else 0})

    async def get_stats(self, body: Body) -> Reply:
        name = body.collection()
        partitions = body.partitions()
        if partitions:
            rows = await self._run(
                PartitionedQueryTask(
                    self._engine,
                    name,
                    filter="",
                    output_fields=[],
                    limit=None,
                    offset=0,
                    consistency_level="Strong",
                    partition_names=partitions,
                )
            )
            return Reply({"rowCount": len(rows)})
        return Reply({"rowCount": int(await self._run(CountTask(self._engine, name)))})

    async def _check_partitions(self, name: str, partitions: list[str]) -> None:
        if partitions:
            known = set(await self._run(ListPartitionsTask(self._engine, name)))
            missing = [p for p in partitions if p not in known]
            if missing:
                raise PartitionNotFound(f"partition {missing[0]!r} not found in {name!r}")

    async def flush(self, body: Body) -> Reply:
        await self._run(FlushTask(self._engine, body.collection()))
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
        task = InsertTask(self._engine, name, rows, upsert=upsert, partition_name=partitions[0] if partitions else None)
        return list(await self._run(task))

    async def delete(self, body: Body) -> Reply:
        name = body.collection()
        await self._check_partitions(name, body.partitions())  # primary keys are unique across partitions
        n = await self._run(DeleteTask(self._engine, name, body.raw.get("ids"), body.raw.get("filter")))
        return Reply({"deleteCount": int(n)})

    @staticmethod
    def _output_fields(body: Body) -> list[str] | None:
        if body.flag("defaultOutputFields", False):
            return None
        fields = body.get("outputFields", [])
        return fields  # type: ignore[no-any-return]  # the engine validates it

    async def query(self, body: Body) -> Reply:
        name = body.collection()
        partitions = body.partitions()
        task = PartitionedQueryTask(
            self._engine,
            name,
            filter=body.get("filter", ""),
            output_fields=self._output_fields(body),
            limit=body.raw.get("limit"),
            offset=body.get("offset", 0),
            consistency_level=body.get("consistencyLevel", "Strong"),
            partition_names=partitions or None,
        )
        return Reply(await self._run(task))

    async def get(self, body: Body) -> Reply:
        name = body.collection()
        await self._check_partitions(name, body.partitions())
        ids = body.required("id")
        if isinstance(ids, int | str):
            ids = [ids]  # Milvus's `id` is one key or a list
        return Reply(await self._run(GetTask(self._engine, name, ids, self._output_fields(body))))

    async def search(self, body: Body) -> Reply:
        name = body.collection()
        partitions = body.partitions()
        schema = (await self._meta(name)).schema
        anns = body.get("annsField", schema.vector.name)
        if anns != schema.vector.name:
            raise InvalidRequest(f"annsField {anns!r} is not the collection's vector field {schema.vector.name!r}")
        limit = body.get("limit", DEFAULT_SEARCH_LIMIT)
        offset = body.get("offset", 0)
        if offset:
            limit = self._paged_limit(limit, offset)
        task = PartitionedSearchTask(
            self._engine,
            name,
            body.required("data"),
            limit=limit,
            filter=body.raw.get("filter") or None,
            output_fields=self._output_fields(body),
            consistency_level=body.get("consistencyLevel", "Strong"),
            search_params=search_params_from_rest(body.raw.get("searchParams")),
            partition_names=partitions or None,
        )
        per_query = await self._run(task)
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
        for key, value in (("limit", limit), ("offset", offset)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidRequest(f"{key} must be a non-negative integer, got {value!r}")
        if limit + offset > MAX_LIMIT:
            raise InvalidRequest(f"limit + offset must be at most {MAX_LIMIT}, got {limit + offset}")
        return int(limit + offset)

    # ----------------------------------------------------------------------------------- partitions

    async def list_partitions(self, body: Body) -> Reply:
        return Reply(await self._run(ListPartitionsTask(self._engine, body.collection())))

    async def has_partition(self, body: Body) -> Reply:
        name = body.collection()
        return Reply({"has": bool(await self._run(HasPartitionTask(self._engine, name, body.string("partitionName"))))})

    async def create_partition(self, body: Body) -> Reply:
        name = body.collection()
        await self._run(CreatePartitionTask(self._engine, name, body.string("partitionName")))
        return Reply({})

    async def drop_partition(self, body: Body) -> Reply:
        name = body.collection()
        await self._run(DropPartitionTask(self._engine, name, body.string("partitionName")))
        return Reply({})

    async def load_partitions(self, body: Body) -> Reply:
        """Load state is per collection: partitions/load loads the collection, partitions/release is a no-op."""
        name = body.collection()
        await self._check_partitions(name, body.partitions())
        return Reply({})

    async def load_partition_collection(self, body: Body) -> Reply:
        name = body.collection()
        await self._check_partitions(name, body.partitions())
        await self._run(LoadCollectionTask(self._engine, name))
        return Reply({})

    # -------------------------------------------------------------------------------------- indexes

    async def create_index(self, body: Body) -> Reply:
        name = body.collection()
        schema = (await self._meta(name)).schema
        index = self._index_for(body, schema)
        if index is None:
            raise MissingParameter("indexParams must name the vector field's index")
        await self._run(CreateIndexTask(self._engine, name, index))
        return Reply({})

    async def describe_index(self, body: Body) -> Reply:
        meta = await self._meta(body.collection())
        entry = index_to_rest(meta.schema, meta.index)
        entry.update({"indexState": "Finished", "failReason": ""})
        return Reply([entry])

    async def list_indexes(self, body: Body) -> Reply:
        meta = await self._meta(body.collection())
        return Reply([meta.schema.vector.name])

    async def drop_index(self, body: Body) -> Reply:
        await self._meta(body.collection())
        raise InvalidRequest(
            "dropping an index is not supported: every collection keeps an index on its vector field; "
            "replace it with indexes/create"
        )


# ------------------------------------------------------------------------------------------ the app


def _json_response(payload: Mapping[str, Any], status: int = 200) -> Response:
    # orjson: ~10x faster than json for float vectors; NaN/Infinity (strict JSON has none) become null.
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _error_response(exc: DocvecError | Exception, status: int = 200) -> Response:
    message = exc.message if isinstance(exc, DocvecError) else f"internal error: {type(exc).__name__}"
    return _json_response({"code": code_for(exc), "message": message}, status)


def _authorized(header: str | None, token: str) -> bool:
    if not token:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def _read_json(request: Request, max_body_bytes: int) -> Mapping[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise LimitExceeded(f"request body of {declared} bytes exceeds the server's limit of {max_body_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise LimitExceeded(f"request body exceeds the server's limit of {max_body_bytes} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # Python's json writes NaN/Infinity literals; accept them as that client meant them
            body = json.loads(raw)
        except ValueError as e:
            raise IncorrectParameterFormat(f"request body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise IncorrectParameterFormat("request body must be a JSON object")
    return body


def _timeout_s(header: str | None, limit_s: float) -> float:
    """Milvus's `Request-Timeout` header (seconds) can shorten the server's limit, never extend it."""
    try:
        asked = float(header) if header else 0.0
    except ValueError:
        asked = 0.0
    return min(asked, limit_s) if asked > 0 else limit_s


def create_app(
    engine: Engine,
    *,
    token: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> Starlette:
    """The ASGI app serving `engine`. The caller owns the engine (and closes it after the server stops)."""
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    if not request_timeout_s > 0:
        raise ValueError("request_timeout_s must be positive")
    api = RestApi(engine)

    async def endpoint(request: Request) -> Response:
        if not _authorized(request.headers.get("authorization"), token):
            return _error_response(Unauthorized("missing or wrong bearer token"), 401)
        path = request.url.path
        category, _, action = path[len(API_PREFIX) :].partition("/") if path.startswith(API_PREFIX) else ("", "", "")
        handler = api.handler(category, action)
        if handler is None:
            return _json_response({"code": CODE_PARAMETER_INVALID, "message": f"unknown endpoint {path}"}, 404)
        if request.method != "POST":
            return _json_response({"code": CODE_PARAMETER_INVALID, "message": f"{path} takes POST"}, 405)
        timeout_s = _timeout_s(request.headers.get("request-timeout"), request_timeout_s)
        try:
            body = Body(await _read_json(request, max_body_bytes))
            async with asyncio.timeout(timeout_s):
                reply = await handler(body)
        except LimitExceeded as e:
            return _error_response(e, 413)
        except TimeoutError:
            return _error_response(
                StageTimeout(f"{path} timed out after {timeout_s:g} s; a write that had started may still complete")
            )
        except DocvecError as e:
            return _error_response(e)
        except Exception as e:  # the request boundary: log it, answer 65535, keep serving
            log.exception("unexpected error serving %s", path)
            return _error_response(e)
        return _json_response({"code": 0, "data": reply.data, **reply.extra})

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or "localhost") is reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name may resolve to anything


def check_exposure(host: str, token: str, *, insecure_no_token: bool = False) -> None:
    """Refuse to serve every collection, unauthenticated, to the network: a non-loopback `host`
    (0.0.0.0, a LAN address, a host name) needs a token, unless the operator says the network is trusted."""
    if token or insecure_no_token or is_loopback(host):
        return
    raise InsecureServer(
        f"refusing to serve the vector store on {host} without a token: anyone who can reach it could read and "
        "delete every collection. Set one with --token (or DOCVEC_VECTORDB__TOKEN) and give it to the clients "
        "(vectordb.token), bind to 127.0.0.1, or pass --insecure-no-token on a trusted network"
    )


class _Server(uvicorn.Server):
    """uvicorn re-raises the stop signal after its graceful shutdown (killing the process with the default
    handler), which would skip closing the engine; forget it, so `run_server` closes the engine and returns."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                captured = getattr(self, "_captured_signals", None)
                if captured:
                    log.info("stopping on signal %s", ", ".join(str(sig) for sig in captured))
                    captured.clear()


def run_server(
    data_dir: str,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    fsync: bool = True,
    seal_rows: int = DEFAULT_SEAL_ROWS,
    log_level: str = "info",
    insecure_no_token: bool = False,
) -> None:
    """Serve the store at `data_dir` until SIGTERM/SIGINT, then drain requests and close the engine.

    The engine is opened before the port is bound, so a second server on the same directory fails at
    once with DataDirLocked (the directory's exclusive lock). A non-loopback `host` needs a `token`
    unless `insecure_no_token` (InsecureServer, before anything is opened or bound).
    """
    check_exposure(host, token, insecure_no_token=insecure_no_token)
    engine = Engine.open(data_dir, fsync=fsync, seal_rows=seal_rows)
    try:
        if not token and not is_loopback(host):
            log.warning("serving the vector store on %s WITHOUT a token (--insecure-no-token): anyone who can "
                        "reach it can read and delete every collection", host)
        app = create_app(engine, token=token, max_body_bytes=max_body_bytes, request_timeout_s=request_timeout_s)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",
            ws="none",
            log_level=log_level,
            timeout_graceful_shutdown=int(request_timeout_s) + 5,
        )
        _Server(config).run()  # installs SIGINT/SIGTERM handlers: stop accepting, drain, return
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m vectordb.server --data DIR [--host H --port P --token T]`."""
    parser = argparse.ArgumentParser(prog="vectordb.server", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data directory (owned exclusively by this server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--token", default="", help="require `Authorization: Bearer TOKEN`")
    parser.add_argument("--insecure-no-token", action="store_true",
                        help="allow a non-loopback --host without a token (trusted networks only)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument("--request-timeout-s", type=float, default=DEFAULT_REQUEST_TIMEOUT_S)
    parser.add_argument("--no-fsync", action="store_true", help="skip fsync on writes (tests, benchmarks)")
    parser.add_argument("--seal-rows", type=int, default=DEFAULT_SEAL_ROWS, help="rows per sealed segment")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run_server(
            args.data,
            host=args.host,
            port=args.port,
            token=args.token,
            max_body_bytes=args.max_body_bytes,
            request_timeout_s=args.request_timeout_s,
            fsync=not args.no_fsync,
            seal_rows=args.seal_rows,
            insecure_no_token=args.insecure_no_token,
        )
    except DocvecError as e:
        print(f"vectordb server: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
