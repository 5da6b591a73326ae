"""The Milvus gRPC front end of `docvec vectordb`: pymilvus (`MilvusClient`, the ORM) talks to it unchanged.

It implements the `milvus.proto.milvus.MilvusService` RPCs that pymilvus uses for what the store
supports, and nothing else: each RPC is translated (`vectordb.grpcproto`) into the body of a REST
handler of `vectordb.rest.RestApi`, which does the work exactly as it does for `POST /v2/vectordb/...`
(same validation, filters and error codes), and the handler's reply is translated back to protobuf.
Every other RPC of the service answers a `common.Status` with code 1100 naming the RPC (never
UNIMPLEMENTED, never a hang).

Auth: pymilvus sends `token=` as the `authorization` metadata, base64 of the token (or of
"user:password"); it is compared with the server's token in constant time, and a wrong or missing one
gets code 1800 (ErrNeedAuthenticate). The server is a `grpc.aio` server on the event loop that serves
REST, so both go through the same `Engine` (whose proxy runs the blocking work on threads).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from common.errors import DocvecError, InvalidRequest, StageTimeout
from vectordb.engine import Engine
from vectordb.milvus_client import DOCVEC_DEPLOY_MODE
from vectordb.rest import Body, Reply, RestApi
from vectordb.restproto import CODE_NEED_AUTHENTICATE, CODE_PARAMETER_INVALID, DEFAULT_DB
from vectordb.tso import compose_ts

log = logging.getLogger(__name__)

SERVER_VERSION = "v2.5.0"  # the Milvus API level this front end answers as (pymilvus gates features on it)
_SERVICE = "milvus.proto.milvus.MilvusService"


class GrpcUnavailable(DocvecError):
    """gRPC serving needs pymilvus (its generated Milvus protobuf modules) and grpcio."""

    code = "grpc_unavailable"


def _grpc_modules() -> tuple[Any, Any, Any, Any, Any]:
    try:
        import grpc
        from pymilvus.grpc_gen import common_pb2, milvus_pb2, schema_pb2

        from vectordb import grpcproto
    except ImportError as e:
        raise GrpcUnavailable(
            f"serving the Milvus gRPC protocol needs pymilvus and grpcio, dependencies of docvec ({e}); "
            "reinstall docvec (`pip install -e .`)"
        ) from None
    return grpc, common_pb2, milvus_pb2, schema_pb2, grpcproto


def check_grpc_available() -> None:
    """Raise GrpcUnavailable, before anything is opened, when pymilvus or grpcio is missing."""
    _grpc_modules()


def token_matches(metadata: Sequence[tuple[str, Any]] | None, token: str) -> bool:
    """Whether the call's `authorization` metadata (base64 of the token, or of "user:password") is
    `token`, compared in constant time. No server token: every call is allowed."""
    if not token:
        return True
    given = next((v for k, v in metadata or () if k == "authorization"), None)
    if given is None:
        return False
    raw = given.encode() if isinstance(given, str) else bytes(given)
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(decoded, token.encode())


Impl = Callable[[Any], Awaitable[Any]]


class MilvusGrpcService:
    """The MilvusService handlers over one engine's REST handlers (see the module docstring)."""

    def __init__(self, engine: Engine, *, token: str = "", request_timeout_s: float = 60.0) -> None:
        self._grpc, self._common, self._milvus, self._schema, self._proto = _grpc_modules()
        self._api = RestApi(engine)
        self._engine = engine
        self._token = token
        self._timeout_s = request_timeout_s
        self._impls: dict[str, Impl] = {
            "Connect": self.connect,
            "GetVersion": self.get_version,
            "CheckHealth": self.check_health,
            "ListDatabases": self.list_databases,
            "AllocTimestamp": self.alloc_timestamp,
            "CreateCollection": self.create_collection,
            "DescribeCollection": self.describe_collection,
            "HasCollection": self.has_collection,
            "ShowCollections": self.show_collections,
            "DropCollection": self.drop_collection,
            "LoadCollection": self.load_collection,
            "ReleaseCollection": self.release_collection,
            "GetLoadState": self.get_load_state,
            "GetLoadingProgress": self.get_loading_progress,
            "GetCollectionStatistics": self.get_collection_statistics,
            "CreatePartition": self.create_partition,
            "DropPartition": self.drop_partition,
            "HasPartition": self.has_partition,
            "ShowPartitions": self.show_partitions,
            "LoadPartitions": self.load_partitions,
            "ReleasePartitions": self.release_partitions,
            "GetPartitionStatistics": self.get_partition_statistics,
            "CreateIndex": self.create_index,
            "DescribeIndex": self.describe_index,
            "GetIndexState": self.get_index_state,
            "GetIndexBuildProgress": self.get_index_build_progress,
            "DropIndex": self.drop_index,
            "Insert": self.insert,
            "Upsert": self.upsert,
            "Delete": self.delete,
            "Flush": self.flush,
            "GetFlushState": self.get_flush_state,
            "ManualCompaction": self.manual_compaction,
            "GetCompactionState": self.get_compaction_state,
            "Search": self.search,
            "Query": self.query,
        }

    # ------------------------------------------------------------------------------------- plumbing

    def generic_handler(self) -> Any:
        """A grpc generic handler for every unary RPC of MilvusService: ours, or a clear 'unsupported'."""
        service = self._milvus.DESCRIPTOR.services_by_name["MilvusService"]
        handlers = {}
        for method in service.methods:
            if method.client_streaming or method.server_streaming:
                continue  # replication streams: grpc answers UNIMPLEMENTED
            request_cls = getattr(self._milvus, method.input_type.name, None) or self._message(method.input_type)
            response_cls = self._message(method.output_type)
            handlers[method.name] = self._grpc.unary_unary_rpc_method_handler(
                self._wrap(method.name, response_cls),
                request_deserializer=request_cls.FromString,
                response_serializer=response_cls.SerializeToString,
            )
        return self._grpc.method_handlers_generic_handler(_SERVICE, handlers)

    @staticmethod
    def _message(descriptor: Any) -> Any:
        from google.protobuf import message_factory

        return message_factory.GetMessageClass(descriptor)

    def _error_reply(self, response_cls: Any, status: Any) -> Any:
        if response_cls.DESCRIPTOR.full_name == "milvus.proto.common.Status":
            return status
        if "status" in response_cls.DESCRIPTOR.fields_by_name:
            return response_cls(status=status)
        return response_cls()

    def _wrap(self, name: str, response_cls: Any) -> Callable[[Any, Any], Awaitable[Any]]:
        impl = self._impls.get(name)
        proto = self._proto

        async def call(request: Any, context: Any) -> Any:
            if not token_matches(context.invocation_metadata(), self._token):
                return self._error_reply(response_cls, proto.error_status(
                    CODE_NEED_AUTHENTICATE, f"{name}: authentication failed: missing or wrong token"))
            if impl is None:
                return self._error_reply(response_cls, proto.error_status(
                    CODE_PARAMETER_INVALID, f"{name} is not supported by docvec's vector store"))
            remaining = context.time_remaining()
            timeout_s = min(self._timeout_s, remaining) if remaining is not None else self._timeout_s
            try:
                async with asyncio.timeout(timeout_s):
                    return await impl(request)
            except TimeoutError:
                error: BaseException = StageTimeout(
                    f"{name} timed out after {timeout_s:g} s; a write that had started may still complete")
            except DocvecError as e:
                error = e
            except Exception as e:  # the request boundary: log it, answer 65535, keep serving
                log.exception("unexpected error serving gRPC %s", name)
                error = e
            return self._error_reply(response_cls, proto.status_for(error))

        return call

    async def _rest(self, category: str, action: str, body: Mapping[str, Any]) -> Reply:
        handler = self._api.handler(category, action)
        if handler is None:  # a programming error: every route used here exists
            raise LookupError(f"no REST handler {category}/{action}")
        return await handler(Body(body))

    @staticmethod
    def _target(request: Any, **extra: Any) -> dict[str, Any]:
        """The REST body naming the request's database and collection."""
        body: dict[str, Any] = {"dbName": request.db_name or DEFAULT_DB, "collectionName": request.collection_name}
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    def _ok(self) -> Any:
        return self._proto.ok_status()

    async def _described(self, request: Any) -> dict[str, Any]:
        return dict((await self._rest("collections", "describe", self._target(request))).data)

    # ----------------------------------------------------------------------------------- connection

    async def connect(self, request: Any) -> Any:
        info = self._common.ServerInfo(build_tags=SERVER_VERSION, deploy_mode=DOCVEC_DEPLOY_MODE)
        return self._milvus.ConnectResponse(status=self._ok(), server_info=info, identifier=int(time.time_ns() % 2**63))

    async def get_version(self, request: Any) -> Any:
        return self._milvus.GetVersionResponse(status=self._ok(), version=SERVER_VERSION)

    async def check_health(self, request: Any) -> Any:
        return self._milvus.CheckHealthResponse(status=self._ok(), isHealthy=True)

    async def list_databases(self, request: Any) -> Any:
        return self._milvus.ListDatabasesResponse(status=self._ok(), db_names=[DEFAULT_DB])

    async def alloc_timestamp(self, request: Any) -> Any:
        """A timestamp of the store's own oracle (pymilvus asks for one while waiting for an index)."""
        ts = await asyncio.to_thread(self._engine.tso.next)
        return self._milvus.AllocTimestampResponse(status=self._ok(), timestamp=ts)

    # ---------------------------------------------------------------------------------- collections

    async def create_collection(self, request: Any) -> Any:
        schema = self._schema.CollectionSchema.FromString(request.schema)
        params: dict[str, Any] = {"consistencyLevel": self._common.ConsistencyLevel.Name(request.consistency_level)}
        if request.shards_num:
            params["shardsNum"] = request.shards_num
        body = self._target(request, schema=self._proto.schema_to_rest(schema), params=params,
                            description=schema.description or None)
        await self._rest("collections", "create", body)
        return self._ok()

    async def describe_collection(self, request: Any) -> Any:
        if not request.collection_name:
            raise InvalidRequest("DescribeCollection needs a collection name (lookup by ID is not supported)")
        data = await self._described(request)
        return self._milvus.DescribeCollectionResponse(
            status=self._ok(),
            schema=self._proto.schema_from_rest(data),
            collectionID=int(data["collectionID"]),
            collection_name=data["collectionName"],
            db_name=DEFAULT_DB,
            shards_num=int(data.get("shardsNum", 1)),
            num_partitions=int(data.get("partitionsNum", 1)),
            consistency_level=self._common.Strong,
        )

    async def has_collection(self, request: Any) -> Any:
        reply = await self._rest("collections", "has", self._target(request))
        return self._milvus.BoolResponse(status=self._ok(), value=bool(reply.data["has"]))

    async def show_collections(self, request: Any) -> Any:
        reply = await self._rest("collections", "list", {"dbName": request.db_name or DEFAULT_DB})
        names = list(reply.data)
        if request.collection_names:
            wanted = set(request.collection_names)
            names = [n for n in names if n in wanted]
        return self._milvus.ShowCollectionsResponse(status=self._ok(), collection_names=names)

    async def drop_collection(self, request: Any) -> Any:
        await self._rest("collections", "drop", self._target(request))
        return self._ok()

    async def load_collection(self, request: Any) -> Any:
        await self._rest("collections", "load", self._target(request))
        return self._ok()

    async def release_collection(self, request: Any) -> Any:
        await self._rest("collections", "release", self._target(request))
        return self._ok()

    async def _load_state(self, request: Any) -> Mapping[str, Any]:
        body = self._target(request, partitionNames=list(request.partition_names) or None)
        return dict((await self._rest("collections", "get_load_state", body)).data)

    async def get_load_state(self, request: Any) -> Any:
        state = await self._load_state(request)
        return self._milvus.GetLoadStateResponse(status=self._ok(),
                                                 state=self._common.LoadState.Value(state["loadState"]))

    async def get_loading_progress(self, request: Any) -> Any:
        state = await self._load_state(request)
        return self._milvus.GetLoadingProgressResponse(status=self._ok(), progress=int(state["loadProgress"]))

    def _stats(self, reply: Reply) -> list[Any]:
        return [self._common.KeyValuePair(key="row_count", value=str(reply.data["rowCount"]))]

    async def get_collection_statistics(self, request: Any) -> Any:
        reply = await self._rest("collections", "get_stats", self._target(request))
        return self._milvus.GetCollectionStatisticsResponse(status=self._ok(), stats=self._stats(reply))

    # ----------------------------------------------------------------------------------- partitions

    async def create_partition(self, request: Any) -> Any:
        await self._rest("partitions", "create", self._target(request, partitionName=request.partition_name))
        return self._ok()

    async def drop_partition(self, request: Any) -> Any:
        await self._rest("partitions", "drop", self._target(request, partitionName=request.partition_name))
        return self._ok()

    async def has_partition(self, request: Any) -> Any:
        reply = await self._rest("partitions", "has", self._target(request, partitionName=request.partition_name))
        return self._milvus.BoolResponse(status=self._ok(), value=bool(reply.data["has"]))

    async def show_partitions(self, request: Any) -> Any:
        reply = await self._rest("partitions", "list", self._target(request))
        names = list(reply.data)
        if request.partition_names:
            wanted = set(request.partition_names)
            names = [n for n in names if n in wanted]
        return self._milvus.ShowPartitionsResponse(status=self._ok(), partition_names=names,
                                                   inMemory_percentages=[100] * len(names))

    async def load_partitions(self, request: Any) -> Any:
        await self._rest("partitions", "load", self._target(request, partitionNames=list(request.partition_names)))
        return self._ok()

    async def release_partitions(self, request: Any) -> Any:
        await self._rest("partitions", "release", self._target(request, partitionNames=list(request.partition_names)))
        return self._ok()

    async def get_partition_statistics(self, request: Any) -> Any:
        body = self._target(request, partitionNames=[request.partition_name])
        reply = await self._rest("partitions", "get_stats", body)
        return self._milvus.GetPartitionStatisticsResponse(status=self._ok(), stats=self._stats(reply))

    # -------------------------------------------------------------------------------------- indexes

    async def create_index(self, request: Any) -> Any:
        params = self._proto.kv_dict(request.extra_params)
        entry: dict[str, Any] = {
            "fieldName": request.field_name,
            "indexType": params.pop("index_type", None),
            "metricType": params.pop("metric_type", None),
            "params": self._proto.json_param(params.pop("params", None), "index params") or {},
        }
        entry["params"].update({k: v for k, v in params.items() if k not in ("dim", "mmap.enabled")})
        await self._rest("indexes", "create", self._target(request, indexParams=[entry]))
        return self._ok()

    async def _index_descriptions(self, request: Any) -> list[Any]:
        entries = (await self._rest("indexes", "describe", self._target(request))).data
        rows = None
        descriptions = []
        for entry in entries:
            if request.field_name and entry["fieldName"] != request.field_name:
                continue
            if rows is None:
                rows = int((await self._rest("collections", "get_stats", self._target(request))).data["rowCount"])
            params = [
                self._common.KeyValuePair(key="index_type", value=str(entry["indexType"])),
                self._common.KeyValuePair(key="metric_type", value=str(entry["metricType"])),
                self._common.KeyValuePair(key="params", value=json.dumps(entry.get("params") or {})),
                *(self._common.KeyValuePair(key=k, value=str(v)) for k, v in (entry.get("params") or {}).items()),
            ]
            descriptions.append(self._milvus.IndexDescription(
                index_name=entry["indexName"], field_name=entry["fieldName"], params=params,
                indexed_rows=rows, total_rows=rows, state=self._common.Finished))
        # The store keeps no index names (an index is its field's): a name asked for that is no
        # field's index means the collection's only one, whatever it was called when created.
        named = [d for d in descriptions if d.index_name == request.index_name]
        return named if named else descriptions

    async def describe_index(self, request: Any) -> Any:
        descriptions = await self._index_descriptions(request)
        if not descriptions:
            return self._milvus.DescribeIndexResponse(status=self._proto.error_status(
                700, f"index not found in collection {request.collection_name!r}"))
        return self._milvus.DescribeIndexResponse(status=self._ok(), index_descriptions=descriptions)

    async def get_index_state(self, request: Any) -> Any:
        await self._index_descriptions(request)
        return self._milvus.GetIndexStateResponse(status=self._ok(), state=self._common.Finished)

    async def get_index_build_progress(self, request: Any) -> Any:
        descriptions = await self._index_descriptions(request)
        rows = descriptions[0].total_rows if descriptions else 0
        return self._milvus.GetIndexBuildProgressResponse(status=self._ok(), indexed_rows=rows, total_rows=rows)

    async def drop_index(self, request: Any) -> Any:
        await self._rest("indexes", "drop", self._target(request))
        return self._ok()

    # ------------------------------------------------------------------------------------- entities

    async def _write(self, request: Any, action: str) -> Any:
        rows = self._proto.rows_from_columns(request.fields_data, request.num_rows)
        body = self._target(request, data=rows, partitionName=request.partition_name or None)
        reply = await self._rest("entities", action, body)
        ids = reply.data[f"{action}Ids"]
        pk_is_int = bool(ids) and isinstance(ids[0], int)
        return self._milvus.MutationResult(
            status=self._ok(),
            IDs=self._proto.ids_proto(ids, pk_is_int),
            succ_index=list(range(len(ids))),
            insert_cnt=len(ids) if action == "insert" else 0,
            upsert_cnt=len(ids) if action == "upsert" else 0,
            timestamp=compose_ts(time.time_ns() // 1_000_000, 0),
        )

    async def insert(self, request: Any) -> Any:
        return await self._write(request, "insert")

    async def upsert(self, request: Any) -> Any:
        if request.partial_update:
            raise self._proto.UnsupportedRequest("partial upserts are not supported by docvec's vector store")
        return await self._write(request, "upsert")

    def _no_templates(self, request: Any) -> None:
        if request.expr_template_values:
            raise self._proto.UnsupportedRequest("filter templates (expr_params / filter_params) are not supported; "
                                                 "write the values into the filter")

    async def delete(self, request: Any) -> Any:
        self._no_templates(request)
        body = self._target(request, filter=request.expr, partitionName=request.partition_name or None)
        reply = await self._rest("entities", "delete", body)
        return self._milvus.MutationResult(status=self._ok(), delete_cnt=int(reply.data["deleteCount"]),
                                           timestamp=compose_ts(time.time_ns() // 1_000_000, 0))

    async def flush(self, request: Any) -> Any:
        response = self._milvus.FlushResponse(status=self._ok(), db_name=request.db_name or DEFAULT_DB)
        for name in request.collection_names:
            await self._rest("collections", "flush", {"dbName": request.db_name or DEFAULT_DB, "collectionName": name})
            response.coll_segIDs[name].data.extend([])
            response.flush_coll_segIDs[name].data.extend([])
            response.coll_flush_ts[name] = compose_ts(time.time_ns() // 1_000_000, 0)
        return response

    async def get_flush_state(self, request: Any) -> Any:
        """Flush is synchronous here: by the time a client asks, it is done."""
        return self._milvus.GetFlushStateResponse(status=self._ok(), flushed=True)

    async def manual_compaction(self, request: Any) -> Any:
        """Compaction runs to completion here (REST collections/compact); its state is then Completed."""
        if not request.collection_name:
            raise InvalidRequest("ManualCompaction needs a collection name (lookup by ID is not supported)")
        await self._rest("collections", "compact", self._target(request))
        return self._milvus.ManualCompactionResponse(status=self._ok(), compactionID=1, compactionPlanCount=1)

    async def get_compaction_state(self, request: Any) -> Any:
        return self._milvus.GetCompactionStateResponse(status=self._ok(), state=self._common.Completed,
                                                       completedPlanNo=1)

    async def search(self, request: Any) -> Any:
        self._no_templates(request)
        if request.HasField("ids") or request.sub_reqs or request.HasField("function_score") or request.function_chains:
            raise self._proto.UnsupportedRequest("search by primary keys, hybrid search and rerank functions are not "
                                                 "supported by docvec's vector store")
        params = self._proto.kv_dict(request.search_params)
        described = await self._described(request)
        schema = self._proto.schema_from_rest(described)
        inner = self._proto.json_param(params.get("params"), "search params") or {}
        if params.get("ignore_growing", "False").lower() == "true":
            inner["ignore_growing"] = True
        search_params: dict[str, Any] = {"params": inner}
        if params.get("metric_type"):
            search_params["metricType"] = params["metric_type"]
        limit = int(params.get("topk", "10"))
        body = self._target(
            request,
            data=self._proto.vectors_from_placeholder(request.placeholder_group),
            annsField=params.get("anns_field") or None,
            filter=request.dsl or None,
            limit=limit,
            offset=int(params.get("offset", "0")),
            outputFields=list(request.output_fields),
            searchParams=search_params,
            partitionNames=list(request.partition_names) or None,
            consistencyLevel=self._proto.consistency_name(request.consistency_level, request.use_default_consistency),
        )
        reply = await self._rest("entities", "search", body)
        pk = reply.extra["primaryField"]
        rows: list[dict[str, Any]] = list(reply.data)
        requested = set(request.output_fields)
        names = self._row_keys(rows, drop={"distance"} | (set() if pk in requested or "*" in requested else {pk}))
        pk_field = next(f for f in schema.fields if f.is_primary_key)
        result = self._schema.SearchResultData(
            num_queries=len(reply.extra["topks"]),
            top_k=limit,
            fields_data=self._proto.columns_from_rows(rows, schema.fields, names),
            scores=[float(r["distance"]) for r in rows],
            ids=self._proto.ids_proto([r[pk] for r in rows], pk_field.data_type == self._schema.Int64),
            topks=list(reply.extra["topks"]),
            output_fields=names,
            primary_field_name=pk,
        )
        return self._milvus.SearchResults(status=self._ok(), results=result, collection_name=request.collection_name)

    @staticmethod
    def _row_keys(rows: Sequence[Mapping[str, Any]], drop: frozenset[str] | set[str] = frozenset()) -> list[str]:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(k for k in row if k not in drop))
        return list(seen)

    async def query(self, request: Any) -> Any:
        self._no_templates(request)
        params = self._proto.kv_dict(request.query_params)
        described = await self._described(request)
        schema = self._proto.schema_from_rest(described)
        pk = next(f.name for f in schema.fields if f.is_primary_key)
        output = list(request.output_fields)
        body = self._target(
            request,
            filter=request.expr,
            outputFields=output,
            limit=int(params["limit"]) if params.get("limit") else None,
            offset=int(params.get("offset") or 0),
            partitionNames=list(request.partition_names) or None,
            consistencyLevel=self._proto.consistency_name(request.consistency_level, request.use_default_consistency),
            # pymilvus's query iterator pages by a primary-key cursor (`pk > last`): its pages must be in key order
            orderByPrimaryKey=str(params.get("iterator", "")).lower() == "true",
        )
        reply = await self._rest("entities", "query", body)
        rows: list[dict[str, Any]] = list(reply.data)
        names = self._row_keys(rows)
        if not rows:  # no rows: still name the columns asked for, as Milvus does
            names = [n for n in output if n != "*"] or [pk]
        return self._milvus.QueryResults(
            status=self._ok(),
            fields_data=self._proto.columns_from_rows(rows, schema.fields, names),
            collection_name=request.collection_name,
            output_fields=names,
            primary_field_name=pk,
        )


def create_grpc_server(engine: Engine, *, host: str, port: int, token: str = "",
                       request_timeout_s: float = 60.0, max_message_bytes: int = 64 * 1024 * 1024,
                       unix_socket: str | None = None) -> tuple[Any, int]:
    """A `grpc.aio` server (not started) serving MilvusService on host:port (or on `unix_socket`, a path,
    for `vectordb.portmux` to relay to), on the running loop, and the port it bound (`port` 0: a free
    one). Raises GrpcUnavailable without pymilvus/grpcio, OSError when the address cannot be bound."""
    grpc = _grpc_modules()[0]
    service = MilvusGrpcService(engine, token=token, request_timeout_s=request_timeout_s)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", 0),
        # pymilvus pings every 10 s, idle or not: accept that rather than answer GOAWAY too_many_pings.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5000),
        ("grpc.http2.max_ping_strikes", 0),
    ])
    server.add_generic_rpc_handlers((service.generic_handler(),))
    if unix_socket is not None:
        address = f"unix:{unix_socket}"
    else:
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {address}")
    return server, bound

