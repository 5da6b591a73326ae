"""`HttpClient`: the vector-store client interface over a `docvec vectordb` server (Milvus REST v2 subset).

It implements `vectordb.base.VectorStore` with the embedded client's signatures, return types and
exception classes, so callers cannot tell the backends apart. Server errors come back as the docvec
exceptions tabled in `vectordb.restproto`. A `ColumnBatch` is sent as JSON rows, a `Where` as its text.

Retries (tenacity, exponential backoff) cover transport failures only, never an error the server
answered: a connection that could not be made is retried for every call; a timeout or a dropped
connection after the request was sent is retried only for idempotent calls (everything but
`insert`, which could otherwise fail with DuplicatePrimaryKey for rows its first attempt wrote).
When the retries run out, TransientError is raised.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np
import orjson
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from common.errors import DocvecError, InvalidRequest, TransientError
from vectordb.base import ColumnBatch, Filter, Rows
from vectordb.filters import filter_text
from vectordb.restproto import (
    API_PREFIX,
    as_id_list,
    error_from,
    index_from_rest,
    index_to_rest,
    schema_from_describe,
    schema_to_rest,
    search_params_to_rest,
)
from vectordb.results import Hit
from vectordb.schema import CollectionSchema, IndexParams

# Errors raised before the request reached the server: always safe to retry.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# The request may have been applied: retry only idempotent calls.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
# The server's own per-request timeout should answer before the client gives up on the socket.
_SOCKET_GRACE_S = 5.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class HttpClient:
    """Async client for a docvec vector-store server at `base_url` (e.g. "http://127.0.0.1:19530").

    `timeout_s` is sent as Milvus's `Request-Timeout` header (the server may enforce a lower limit);
    the socket timeout is a few seconds longer so the server's clear timeout error arrives first.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str = "",
        timeout_s: float = 30.0,
        retry_attempts: int = 4,
        retry_backoff_s: float = 0.1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError("timeout_s must be positive")
        if retry_attempts < 1:
            raise ValueError("retry_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        headers = {"Content-Type": "application/json", "Request-Timeout": f"{timeout_s:g}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if transport is None:
            # TCP_NODELAY: without it a request whose headers and body leave in two segments waits
            # out the peer's delayed ACK (~40 ms) on every call.
            transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=timeout_s + _SOCKET_GRACE_S, transport=transport
        )
        self._retry_attempts = retry_attempts
        self._retry_backoff_s = retry_backoff_s

    # ------------------------------------------------------------------------------------ transport

    async def _call(self, endpoint: str, body: Mapping[str, Any], *, idempotent: bool = True) -> dict[str, Any]:
        """POST `body` to /v2/vectordb/<endpoint>; return the success envelope or raise the mapped error."""
        content = orjson.dumps(body, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)

        def retryable(exc: BaseException) -> bool:
            return isinstance(exc, _NOT_SENT) or (idempotent and isinstance(exc, _MAYBE_SENT))

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._retry_attempts),
            wait=wait_exponential(multiplier=self._retry_backoff_s, max=2.0),
            retry=retry_if_exception(retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    response = await self._http.post(API_PREFIX + endpoint, content=content)
        except httpx.TransportError as e:
            raise TransientError(f"vector store server {self.base_url} unreachable: {type(e).__name__}: {e}") from e
        return self._envelope(response)

    def _envelope(self, response: httpx.Response) -> dict[str, Any]:
        try:
            payload = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            try:  # a peer that writes NaN/Infinity literals (Python's json) is still understood
                payload = json.loads(response.content)
            except ValueError:
                payload = None
        if not isinstance(payload, dict) or not isinstance(payload.get("code"), int):
            detail = response.text[:200]
            if response.status_code >= 500:
                raise TransientError(f"vector store server answered HTTP {response.status_code}: {detail}")
            raise DocvecError(f"unexpected reply from the vector store server (HTTP {response.status_code}): {detail}")
        if payload["code"] != 0:
            raise error_from(payload["code"], str(payload.get("message", "")))
        return payload

    async def _data(self, endpoint: str, body: Mapping[str, Any], *, idempotent: bool = True) -> Any:
        return (await self._call(endpoint, body, idempotent=idempotent)).get("data")

    # ---------------------------------------------------------------------------------- collections

    async def create_collection(
        self, name: str, schema: CollectionSchema, *, index: IndexParams | None = None, if_not_exists: bool = False
    ) -> None:
        if not isinstance(schema, CollectionSchema):
            raise InvalidRequest("schema must be a CollectionSchema")
        if index is not None and not isinstance(index, IndexParams):
            raise InvalidRequest("index must be an IndexParams")
        body = {
            "collectionName": name,
            "schema": schema_to_rest(schema),
            # Every vector field indexed (the others by default, as the embedded engine has them), so the
            # server loads the collection as the embedded engine does.
            "indexParams": [index_to_rest(schema, index or IndexParams()),
                            *(index_to_rest(schema, IndexParams(), f.name) for f in schema.extra_vectors)],
            "description": schema.description,
            "ifNotExists": if_not_exists,
        }
        await self._call("collections/create", body)

    async def has_collection(self, name: str) -> bool:
        return bool((await self._data("collections/has", {"collectionName": name}))["has"])

    async def drop_collection(self, name: str) -> None:
        await self._call("collections/drop", {"collectionName": name})

    async def list_collections(self) -> list[str]:
        return list(await self._data("collections/list", {}))

    async def describe_collection(self, name: str) -> CollectionSchema:
        return schema_from_describe(await self._data("collections/describe", {"collectionName": name}))

    async def describe_index(self, name: str, *, field_name: str | None = None) -> IndexParams:
        entries = await self._data("indexes/describe", {"collectionName": name})
        if field_name is None:
            return index_from_rest(entries[0])  # the first vector field's comes first
        found = next((e for e in entries if e.get("fieldName") == field_name), None)
        return index_from_rest(found) if found is not None else IndexParams()

    async def create_index(self, name: str, index: IndexParams, *, field_name: str | None = None) -> None:
        """Replace the index definition and rebuild the index of every sealed segment (`field_name`: of
        that vector field; None: the first)."""
        if not isinstance(index, IndexParams):
            raise InvalidRequest("index must be an IndexParams")
        schema = await self.describe_collection(name)
        entry = index_to_rest(schema, index, field_name)
        await self._call("indexes/create", {"collectionName": name, "indexParams": [entry]})

    async def flush(self, name: str) -> None:
        await self._call("collections/flush", {"collectionName": name})

    async def compact(self, name: str) -> None:
        """Merge small sealed segments and purge deleted rows (a docvec extension of the REST API)."""
        await self._call("collections/compact", {"collectionName": name})

    async def load_collection(self, name: str) -> None:
        await self._call("collections/load", {"collectionName": name})

    async def release_collection(self, name: str) -> None:
        await self._call("collections/release", {"collectionName": name})

    async def get_load_state(self, name: str) -> str:
        return str((await self._data("collections/get_load_state", {"collectionName": name}))["loadState"])

    # ----------------------------------------------------------------------------------- partitions

    async def create_partition(self, name: str, partition: str) -> None:
        await self._call("partitions/create", {"collectionName": name, "partitionName": partition})

    async def drop_partition(self, name: str, partition: str) -> None:
        """Delete the partition's rows and forget it; "_default" cannot be dropped."""
        await self._call("partitions/drop", {"collectionName": name, "partitionName": partition})

    async def has_partition(self, name: str, partition: str) -> bool:
        data = await self._data("partitions/has", {"collectionName": name, "partitionName": partition})
        return bool(data["has"])

    async def list_partitions(self, name: str) -> list[str]:
        return list(await self._data("partitions/list", {"collectionName": name}))

    # ------------------------------------------------------------------------------------- entities

    async def insert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]:
        body = self._write_body(name, rows, partition_name)
        return list((await self._data("entities/insert", body, idempotent=False))["insertIds"])

    async def upsert(self, name: str, rows: Rows, *, partition_name: str | None = None) -> list[Any]:
        return list((await self._data("entities/upsert", self._write_body(name, rows, partition_name)))["upsertIds"])

    @staticmethod
    def _write_body(name: str, rows: Rows, partition_name: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"collectionName": name, "data": rows.rows() if isinstance(rows, ColumnBatch) else rows}
        if partition_name is not None:
            body["partitionName"] = partition_name
        return body

    async def delete(self, name: str, *, ids: Sequence[Any] | None = None, filter: Filter | None = None) -> int:
        body: dict[str, Any] = {"collectionName": name}
        if ids is not None:
            body["ids"] = self._ids(ids)
        if filter is not None:
            body["filter"] = filter_text(filter)
        return int((await self._data("entities/delete", body))["deleteCount"])

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
        try:
            queries = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidRequest("vectors must be a list of float lists or a 2-D array") from None
        if queries.ndim == 1:
            queries = queries[None, :]
        body: dict[str, Any] = {
            "collectionName": name,
            "data": queries,
            "limit": limit,
            "consistencyLevel": consistency_level,
            **self._outputs(output_fields),
            **self._partitions(partition_names),
        }
        if filter is not None:
            body["filter"] = filter_text(filter)
        if search_params is not None:
            body["searchParams"] = search_params_to_rest(search_params)
        if anns_field is not None:
            body["annsField"] = anns_field
        reply = await self._call("entities/search", body)
        rows: list[dict[str, Any]] = reply.get("data") or []
        pk = reply.get("primaryField", "id")
        topks = reply.get("topks") or [len(rows)]
        keep_pk = output_fields is not None and not isinstance(output_fields, str) and (
            pk in output_fields or "*" in output_fields
        )
        results: list[list[Hit]] = []
        start = 0
        for k in topks:
            results.append([self._hit(row, pk, keep_pk) for row in rows[start : start + k]])
            start += k
        return results

    @staticmethod
    def _hit(row: dict[str, Any], pk: str, keep_pk: bool) -> Hit:
        entity = dict(row)
        distance = float(entity.pop("distance"))
        pk_value = entity[pk] if keep_pk else entity.pop(pk)
        return Hit(pk_value, distance, entity)

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
        body: dict[str, Any] = {
            "collectionName": name,
            "filter": filter_text(filter),
            "offset": offset,
            "consistencyLevel": consistency_level,
            **self._outputs(output_fields),
            **self._partitions(partition_names),
        }
        if limit is not None:
            body["limit"] = limit
        return list(await self._data("entities/query", body))

    async def get(
        self, name: str, ids: Sequence[Any], output_fields: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        body = {"collectionName": name, "id": self._ids(ids), **self._outputs(output_fields)}
        return list(await self._data("entities/get", body))

    async def count(self, name: str) -> int:
        return int((await self._data("collections/get_stats", {"collectionName": name}))["rowCount"])

    @staticmethod
    def _ids(ids: Any) -> list[Any]:
        as_list = as_id_list(ids)
        if as_list is None:
            raise InvalidRequest("ids must be a list of primary keys")
        return as_list

    @staticmethod
    def _partitions(partition_names: Sequence[str] | None) -> dict[str, Any]:
        if partition_names is None:
            return {}
        if isinstance(partition_names, str):
            return {"partitionNames": partition_names}  # the server rejects it, as the embedded client does
        return {"partitionNames": list(partition_names)}

    @staticmethod
    def _outputs(output_fields: Sequence[str] | None) -> dict[str, Any]:
        if output_fields is None:
            return {"defaultOutputFields": True}
        if isinstance(output_fields, str):
            return {"outputFields": output_fields}  # the engine rejects it, as the embedded client does
        return {"outputFields": list(output_fields)}

    # ------------------------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        """Close the connection pool (the server and its data stay up)."""
        await self._http.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
