"""Partitions: create/drop/list, writes into a partition, searches and queries limited to partitions."""

from __future__ import annotations

import pytest

import vectordb
from vectordb.errors import InvalidRequest, PartitionExists, PartitionNotFound
from vectordb.schema import IndexParams

from .conftest import clustered, make_rows, make_schema


@pytest.fixture
def eng(tmp_path):
    e = vectordb.open_engine(tmp_path / "db", fsync=False, seal_rows=10**6)
    e.create_collection("c", make_schema(8), IndexParams("FLAT", "L2"))
    yield e
    e.close()


def test_partition_lifecycle_persists(tmp_path, eng):
    assert eng.list_partitions("c") == ["_default"]
    eng.create_partition("c", "p1")
    with pytest.raises(PartitionExists):
        eng.create_partition("c", "p1")
    with pytest.raises(vectordb.SchemaError):
        eng.create_partition("c", "bad name")
    assert eng.has_partition("c", "p1") and not eng.has_partition("c", "p2")
    eng.close()
    with vectordb.open_engine(tmp_path / "db", fsync=False) as again:
        assert again.list_partitions("c") == ["_default", "p1"]
        again.drop_partition("c", "p1")
        with pytest.raises(PartitionNotFound):
            again.drop_partition("c", "p1")
        with pytest.raises(InvalidRequest):
            again.drop_partition("c", "_default")
        assert again.list_partitions("c") == ["_default"]


@pytest.mark.parametrize("flush", [False, True])
def test_search_and_query_by_partition(eng, flush):
    data = clustered(30, 8)
    eng.create_partition("c", "a")
    eng.create_partition("c", "b")
    eng.insert("c", make_rows(data[:10], 0))
    eng.insert("c", make_rows(data[10:20], 10), partition_name="a")
    eng.upsert("c", make_rows(data[20:30], 20), partition_name="b")
    if flush:
        eng.flush("c")
    assert {r["id"] for r in eng.query("c", output_fields=[], partition_names=["a"])} == set(range(10, 20))
    rows = eng.query("c", filter="n >= 15", output_fields=[], partition_names=["a", "b"])
    assert {r["id"] for r in rows} == set(range(15, 30))
    hits = eng.search("c", data[:2], limit=30, partition_names=["_default"])
    assert all({h.id for h in row} == set(range(10)) for row in hits)
    assert len(eng.search("c", data[:1], limit=30)[0]) == 30
    with pytest.raises(PartitionNotFound):
        eng.search("c", data[:1], limit=3, partition_names=["nope"])
    with pytest.raises(PartitionNotFound):
        eng.insert("c", make_rows(data[:1], 100), partition_name="nope")
    eng.upsert("c", make_rows(data[10:11], 10))  # moves pk 10 from "a" to "_default"
    assert {r["id"] for r in eng.query("c", output_fields=[], partition_names=["a"])} == set(range(11, 20))
    eng.drop_partition("c", "b")
    assert eng.count("c") == 20
    eng.create_partition("c", "b")  # a new partition: the old rows do not come back
    assert eng.query("c", output_fields=[], partition_names=["b"]) == []


def test_partitions_survive_compaction_and_restart(tmp_path, eng):
    data = clustered(40, 8)
    eng.create_partition("c", "a")
    for start in range(0, 40, 10):
        eng.insert("c", make_rows(data[start : start + 10], start), partition_name="a" if start % 20 else None)
        eng.flush("c")
    eng.compact("c")
    assert {r["id"] for r in eng.query("c", output_fields=[], partition_names=["a"])} == {
        *range(10, 20),
        *range(30, 40),
    }
    eng.insert("c", make_rows(data[:1], 99), partition_name="a")  # replayed from the WAL with its partition
    eng.close()
    with vectordb.open_engine(tmp_path / "db", fsync=False) as again:
        got = {r["id"] for r in again.query("c", output_fields=[], partition_names=["a"])}
        assert got == {*range(10, 20), *range(30, 40), 99}


async def test_embedded_client_partitions(tmp_path):
    async with vectordb.connect(str(tmp_path / "db"), fsync=False) as client:
        await client.create_collection("c", make_schema(8), index=IndexParams("FLAT", "L2"))
        await client.create_partition("c", "p")
        assert await client.has_partition("c", "p")
        data = clustered(4, 8)
        await client.insert("c", make_rows(data[:2]), partition_name="p")
        await client.upsert("c", make_rows(data[2:], 2))
        assert [h.id for h in (await client.search("c", data[:1], limit=4, partition_names=["p"]))[0]] == [0, 1]
        assert len(await client.query("c", partition_names=["_default"])) == 2
        await client.drop_partition("c", "p")
        assert await client.list_partitions("c") == ["_default"]
