"""The REST server, spoken to directly: request bodies reproduced from Milvus's RESTful API v2 docs
(quick_setup collection, insert, search, query, get), the error envelope, auth, the size limit, the
request timeout, and the data-directory lock (a second server process is refused)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.errors import LimitExceeded, StageTimeout, Unauthorized
from vectordb.engine import Engine
from vectordb.errors import CollectionNotFound, DataDirLocked, InsecureServer
from vectordb.http_client import HttpClient
from vectordb.rest import Reply, RestApi
from vectordb.server import check_exposure, run_server

from .live_server import LiveServer

REPO_ROOT = Path(__file__).resolve().parents[2]

# The ten entities of Milvus's "quick_setup" examples (Insert Entities page, cURL tab).
QUICK_SETUP_DATA = [
    {"id": 0, "vector": [0.3580376395471989, -0.6023495712049978, 0.18414012509913835, -0.26286205330961354, 0.9029438446296592], "color": "pink_8682"},  # noqa: E501
    {"id": 1, "vector": [0.19886812562848388, 0.06023560599112088, 0.6976963061752597, 0.2614474506242501, 0.838729485096104], "color": "red_7025"},  # noqa: E501
    {"id": 2, "vector": [0.43742130801983836, -0.5597502546264526, 0.6457887650909682, 0.7894058910881185, 0.20785793220625592], "color": "orange_6781"},  # noqa: E501
    {"id": 3, "vector": [0.3172005263489739, 0.9719044792798428, -0.36981146090600725, -0.4860894583077995, 0.95791889146345], "color": "pink_9298"},  # noqa: E501
    {"id": 4, "vector": [0.4452349528804562, -0.8757026943054742, 0.8220779437047674, 0.46406290649483184, 0.30337481143159106], "color": "red_4794"},  # noqa: E501
    {"id": 5, "vector": [0.985825131989184, -0.8144651566660419, 0.6299267002202009, 0.1206906911183383, -0.1446277761879955], "color": "yellow_4222"},  # noqa: E501
    {"id": 6, "vector": [0.8371977790571115, -0.015764369584852833, -0.31062937026679327, -0.562666951622192, -0.8984947637863987], "color": "red_9392"},  # noqa: E501
    {"id": 7, "vector": [-0.33445148015177995, -0.2567135004164067, 0.8987539745369246, 0.9402995886420709, 0.5378064918413052], "color": "grey_8510"},  # noqa: E501
    {"id": 8, "vector": [0.39524717779832685, 0.4000257286739164, -0.5890507376891594, -0.8650502298996872, -0.6140360785406336], "color": "white_9381"},  # noqa: E501
    {"id": 9, "vector": [0.5718280481994695, 0.24070317428066512, -0.3737913482606834, -0.06726932177492717, -0.6980531615588608], "color": "purple_4976"},  # noqa: E501
]
TOKEN = "root:Milvus"


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[Engine]:
    eng = await asyncio.to_thread(Engine.open, tmp_path / "vec", fsync=False)
    try:
        yield eng
    finally:
        await asyncio.to_thread(eng.close)


async def _serve(engine: Engine, **options: Any) -> LiveServer:
    return await asyncio.to_thread(LiveServer(engine, **options).start)


@pytest.fixture
async def server(engine: Engine) -> AsyncIterator[LiveServer]:
    srv = await _serve(engine, token=TOKEN)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


async def call(http: httpx.AsyncClient, endpoint: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = await http.post(f"/v2/vectordb/{endpoint}", json=body)
    assert response.status_code == status, response.text
    payload: dict[str, Any] = response.json()
    return payload


async def ok(http: httpx.AsyncClient, endpoint: str, body: dict[str, Any]) -> Any:
    payload = await call(http, endpoint, body)
    assert payload["code"] == 0, payload
    return payload["data"]


async def _quick_setup(http: httpx.AsyncClient) -> None:
    await ok(http, "collections/create", {"collectionName": "quick_setup", "dimension": 5})
    await ok(http, "entities/insert", {"data": QUICK_SETUP_DATA, "collectionName": "quick_setup"})


# ------------------------------------------------------------------------------ Milvus docs examples


async def test_quick_setup_create_and_describe(http: httpx.AsyncClient) -> None:
    assert await ok(http, "collections/create", {"collectionName": "quick_setup", "dimension": 5}) == {}
    assert await ok(http, "collections/has", {"collectionName": "quick_setup"}) == {"has": True}
    assert await ok(http, "collections/list", {"dbName": "default"}) == ["quick_setup"]
    described = await ok(http, "collections/describe", {"dbName": "default", "collectionName": "quick_setup"})
    assert described["collectionName"] == "quick_setup"
    assert described["autoId"] is False and described["enableDynamicField"] is True
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["id"]["type"] == "Int64" and fields["id"]["primaryKey"] is True
    assert fields["vector"]["type"] == "FloatVector"
    assert fields["vector"]["params"] == [{"key": "dim", "value": "5"}]
    assert described["indexes"] == [{"fieldName": "vector", "indexName": "vector", "metricType": "COSINE"}]
    assert described["load"] == "LoadStateLoaded"
    assert await ok(http, "collections/get_load_state", {"collectionName": "quick_setup"}) == {
        "loadState": "LoadStateLoaded",
        "loadProgress": 100,
    }
    assert await ok(http, "collections/load", {"collectionName": "quick_setup"}) == {}
    assert await ok(http, "collections/release", {"collectionName": "quick_setup"}) == {}


async def test_insert_search_query_get_from_the_docs(http: httpx.AsyncClient) -> None:
    await ok(http, "collections/create", {"collectionName": "quick_setup", "dimension": 5})
    inserted = await ok(http, "entities/insert", {"data": QUICK_SETUP_DATA, "collectionName": "quick_setup"})
    assert inserted == {"insertCount": 10, "insertIds": list(range(10))}
    assert await ok(http, "collections/get_stats", {"collectionName": "quick_setup"}) == {"rowCount": 10}

    search = {
        "collectionName": "quick_setup",
        "data": [[0.3580376395471989, -0.6023495712049978, 0.18414012509913835, -0.26286205330961354, 0.9029438446296592]],  # noqa: E501
        "annsField": "vector",
        "limit": 3,
        "outputFields": ["color"],
    }
    payload = await call(http, "entities/search", search)
    # Milvus's documented response: pink_8682 (id 0, distance 1), red_7025 (id 1, 0.6290165), red_4794 (id 4, 0.5975797)
    assert [(r["id"], r["color"]) for r in payload["data"]] == [(0, "pink_8682"), (1, "red_7025"), (4, "red_4794")]
    assert [r["distance"] for r in payload["data"]] == pytest.approx([1.0, 0.6290165, 0.5975797], abs=1e-5)
    assert all(set(r) == {"id", "distance", "color"} for r in payload["data"])
    assert payload["topks"] == [3]

    bare = await ok(http, "entities/search", {k: v for k, v in search.items() if k != "outputFields"})
    assert all(set(r) == {"id", "distance"} for r in bare)  # Milvus: no outputFields, just id and distance
    two = await call(http, "entities/search", {**search, "data": search["data"] * 2, "limit": 2, "offset": 1})
    assert two["topks"] == [2, 2] and [r["id"] for r in two["data"]] == [1, 4, 1, 4]

    query = {"collectionName": "quick_setup", "filter": 'color like "red_%"', "outputFields": ["color"], "limit": 3}
    assert await ok(http, "entities/query", query) == [
        {"id": 1, "color": "red_7025"},
        {"id": 4, "color": "red_4794"},
        {"id": 6, "color": "red_9392"},
    ]
    got = await ok(http, "entities/get", {"collectionName": "quick_setup", "id": [1, 3, 5], "outputFields": ["color"]})
    assert got == [{"id": 1, "color": "red_7025"}, {"id": 3, "color": "pink_9298"}, {"id": 5, "color": "yellow_4222"}]
    # Milvus: query and get without outputFields return every non-vector field.
    assert await ok(http, "entities/get", {"collectionName": "quick_setup", "id": 7}) == [
        {"id": 7, "color": "grey_8510"}]
    assert await ok(http, "entities/query", {"collectionName": "quick_setup", "filter": "id == 8"}) == [
        {"id": 8, "color": "white_9381"}]

    upserted = await ok(http, "entities/upsert", {"collectionName": "quick_setup", "data": QUICK_SETUP_DATA[:2]})
    assert upserted == {"upsertCount": 2, "upsertIds": [0, 1]}
    deleted = await ok(http, "entities/delete", {"collectionName": "quick_setup", "filter": "id in [3, 4, 5]"})
    assert deleted == {"deleteCount": 3}
    assert await ok(http, "collections/get_stats", {"collectionName": "quick_setup"}) == {"rowCount": 7}
    # docvec's extension: every match in key order, then the page (ids 0 and 1 were just rewritten)
    ordered = await ok(http, "entities/query", {"collectionName": "quick_setup", "filter": "id >= 0",
                                                "outputFields": ["color"], "orderByPrimaryKey": True,
                                                "limit": 4, "offset": 1})
    assert [r["id"] for r in ordered] == [1, 2, 6, 7]


async def test_custom_schema_with_index_params(http: httpx.AsyncClient) -> None:
    # The "customized_setup" example: numeric params may arrive as strings.
    body = {
        "collectionName": "customized_setup_2",
        "schema": {
            "autoID": False,
            "enableDynamicField": False,
            "fields": [
                {"fieldName": "my_id", "dataType": "Int64", "isPrimary": True},
                {"fieldName": "my_vector", "dataType": "FloatVector", "elementTypeParams": {"dim": "5"}},
                {"fieldName": "my_varchar", "dataType": "VarChar", "elementTypeParams": {"max_length": 512}},
                {"fieldName": "my_json", "dataType": "JSON"},
                {"fieldName": "my_double", "dataType": "Double"},
            ],
        },
        "indexParams": [
            {
                "fieldName": "my_vector",
                "indexName": "my_vector",
                "metricType": "IP",
                "indexType": "HNSW",
                "params": {"M": 16, "efConstruction": "64"},
            }
        ],
    }
    await ok(http, "collections/create", body)
    described = await ok(http, "collections/describe", {"collectionName": "customized_setup_2"})
    assert [f["type"] for f in described["fields"]] == ["Int64", "FloatVector", "VarChar", "JSON", "Double"]
    assert described["enableDynamicField"] is False
    index = await ok(http, "indexes/describe", {"collectionName": "customized_setup_2", "indexName": "my_vector"})
    assert index[0]["indexType"] == "HNSW" and index[0]["metricType"] == "IP"
    assert index[0]["params"] == {"M": 16, "efConstruction": 64}
    assert await ok(http, "indexes/list", {"collectionName": "customized_setup_2"}) == ["my_vector"]
    new_index = {"fieldName": "my_vector", "metricType": "IP", "indexType": "IVF_FLAT", "params": {"nlist": 8}}
    await ok(http, "indexes/create", {"collectionName": "customized_setup_2", "indexParams": [new_index]})
    index = await ok(http, "indexes/describe", {"collectionName": "customized_setup_2"})
    assert index[0]["indexType"] == "IVF_FLAT"


async def test_partitions(http: httpx.AsyncClient) -> None:
    await _quick_setup(http)
    base = {"collectionName": "quick_setup"}
    assert await ok(http, "partitions/list", base) == ["_default"]
    assert await ok(http, "partitions/has", {**base, "partitionName": "_default"}) == {"has": True}
    assert await ok(http, "partitions/has", {**base, "partitionName": "partitionA"}) == {"has": False}
    assert await ok(http, "partitions/get_stats", {**base, "partitionName": "_default"}) == {"rowCount": 10}
    assert await ok(http, "partitions/load", {**base, "partitionNames": ["_default"]}) == {}
    missing = await call(http, "entities/insert", {**base, "partitionName": "partitionA", "data": QUICK_SETUP_DATA})
    assert missing["code"] == 200
    assert await ok(http, "partitions/create", {**base, "partitionName": "partitionA"}) == {}
    assert (await call(http, "partitions/create", {**base, "partitionName": "partitionA"}))["code"] == 1853
    rows = [{**row, "id": row["id"] + 100} for row in QUICK_SETUP_DATA[:3]]
    await ok(http, "entities/insert", {**base, "partitionName": "partitionA", "data": rows})
    assert await ok(http, "partitions/list", base) == ["_default", "partitionA"]
    assert await ok(http, "partitions/get_stats", {**base, "partitionName": "partitionA"}) == {"rowCount": 3}
    found = await ok(http, "entities/query", {**base, "filter": "id >= 0", "partitionNames": ["partitionA"]})
    assert sorted(r["id"] for r in found) == [100, 101, 102]
    search = {**base, "data": [QUICK_SETUP_DATA[0]["vector"]], "limit": 10, "partitionNames": ["partitionA"]}
    assert {r["id"] for r in await ok(http, "entities/search", search)} == {100, 101, 102}
    assert await ok(http, "partitions/drop", {**base, "partitionName": "partitionA"}) == {}
    assert await ok(http, "collections/get_stats", base) == {"rowCount": 10}
    assert (await call(http, "partitions/drop", {**base, "partitionName": "_default"}))["code"] == 1100


async def test_release_and_load(http: httpx.AsyncClient) -> None:
    await _quick_setup(http)
    base = {"collectionName": "quick_setup"}
    assert await ok(http, "collections/release", base) == {}
    assert (await ok(http, "collections/get_load_state", base))["loadState"] == "LoadStateNotLoad"
    refused = await call(http, "entities/search", {**base, "data": [QUICK_SETUP_DATA[0]["vector"]]})
    assert refused["code"] == 101 and "not loaded" in refused["message"]
    assert await ok(http, "collections/load", base) == {}
    assert (await ok(http, "collections/get_load_state", base))["loadState"] == "LoadStateLoaded"


# ----------------------------------------------------------------------------------- error envelope


@pytest.mark.parametrize(
    ("endpoint", "body", "code", "words"),
    [
        ("collections/describe", {"collectionName": "nope"}, 100, "does not exist"),
        ("entities/query", {"collectionName": "nope", "filter": "id > 1"}, 100, "nope"),
        ("collections/describe", {}, 1802, "collectionName"),
        ("collections/describe", {"collectionName": 5}, 1801, "string"),
        ("collections/list", {"dbName": "other"}, 800, "database"),
        ("collections/create", {"collectionName": "a"}, 1802, "dimension"),
        ("collections/create", {"collectionName": "a", "dimension": 0}, 105, "dim"),
        ("collections/create", {"collectionName": "a", "dimension": 4, "idType": "VarChar"}, 1802, "max_length"),
        ("collections/create", {"collectionName": "quick_setup", "dimension": 6}, 1851, "already exists"),
        ("entities/insert", {"collectionName": "quick_setup", "data": [{"id": 0}]}, 1804, "missing field"),
        ("entities/insert", {"collectionName": "quick_setup", "data": QUICK_SETUP_DATA[:1]}, 1806, "primary key"),
        ("entities/query", {"collectionName": "quick_setup", "filter": "id >"}, 1100, "position"),
        ("entities/query", {"collectionName": "quick_setup", "filter": "(" * 1500 + "id > 1" + ")" * 1500}, 1100,
         "levels deep (the limit)"),
        ("entities/delete", {"collectionName": "quick_setup", "filter": "not " * 1000 + "id > 1"}, 1100,
         "levels deep (the limit)"),
        ("entities/search", {"collectionName": "quick_setup", "data": [[1] * 5], "filter": "(" * 200 + "id > 1"},
         1100, "levels deep (the limit)"),
        ("entities/search", {"collectionName": "quick_setup", "data": [[1, 2]]}, 1100, "shape"),
        ("entities/search", {"collectionName": "quick_setup", "data": [[1] * 5], "annsField": "x"}, 1100, "anns_field"),
        ("indexes/drop", {"collectionName": "quick_setup", "indexName": "vector"}, 1100, "not supported"),
    ],
)
async def test_error_envelope(http: httpx.AsyncClient, endpoint: str, body: dict, code: int, words: str) -> None:
    await _quick_setup(http)
    payload = await call(http, endpoint, body)
    assert payload["code"] == code and words in payload["message"], payload
    assert set(payload) == {"code", "message"}


async def test_malformed_requests(http: httpx.AsyncClient) -> None:
    bad_json = await http.post("/v2/vectordb/collections/list", content=b"{not json")
    assert bad_json.status_code == 200 and bad_json.json()["code"] == 1801
    not_object = await http.post("/v2/vectordb/collections/list", content=b"[1, 2]")
    assert not_object.json()["code"] == 1801
    unknown = await http.post("/v2/vectordb/collections/explode", json={})
    assert unknown.status_code == 404 and unknown.json()["code"] == 1100
    wrong_method = await http.get("/v2/vectordb/collections/list")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == 1100
    assert (await http.post("/v2/vectordb/collections/list")).json() == {"code": 0, "data": []}  # empty body


# ----------------------------------------------------------------------------------- auth and limits


async def test_auth_required_when_the_server_has_a_token(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url) as raw:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = await raw.post("/v2/vectordb/collections/list", json={}, headers=headers)
            assert response.status_code == 401
            assert response.json()["code"] == 1800
        good = await raw.post("/v2/vectordb/collections/list", json={}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert good.json() == {"code": 0, "data": []}
    async with HttpClient(server.url, token="wrong") as client:
        with pytest.raises(Unauthorized):
            await client.list_collections()
    async with HttpClient(server.url, token=TOKEN) as client:
        assert await client.list_collections() == []


async def test_body_size_limit(engine: Engine) -> None:
    srv = await _serve(engine, max_body_bytes=2048)
    try:
        async with HttpClient(srv.url) as client:
            await client.create_collection("c", _schema(5))
            with pytest.raises(LimitExceeded, match="2048 bytes"):
                await client.insert("c", [{"id": i, "vector": [0.5] * 5} for i in range(100)])
            assert await client.insert("c", [{"id": 1, "vector": [0.5] * 5}]) == [1]
        async with httpx.AsyncClient(base_url=srv.url) as raw:
            big = await raw.post("/v2/vectordb/collections/list", content=b" " * 4096)
            assert big.status_code == 413 and big.json()["code"] == 1102

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
                for _ in range(8):
                    yield b" " * 512

            streamed = await raw.post("/v2/vectordb/collections/list", content=chunks())
            assert streamed.status_code == 413
    finally:
        await asyncio.to_thread(srv.stop)


async def test_request_timeout(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    async def slow_stats(self: RestApi, body: Any) -> Reply:
        await asyncio.sleep(5)
        return Reply({})

    monkeypatch.setattr(RestApi, "get_stats", slow_stats)
    srv = await _serve(engine, request_timeout_s=0.2)
    try:
        async with HttpClient(srv.url) as client:
            started = time.monotonic()
            with pytest.raises(StageTimeout, match="timed out after 0.2 s"):
                await client.count("anything")
            assert time.monotonic() - started < 3
            assert await client.list_collections() == []  # still serving
    finally:
        await asyncio.to_thread(srv.stop)


def _schema(dim: int) -> Any:
    from vectordb.schema import CollectionSchema, DataType, FieldSchema

    return CollectionSchema(
        (FieldSchema("id", DataType.INT64, is_primary=True), FieldSchema("vector", DataType.FLOAT_VECTOR, dim=dim))
    )


# ------------------------------------------------------------------------------ exposure without a token


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "vectordb.internal"])
def test_a_non_loopback_host_needs_a_token(host: str) -> None:
    with pytest.raises(InsecureServer, match=f"on {re.escape(host)} without a token"):
        check_exposure(host, "")
    check_exposure(host, "secret")
    check_exposure(host, "", insecure_no_token=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_needs_no_token(host: str) -> None:
    check_exposure(host, "")


@pytest.mark.parametrize(
    "cmd",
    [
        [sys.executable, "-m", "vectordb.server", "--host", "0.0.0.0"],
        [sys.executable, "-m", "docvec_cli", "vectordb", "--host", "0.0.0.0"],
    ],
    ids=["python -m vectordb.server", "docvec vectordb"],
)
def test_the_server_refuses_to_start_open_to_the_network(tmp_path: Path, cmd: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DOCVEC_VECTORDB__TOKEN"}
    env["DOCVEC_DATA_DIR"] = str(tmp_path)
    done = subprocess.run([*cmd, "--port", str(_free_port()), "--data", str(tmp_path / "vec")], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.split())
    assert "refusing to serve the vector store on 0.0.0.0 without a token" in message
    assert "--insecure-no-token" in message
    assert not (tmp_path / "vec").exists()  # refused before the data directory was touched


# ------------------------------------------------------------------------------ the data-directory lock


def test_run_server_refuses_a_locked_directory(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "vec", fsync=False), pytest.raises(DataDirLocked, match="in use"):
        run_server(str(tmp_path / "vec"), port=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _server_cmd(data: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "vectordb.server", "--data", str(data), "--port", str(port), "--no-fsync",
            "--token", TOKEN]


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = _free_port()
    proc = subprocess.Popen(_server_cmd(tmp_path / "vec", port), cwd=REPO_ROOT, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "server process did not start"
                time.sleep(0.05)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


async def test_second_server_process_is_refused_and_sigterm_stops_cleanly(
    tmp_path: Path, server_process: tuple[subprocess.Popen[bytes], str]
) -> None:
    proc, url = server_process
    async with HttpClient(url, token=TOKEN) as client:
        await client.create_collection("c", _schema(4))
        await client.insert("c", [{"id": 1, "vector": [1.0, 0.0, 0.0, 0.0]}])
        with pytest.raises(CollectionNotFound):
            await client.count("other")

    second = await asyncio.create_subprocess_exec(
        *_server_cmd(tmp_path / "vec", _free_port()), cwd=REPO_ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(second.communicate(), timeout=30)
    assert second.returncode == 2
    assert "in use by another engine" in err.decode() and f"pid {proc.pid}" in err.decode()

    os.kill(proc.pid, signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 20) == 0
    with Engine.open(tmp_path / "vec", fsync=False) as reopened:  # the lock was released, the row kept
        assert reopened.count("c") == 1
