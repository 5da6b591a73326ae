from __future__ import annotations

import asyncio

import numpy as np
import pytest

import vectordb
from vectordb.errors import CollectionNotFound, UnsupportedUri
from vectordb.schema import IndexParams

from .conftest import clustered, make_rows, make_schema


async def test_async_round_trip(tmp_path):
    client = vectordb.connect(str(tmp_path / "vec"))
    try:
        await client.create_collection("docs", make_schema(16), index=IndexParams("FLAT", "COSINE"), if_not_exists=True)
        assert await client.has_collection("docs")
        assert await client.list_collections() == ["docs"]
        assert (await client.describe_collection("docs")).dim == 16
        data = clustered(200, 16)
        ids = await asyncio.gather(*(client.insert("docs", make_rows(data[i : i + 50], i)) for i in range(0, 200, 50)))
        assert sorted(i for part in ids for i in part) == list(range(200))
        assert await client.upsert("docs", make_rows(data[:3])) == [0, 1, 2]
        assert await client.count("docs") == 200
        hits = await client.search("docs", data[:2], limit=3, output_fields=["title"])
        assert [h[0].id for h in hits] == [0, 1]
        assert hits[0][0].distance == pytest.approx(1.0, abs=1e-5)
        assert hits[0][0].entity == {"title": "doc-0"}
        rows = await client.query("docs", filter="n < 2", output_fields=["n"], consistency_level="Bounded")
        assert sorted(r["id"] for r in rows) == [0, 1, 100, 101]
        assert await client.delete("docs", filter="n < 2") == 4
        assert await client.get("docs", [0, 2], output_fields=["n"]) == [{"id": 2, "n": 2}]
        await client.flush("docs")
        assert await client.count("docs") == 196
        await client.drop_collection("docs")
        with pytest.raises(CollectionNotFound):
            await client.count("docs")
    finally:
        await client.close()


async def test_event_loop_stays_responsive(tmp_path):
    client = vectordb.connect(str(tmp_path / "vec"))
    try:
        await client.create_collection("c", make_schema(16), index=IndexParams("HNSW"))
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        t = asyncio.create_task(ticker())
        await client.insert("c", make_rows(clustered(3000, 16)))
        await client.flush("c")  # builds an HNSW index off the loop
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert ticks > 5
    finally:
        await client.close()


@pytest.mark.parametrize("uri", ["tcp://host:19530", "grpc://host:19530"])
def test_remote_uris_not_implemented_yet(uri):
    with pytest.raises(UnsupportedUri) as info:
        vectordb.connect(uri)
    assert isinstance(info.value, NotImplementedError)


def test_search_accepts_numpy_and_lists(tmp_path):
    eng = vectordb.open_engine(tmp_path / "v")
    try:
        eng.create_collection("c", make_schema(16), IndexParams("FLAT", "IP"))
        data = clustered(20, 16)
        eng.insert("c", make_rows(data))
        a = eng.search("c", data[0], limit=2)
        b = eng.search("c", [data[0].tolist()], limit=2)
        assert a == b and np.isclose(a[0][0].distance, float(data[a[0][0].id] @ data[0]))
    finally:
        eng.close()
