"""One behavioural suite over every client backend: the embedded client, HttpClient against a real server,
and MilvusBackendClient over Milvus Lite (a local .db file).

Callers must not be able to tell them apart: same results, same exception classes.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vectordb
from common.errors import InvalidRequest
from vectordb.base import ColumnBatch, VectorStore
from vectordb.client import EmbeddedClient
from vectordb.engine import Engine
from vectordb.errors import (
    CollectionExists,
    CollectionNotFound,
    DuplicatePrimaryKey,
    FilterError,
    InvalidName,
    RowError,
)
from vectordb.filters import Where
from vectordb.http_client import HttpClient
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

from .conftest import clustered, make_rows, make_schema
from .live_grpc_server import LiveGrpcServer
from .live_server import LiveServer

REPO_ROOT = Path(__file__).resolve().parents[2]


class Backend:
    """A client of one kind over a data directory, which `restart()` closes and reopens."""

    def __init__(self, kind: str, directory: Path) -> None:
        self.kind = kind
        self.directory = directory
        self.engine: Engine | None = None
        self.server: LiveServer | None = None
        self.grpc: LiveGrpcServer | None = None
        self.client: Any = None

    async def open(self) -> Any:
        if self.kind == "embedded":
            self.client = vectordb.connect(str(self.directory), fsync=False)
        elif self.kind == "milvus":
            self.directory.mkdir(parents=True, exist_ok=True)
            self.client = await asyncio.to_thread(vectordb.connect, f"milvus://{self.directory / 'milvus.db'}")
        elif self.kind == "grpc":  # MilvusBackendClient (pymilvus) over docvec vectordb's gRPC front end
            self.engine = await asyncio.to_thread(Engine.open, self.directory, fsync=False)
            self.grpc = await asyncio.to_thread(LiveGrpcServer(self.engine).start)
            self.client = await asyncio.to_thread(vectordb.connect, f"milvus://127.0.0.1:{self.grpc.port}")
        else:
            self.engine = await asyncio.to_thread(Engine.open, self.directory, fsync=False)
            self.server = await asyncio.to_thread(LiveServer(self.engine).start)
            self.client = vectordb.connect(self.server.url, retry_attempts=2)
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None
        if self.server is not None:
            await asyncio.to_thread(self.server.stop)
            self.server = None
        if self.grpc is not None:
            await asyncio.to_thread(self.grpc.stop)
            self.grpc = None
        if self.engine is not None:
            await asyncio.to_thread(self.engine.close)
            self.engine = None

    async def restart(self) -> Any:
        await self.close()
        return await self.open()


_MISSING_MILVUS = [name for name in ("pymilvus", "milvus_lite") if importlib.util.find_spec(name) is None]
MILVUS = pytest.param(
    "milvus",
    marks=pytest.mark.skipif(bool(_MISSING_MILVUS), reason=f"{' and '.join(_MISSING_MILVUS)} not installed"),
)


_MISSING_GRPC = [name for name in ("pymilvus", "grpc") if importlib.util.find_spec(name) is None]
GRPC = pytest.param(
    "grpc", marks=pytest.mark.skipif(bool(_MISSING_GRPC), reason=f"{' and '.join(_MISSING_GRPC)} not installed")
)


@pytest.fixture(params=["embedded", "http", MILVUS, GRPC])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = Backend(request.param, tmp_path / "vec")
    await b.open()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def client(backend: Backend) -> Any:
    return backend.client


async def _filled(client: Any, n: int = 200, dim: int = 16, index: IndexParams | None = None) -> np.ndarray:
    await client.create_collection("docs", make_schema(dim), index=index or IndexParams("FLAT", "COSINE"))
    data = clustered(n, dim)
    await client.insert("docs", make_rows(data))
    return data


async def test_collection_lifecycle(client: Any) -> None:
    schema = make_schema(16, dynamic=True, pk=DataType.VARCHAR)
    index = IndexParams("HNSW", "IP", {"M": 8, "efConstruction": 40})
    await client.create_collection("c1", schema, index=index)
    assert await client.has_collection("c1")
    assert not await client.has_collection("nope")
    assert await client.list_collections() == ["c1"]
    assert await client.describe_collection("c1") == schema
    assert await client.describe_index("c1") == index
    await client.create_collection("c1", schema, index=index, if_not_exists=True)  # identical: fine
    with pytest.raises(CollectionExists):
        await client.create_collection("c1", make_schema(8), if_not_exists=True)
    with pytest.raises(CollectionExists):
        await client.create_collection("c1", schema, index=index)
    await client.drop_collection("c1")
    await client.drop_collection("c1")  # dropping a missing collection is not an error
    assert not await client.has_collection("c1")
    assert await client.list_collections() == []


async def test_insert_upsert_duplicate(client: Any) -> None:
    data = await _filled(client, 50)
    assert await client.count("docs") == 50
    with pytest.raises(DuplicatePrimaryKey):
        await client.insert("docs", make_rows(data[:1]))
    with pytest.raises(DuplicatePrimaryKey):
        await client.insert("docs", make_rows(data[:1], 100) * 2)
    rows = make_rows(data[:3])
    for row in rows:
        row["title"] = "changed"
    assert await client.upsert("docs", rows) == [0, 1, 2]
    assert await client.count("docs") == 50
    got = await client.get("docs", [0, 1, 2, 999], output_fields=["title"])
    assert got == [{"id": i, "title": "changed"} for i in range(3)]
    # numpy vectors and numpy scalars are accepted by both backends
    row = make_rows(data[:1], 500)[0]
    row["vec"], row["n"] = data[0], np.int64(7)
    assert await client.insert("docs", [row]) == [500]


async def test_delete_by_ids_and_filter(client: Any) -> None:
    await _filled(client, 200)
    assert await client.delete("docs", ids=[0, 1, 2, 12345]) == 3
    assert await client.delete("docs", filter="n < 10") == 17  # ids 3..9 and 100..109
    assert await client.delete("docs", filter="n < 10") == 0
    assert await client.count("docs") == 180
    for bad in ({}, {"ids": [1], "filter": "n > 1"}, {"filter": ""}):
        with pytest.raises(InvalidRequest):
            await client.delete("docs", **bad)


async def test_query_filters_limit_offset(client: Any) -> None:
    await _filled(client, 200)
    rows = await client.query("docs", filter="n < 3", output_fields=["n"])
    assert sorted(r["id"] for r in rows) == [0, 1, 2, 100, 101, 102]
    assert all(set(r) == {"id", "n"} for r in rows)
    everything = await client.query("docs", filter="ok == true and title like \"doc-1%\"")
    assert everything and all(set(r) == {"id", "title", "n", "score", "ok", "meta"} for r in everything)
    page1 = await client.query("docs", filter="n >= 0", output_fields=[], limit=5)
    page2 = await client.query("docs", filter="n >= 0", output_fields=[], limit=5, offset=5)
    assert len(page1) == len(page2) == 5 and not {r["id"] for r in page1} & {r["id"] for r in page2}
    expr = 'meta["bucket"] == 4 and n in [4, 5, 9] and id < 100'
    assert await client.query("docs", filter=expr, output_fields=["n"]) == [{"id": 4, "n": 4}, {"id": 9, "n": 9}]
    assert len(await client.query("docs", output_fields=["*"], limit=2)) == 2
    assert "vec" in (await client.query("docs", output_fields=["*"], limit=1))[0]


async def test_get(client: Any) -> None:
    data = await _filled(client, 20)
    got = await client.get("docs", np.array([3, 1]), output_fields=["vec"])
    assert [g["id"] for g in got] == [3, 1]
    np.testing.assert_array_equal(np.asarray(got[0]["vec"], dtype=np.float32), data[3])
    assert await client.get("docs", []) == []
    full = await client.get("docs", [5])
    assert full[0]["meta"] == {"bucket": 0, "tags": ["a", "b"]}


async def test_flush_and_restart_keep_data(backend: Backend) -> None:
    client = backend.client
    data = await _filled(backend.client, 100, index=IndexParams("HNSW"))
    await client.flush("docs")
    await client.insert("docs", make_rows(clustered(30, 16, seed=3), 100))  # in the WAL only
    await client.delete("docs", ids=[0, 120])
    before = await client.search("docs", data[:3], limit=5, output_fields=["title"])
    client = await backend.restart()
    assert await client.count("docs") == 128
    assert await client.get("docs", [0, 1, 129], output_fields=["n"]) == [{"id": 1, "n": 1}, {"id": 129, "n": 29}]
    assert await client.search("docs", data[:3], limit=5, output_fields=["title"]) == before


def _columns(vectors: np.ndarray, start: int = 0) -> ColumnBatch:
    rows = make_rows(vectors, start)
    names = ["title", "n", "score", "ok", "meta"]
    return ColumnBatch(
        ids=[r["id"] for r in rows],
        vectors=vectors,
        columns={name: [r[name] for r in rows] for name in names},
        vector_field="vec",
    )


async def test_column_batches_write_what_rows_write(client: Any) -> None:
    data = clustered(40, 16)
    await client.create_collection("docs", make_schema(16), index=IndexParams("FLAT", "COSINE"))
    await client.create_collection("rows", make_schema(16), index=IndexParams("FLAT", "COSINE"))
    assert await client.insert("docs", _columns(data)) == list(range(40))
    await client.insert("rows", make_rows(data))
    assert await client.query("docs", filter="n >= 0") == await client.query("rows", filter="n >= 0")
    changed = _columns(data[:2])
    changed.columns["title"][:] = ["changed", "changed"]
    assert await client.upsert("docs", changed) == [0, 1]
    assert await client.get("docs", [0, 1, 2], output_fields=["title"]) == [
        {"id": 0, "title": "changed"}, {"id": 1, "title": "changed"}, {"id": 2, "title": "doc-2"}
    ]
    hits = await client.search("docs", data[5:6], limit=1)
    assert hits[0][0].id == 5
    with pytest.raises(DuplicatePrimaryKey):
        await client.insert("docs", _columns(data[:1]))
    bad = _columns(data[:2])
    for broken in (
        ColumnBatch(bad.ids, data[:2, :8], bad.columns, vector_field="vec"),  # wrong dim
        ColumnBatch(bad.ids, data[:2], {k: v for k, v in bad.columns.items() if k != "n"}, vector_field="vec"),
        ColumnBatch(bad.ids, data[:2], {**bad.columns, "n": ["x", "y"]}, vector_field="vec"),
        ColumnBatch(bad.ids, np.full((2, 16), np.nan, np.float32), bad.columns, vector_field="vec"),
    ):
        with pytest.raises(RowError):
            await client.insert("docs", broken)
    assert await client.count("docs") == 40


async def test_where_filters_match_their_text(client: Any) -> None:
    await _filled(client, 200)
    where = Where.one_of("n", [4, 5, 9]) & Where.ne("title", "doc-4") & Where.eq("ok", True)
    text = 'n in [4, 5, 9] and title != "doc-4" and ok == true'
    assert where.text() == text
    by_where = await client.query("docs", filter=where, output_fields=["n"])
    assert by_where == await client.query("docs", filter=text, output_fields=["n"]) and by_where
    hits = await client.search("docs", [[0.1] * 16], limit=5, filter=Where.eq("n", 7))
    assert hits[0] and all(h.id % 100 == 7 for h in hits[0])
    assert await client.delete("docs", filter=Where.eq("n", 3)) == 2
    assert await client.query("docs", filter=Where.eq("n", 3)) == []
    for bad in (Where.eq("nope", 1), Where.eq("n", "seven"), Where.eq("vec", 1)):
        with pytest.raises(FilterError):
            await client.query("docs", filter=bad)


async def test_partitions(client: Any) -> None:
    data = await _filled(client, 20)
    await client.create_partition("docs", "p1")
    assert await client.has_partition("docs", "p1") and not await client.has_partition("docs", "p2")
    assert sorted(await client.list_partitions("docs")) == ["_default", "p1"]
    await client.insert("docs", make_rows(clustered(10, 16, seed=5), 100), partition_name="p1")
    await client.upsert("docs", make_rows(clustered(2, 16, seed=6), 200), partition_name="p1")
    in_p1 = await client.query("docs", filter="n >= 0", output_fields=[], partition_names=["p1"])
    assert sorted(r["id"] for r in in_p1) == [*range(100, 110), 200, 201]
    hits = await client.search("docs", data[:1], limit=30, partition_names=["p1"])
    assert {h.id for h in hits[0]} == {*range(100, 110), 200, 201}
    assert await client.count("docs") == 32
    await client.release_collection("docs")
    await client.drop_partition("docs", "p1")
    await client.load_collection("docs")
    assert await client.list_partitions("docs") == ["_default"]
    assert await client.count("docs") == 20
    with pytest.raises(InvalidRequest):
        await client.drop_partition("docs", "_default")


async def test_load_release_compact_and_index(backend: Backend) -> None:
    client = backend.client
    data = await _filled(client, 100)
    assert await client.get_load_state("docs") == "LoadStateLoaded"
    await client.release_collection("docs")
    assert await client.get_load_state("docs") == "LoadStateNotLoad"
    await client.load_collection("docs")
    assert await client.get_load_state("docs") == "LoadStateLoaded"
    assert await client.get_load_state("missing") == "LoadStateNotExist"
    await client.flush("docs")
    await client.insert("docs", make_rows(clustered(50, 16, seed=2), 100))
    await client.flush("docs")
    await client.delete("docs", filter="n < 10")
    await client.compact("docs")
    assert await client.count("docs") == 130
    index = IndexParams("HNSW", "COSINE", {"M": 8, "efConstruction": 64})
    await client.create_index("docs", index)
    assert await client.describe_index("docs") == index
    hits = await client.search("docs", data[50:51], limit=1)
    assert hits[0][0].id == 50


def test_every_client_has_the_protocols_signatures() -> None:
    """Same methods, same parameters (names, kinds, defaults) on every client as on `VectorStore`."""
    clients = [EmbeddedClient, HttpClient]
    if not _MISSING_MILVUS:
        from vectordb.milvus_client import MilvusBackendClient

        clients.append(MilvusBackendClient)
    wanted = {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(VectorStore, inspect.isfunction)
        if not name.startswith("_")
    }
    assert len(wanted) > 20
    embedded_only = {"engine"}  # the in-process engine itself
    assert {n for n in dir(EmbeddedClient) if not n.startswith("_")} - embedded_only == set(wanted)
    for cls in clients:
        for name, signature in wanted.items():
            member = getattr(cls, name, None)
            assert member is not None, f"{cls.__name__} lacks {name}"
            assert inspect.iscoroutinefunction(member), f"{cls.__name__}.{name} is not async"
            got = inspect.signature(member)
            shape = [(p.name, p.kind, p.default) for p in got.parameters.values()]
            want = [(p.name, p.kind, p.default) for p in signature.parameters.values()]
            assert shape == want, f"{cls.__name__}.{name}{got} differs from VectorStore.{name}{signature}"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda c: c.count("missing"), CollectionNotFound),
        (lambda c: c.insert("missing", [{"id": 1}]), CollectionNotFound),
        (lambda c: c.search("missing", [[0.0] * 16], limit=1), CollectionNotFound),
        (lambda c: c.query("docs", filter="n <"), FilterError),
        (lambda c: c.query("docs", filter="nope == 1"), FilterError),
        (lambda c: c.search("docs", [[0.1] * 16], limit=3, filter="title = 1"), FilterError),
        (lambda c: c.insert("docs", [{"id": 1}]), RowError),
        (lambda c: c.insert("docs", []), RowError),
        (lambda c: c.upsert("docs", [{**make_rows(np.ones((1, 16)))[0], "vec": [1.0] * 3}]), RowError),
        (lambda c: c.create_collection("bad name", make_schema(4)), InvalidName),
        (lambda c: c.create_collection("x", "not a schema"), InvalidRequest),
        (lambda c: c.query("docs", limit=0), InvalidRequest),
        (lambda c: c.query("docs", offset=-1), InvalidRequest),
        (lambda c: c.query("docs", output_fields=["nope"]), InvalidRequest),
        (lambda c: c.query("docs", consistency_level="Sometimes"), InvalidRequest),
        (lambda c: c.get("docs", "abc"), InvalidRequest),
        (lambda c: c.get("docs", ["abc"]), RowError),
        (lambda c: c.delete("docs", ids=7), InvalidRequest),
        (lambda c: c.search("docs", [[0.1] * 3], limit=3), InvalidRequest),
        (lambda c: c.search("docs", [[0.1, "x"]], limit=3), InvalidRequest),
        (lambda c: c.search("docs", [[float("nan")] * 16], limit=3), InvalidRequest),
        (lambda c: c.search("docs", [[0.1] * 16], limit=0), InvalidRequest),
        (lambda c: c.search("docs", [[0.1] * 16], limit=2, search_params={"metric_type": "L2"}), InvalidRequest),
        (lambda c: c.search("docs", [[0.1] * 16], limit=2, search_params={"params": {"ef": 0}}), InvalidRequest),
        (lambda c: c.search("docs", [[0.1] * 16], limit=2, search_params=[1]), InvalidRequest),
    ],
)
async def test_errors_map_to_the_same_types(client: Any, call: Any, expected: type[Exception]) -> None:
    await client.create_collection("docs", make_schema(16))
    with pytest.raises(expected) as info:
        await call(client)
    assert type(info.value) is expected


async def test_search_identical_between_backends(tmp_path: Path) -> None:
    """Both clients over one engine (the HTTP one through a server): every hit must be equal, exactly."""
    engine = await asyncio.to_thread(Engine.open, tmp_path / "vec", fsync=False)
    server = await asyncio.to_thread(LiveServer(engine).start)
    embedded, remote = EmbeddedClient(engine), HttpClient(server.url)
    try:
        schema = make_schema(32, dynamic=True)
        await embedded.create_collection("docs", schema, index=IndexParams("HNSW", "COSINE", {"M": 16}))
        data = clustered(600, 32, clusters=6)
        rows = make_rows(data)
        for i, row in enumerate(rows):
            row["colour"] = ["red", "green", "blue"][i % 3]  # a dynamic field
        await remote.insert("docs", rows[:400])
        await remote.flush("docs")  # a sealed HNSW segment plus a growing one
        await embedded.insert("docs", rows[400:])
        queries = data[::97] + 0.05
        variants: list[dict[str, Any]] = [
            {},
            {"output_fields": []},
            {"output_fields": ["title", "meta"]},
            {"output_fields": ["id", "colour"]},
            {"output_fields": ["*"]},
            {"filter": 'colour == "red" and n > 20'},
            {"filter": "ok", "search_params": {"metric_type": "COSINE", "params": {"ef": 64}}},
            {"search_params": {"ef": 32}, "consistency_level": "Eventually"},
        ]
        for kwargs in variants:
            want = await embedded.search("docs", queries, limit=7, **kwargs)
            got = await remote.search("docs", queries, limit=7, **kwargs)
            assert got == want, kwargs
            assert len(got) == len(queries) and all(len(hits) == 7 for hits in got)
        one = await remote.search("docs", queries[0], limit=3)  # a single vector, 1-D
        assert one == await embedded.search("docs", queries[0], limit=3)
    finally:
        await remote.close()
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(engine.close)


def test_connect_picks_the_transport(tmp_path: Path) -> None:
    assert isinstance(vectordb.connect("http://127.0.0.1:19530", token="t"), HttpClient)
    assert isinstance(vectordb.connect("https://vectors.example:443"), HttpClient)
    with pytest.raises(vectordb.UnsupportedUri):
        vectordb.connect("grpc://127.0.0.1:19530")


async def test_unreachable_server_is_transient() -> None:
    from common.errors import TransientError

    client = HttpClient("http://127.0.0.1:9", retry_attempts=2, retry_backoff_s=0.01)
    try:
        with pytest.raises(TransientError, match="unreachable"):
            await client.count("docs")
    finally:
        await client.close()


# ----------------------------------------------------------------------- concurrent writers, one server


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[tuple[Engine, LiveServer]]:
    engine = await asyncio.to_thread(Engine.open, tmp_path / "vec", fsync=False)
    server = await asyncio.to_thread(LiveServer(engine, token="s3cret").start)
    try:
        yield engine, server
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(engine.close)


def _chunk_schema() -> CollectionSchema:
    return CollectionSchema(
        (
            FieldSchema("id", DataType.VARCHAR, is_primary=True, max_length=32),
            FieldSchema("vector", DataType.FLOAT_VECTOR, dim=8),
            FieldSchema("writer", DataType.INT64),
        )
    )


async def test_concurrent_http_clients_lose_no_acknowledged_row(live: tuple[Engine, LiveServer]) -> None:
    _, server = live
    clients = [HttpClient(server.url, token="s3cret") for _ in range(4)]
    try:
        await clients[0].create_collection("chunks", _chunk_schema())

        async def writer(w: int, client: HttpClient) -> list[str]:
            acked: list[str] = []
            rng = np.random.default_rng(w)
            for batch in range(6):
                rows = [
                    {"id": f"w{w}-{batch}-{i}", "vector": rng.normal(size=8).tolist(), "writer": w} for i in range(25)
                ]
                acked += await (client.upsert if batch % 2 else client.insert)("chunks", rows)
                if batch == 3:
                    await client.flush("chunks")
            return acked

        acked = [i for ids in await asyncio.gather(*(writer(w, c) for w, c in enumerate(clients))) for i in ids]
        assert len(acked) == len(set(acked)) == 4 * 6 * 25
        assert await clients[1].count("chunks") == len(acked)
        got = await clients[2].get("chunks", acked, output_fields=[])
        assert sorted(g["id"] for g in got) == sorted(acked)
    finally:
        for c in clients:
            await c.close()


_WRITER_SCRIPT = """
import asyncio, json, sys
import numpy as np
from vectordb.filters import Where
from vectordb.http_client import HttpClient

async def main(url, w):
    acked = []
    async with HttpClient(url, token="s3cret") as client:
        rng = np.random.default_rng(w)
        for batch in range(5):
            rows = [{"id": f"p{w}-{batch}-{i}", "vector": rng.normal(size=8).tolist(), "writer": w} for i in range(40)]
            acked += await client.insert("chunks", rows)
    print(json.dumps(acked))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_several_processes_write_through_one_server(live: tuple[Engine, LiveServer]) -> None:
    engine, server = live
    client = HttpClient(server.url, token="s3cret")
    try:
        await client.create_collection("chunks", _chunk_schema())
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WRITER_SCRIPT, server.url, str(w),
                cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for w in range(3)
        ]
        outputs = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), timeout=60)
        acked: list[str] = []
        for proc, (out, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err.decode()
            acked += json.loads(out)
        assert len(set(acked)) == 3 * 5 * 40
        assert await client.count("chunks") == len(acked)
        rows = await client.query("chunks", filter="writer >= 0", output_fields=["writer"])
        assert sorted(r["id"] for r in rows) == sorted(acked)
        assert engine.count("chunks") == len(acked)  # the server's own engine agrees
    finally:
        await client.close()
