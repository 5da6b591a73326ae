"""MilvusBackendClient specifics: URI mapping, error mapping, and the paging it emulates over Milvus Lite.

Behaviour shared with the other backends is tested once, in test_backends.py.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import vectordb
from common.errors import InvalidRequest, TransientError
from vectordb.engine import Engine
from vectordb.errors import CollectionNotFound
from vectordb.schema import DataType

from .conftest import make_rows, make_schema
from .live_grpc_server import LiveGrpcServer

_MISSING = [name for name in ("pymilvus", "milvus_lite") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"{' and '.join(_MISSING)} not installed")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("milvus://127.0.0.1:19530", "http://127.0.0.1:19530"),
        ("milvus://localhost:19530", "http://localhost:19530"),
        ("milvus:///tmp/vectors/x.db", "/tmp/vectors/x.db"),
        ("milvus://./x.db", "./x.db"),
        ("milvus://x.db", "x.db"),
    ],
)
def test_milvus_uri(uri: str, expected: str) -> None:
    from vectordb.milvus_client import milvus_uri

    assert milvus_uri(uri) == expected


async def test_connect_returns_the_milvus_client(tmp_path: Path) -> None:
    from vectordb.milvus_client import MilvusBackendClient

    client = vectordb.connect(f"milvus://{tmp_path / 'x.db'}")
    try:
        assert isinstance(client, MilvusBackendClient)
    finally:
        await client.close()


def test_errors_are_mapped_by_class_and_code() -> None:
    from pymilvus.exceptions import CollectionNotExistException, MilvusException, MilvusUnavailableException

    from vectordb.milvus_client import _translate

    assert type(_translate(MilvusException(code=100, message="x"))) is CollectionNotFound
    assert type(_translate(CollectionNotExistException(message="x"))) is CollectionNotFound
    assert type(_translate(MilvusUnavailableException(message="x"))) is TransientError
    assert type(_translate(MilvusException(code=65535, message="x", retriable=True))) is TransientError
    assert type(_translate(MilvusException(code=8, message="x"))) is TransientError
    # the message text plays no part: "collection not found" in a parameter error is still bad input
    assert type(_translate(MilvusException(code=1100, message="collection not found"))) is InvalidRequest


@pytest.fixture(params=["lite", "docvec-grpc"])
async def milvus(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """The client over Milvus Lite, and over `docvec vectordb`'s gRPC front end."""
    import vectordb.milvus_client as module

    monkeypatch.setattr(module, "QUERY_PAGE_ROWS", 7)  # many pages from a few rows
    engine = server = None
    if request.param == "lite":
        client = vectordb.connect(f"milvus://{tmp_path / 'x.db'}")
    else:
        engine = await asyncio.to_thread(Engine.open, tmp_path / "vec", fsync=False)
        server = await asyncio.to_thread(LiveGrpcServer(engine).start)
        client = await asyncio.to_thread(vectordb.connect, f"milvus://127.0.0.1:{server.port}")
    try:
        yield client
    finally:
        await client.close()
        if server is not None:
            await asyncio.to_thread(server.stop)
        if engine is not None:
            await asyncio.to_thread(engine.close)


@pytest.mark.parametrize("pk", [DataType.INT64, DataType.VARCHAR])
async def test_query_pages_past_milvus_cap(milvus: Any, pk: DataType) -> None:
    client = milvus
    await client.create_collection("docs", make_schema(4, pk=pk))
    rows = make_rows(np.ones((40, 4), dtype=np.float32))
    if pk is DataType.VARCHAR:
        for row in rows:
            row["id"] = f"k{row['id']:03d}"  # pymilvus's iterator does not escape quotes in its pk cursor
    order = np.random.default_rng(1).permutation(len(rows))
    for part in np.array_split(order, 4):  # several inserts and a flush: more than one segment
        await client.insert("docs", [rows[i] for i in part])
        await client.flush("docs")
    want = sorted(r["id"] for r in rows)
    everything = await client.query("docs", output_fields=[])  # beyond one page: walks an iterator
    assert [r["id"] for r in everything] == want
    page = await client.query("docs", filter="n >= 5", output_fields=["n"], limit=9, offset=11)
    assert [r["id"] for r in page] == sorted(r["id"] for r in rows if r["n"] >= 5)[11:20]
    first = await client.query("docs", output_fields=[], limit=3)  # within one page: Milvus's own order
    second = await client.query("docs", output_fields=[], limit=3, offset=3)
    assert len(first) == len(second) == 3 and not {r["id"] for r in first} & {r["id"] for r in second}
    assert await client.delete("docs", filter="n >= 5") == 35
    assert await client.count("docs") == 5


async def test_if_not_exists_accepts_the_same_schema_even_though_milvus_drops_descriptions(tmp_path) -> None:
    from vectordb.chunkstore import chunk_schema

    client = vectordb.connect(f"milvus://{tmp_path / 'm.db'}")
    try:
        schema = chunk_schema(8)
        assert schema.description
        await client.create_collection("chunks", schema, if_not_exists=True)
        await client.create_collection("chunks", schema, if_not_exists=True)  # the worker's ensure_collection
        assert await client.list_collections() == ["chunks"]
    finally:
        await client.close()
