"""Several vector fields per collection: the first has the FAISS index, the others are kept as
columns and searched exactly by their own index's metric; through the embedded engine (across a
restart), the HTTP client and the REST server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from common.errors import InvalidRequest
from vectordb.engine import Engine
from vectordb.errors import SchemaError
from vectordb.http_client import HttpClient
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

from .live_server import LiveServer

SCHEMA = CollectionSchema((
    FieldSchema("id", DataType.INT64, is_primary=True),
    FieldSchema("text_emb", DataType.FLOAT_VECTOR, dim=4),
    FieldSchema("image_emb", DataType.FLOAT_VECTOR, dim=3),
    FieldSchema("n", DataType.INT64),
))
RNG = np.random.default_rng(5)
TEXT = RNG.normal(size=(60, 4)).astype(np.float32)
IMAGE = RNG.normal(size=(60, 3)).astype(np.float32)
ROWS = [{"id": i, "text_emb": TEXT[i].tolist(), "image_emb": IMAGE[i].tolist(), "n": i % 5} for i in range(60)]


def _expected(query: np.ndarray, metric: str, rows: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[int]:
    ids = np.arange(len(rows)) if keep is None else np.flatnonzero(keep)
    vecs = rows[ids]
    if metric == "L2":
        order = np.argsort(((vecs - query) ** 2).sum(axis=1), kind="stable")
    else:
        cos = vecs @ query / (np.linalg.norm(vecs, axis=1) * np.linalg.norm(query))
        order = np.argsort(-cos, kind="stable")
    return ids[order[:k]].tolist()


def test_each_vector_field_is_searched_by_its_own_metric_across_a_restart(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path / "vec", fsync=False)
    eng.create_collection("c", SCHEMA, IndexParams("HNSW", "COSINE"))
    eng.create_index("c", IndexParams("FLAT", "L2"), field_name="image_emb")
    eng.insert("c", ROWS[:40])
    eng.flush("c")  # sealed segment and growing rows both searched
    eng.insert("c", ROWS[40:])
    query = IMAGE[7] + 0.01
    for engine in (eng, None):
        if engine is None:
            eng.close()
            engine = eng = Engine.open(tmp_path / "vec", fsync=False)
        assert engine.describe_index("c", field_name="image_emb") == IndexParams("FLAT", "L2")
        hits = engine.search("c", [query.tolist()], limit=5, anns_field="image_emb", output_fields=["n"])[0]
        assert [h.id for h in hits] == _expected(query, "L2", IMAGE, 5)
        assert hits[0].distance == pytest.approx(float(((IMAGE[7] - query) ** 2).sum()), rel=1e-4)
        filtered = engine.search("c", [query.tolist()], limit=3, anns_field="image_emb", filter="n == 2")[0]
        assert [h.id for h in filtered] == _expected(query, "L2", IMAGE, 3, np.arange(60) % 5 == 2)
        text = engine.search("c", [TEXT[3].tolist()], limit=1)[0]  # the first vector field, as before
        assert text[0].id == 3
        got = engine.get("c", [9], output_fields=["image_emb"])[0]["image_emb"]
        assert got == pytest.approx(IMAGE[9].tolist())
        assert engine.query("c", filter="id == 9")[0].keys() == {"id", "n"}, "vectors are not default outputs"
    with pytest.raises(InvalidRequest, match="must have shape"):
        eng.search("c", [[0.1] * 4], limit=1, anns_field="image_emb")  # image_emb has dim 3
    with pytest.raises(InvalidRequest, match="not a vector field"):
        eng.search("c", [[0.1] * 4], limit=1, anns_field="n")
    with pytest.raises(InvalidRequest, match="not a vector field"):
        eng.create_index("c", IndexParams("FLAT", "L2"), field_name="n")
    eng.close()


def test_at_most_four_vector_fields() -> None:
    fields = [FieldSchema("id", DataType.INT64, is_primary=True)]
    fields += [FieldSchema(f"v{i}", DataType.FLOAT_VECTOR, dim=2) for i in range(5)]
    with pytest.raises(SchemaError, match="one to 4 FLOAT_VECTOR"):
        CollectionSchema(tuple(fields))


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[LiveServer]:
    eng = await asyncio.to_thread(Engine.open, tmp_path / "vec", fsync=False)
    srv = await asyncio.to_thread(LiveServer(eng).start)
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)
        await asyncio.to_thread(eng.close)


async def test_the_http_client_indexes_and_searches_another_vector_field(server: LiveServer) -> None:
    async with HttpClient(server.url) as client:
        await client.create_collection("c", SCHEMA, index=IndexParams("FLAT", "L2"))
        await client.create_index("c", IndexParams("FLAT", "COSINE"), field_name="image_emb")
        await client.insert("c", ROWS)
        assert await client.describe_index("c", field_name="image_emb") == IndexParams("FLAT", "COSINE")
        hits = (await client.search("c", [IMAGE[11].tolist()], limit=4, anns_field="image_emb"))[0]
        assert [h.id for h in hits] == _expected(IMAGE[11], "COSINE", IMAGE, 4)


async def _rest(http: httpx.AsyncClient, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(f"/v2/vectordb/{endpoint}", json=body)
    return response.json()  # type: ignore[no-any-return]


async def test_rest_collections_with_two_vector_fields_as_the_suite_makes_them(server: LiveServer) -> None:
    fields = [
        {"fieldName": "book_id", "dataType": "Int64", "isPrimary": True},
        {"fieldName": "text_emb", "dataType": "FloatVector", "elementTypeParams": {"dim": "4"}},
        {"fieldName": "image_emb", "dataType": "FloatVector", "elementTypeParams": {"dim": "3"}},
    ]
    both = [{"fieldName": "text_emb", "indexName": "text_emb", "metricType": "L2"},
            {"fieldName": "image_emb", "indexName": "image_emb", "metricType": "L2"}]
    rows = [{"book_id": r["id"], "text_emb": r["text_emb"], "image_emb": r["image_emb"]} for r in ROWS]
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        created = await _rest(http, "collections/create", {"collectionName": "two", "schema": {"fields": fields},
                                                           "indexParams": both})
        assert created["code"] == 0
        described = (await _rest(http, "collections/describe", {"collectionName": "two"}))["data"]
        assert described["load"] == "LoadStateLoaded"
        assert [i["fieldName"] for i in described["indexes"]] == ["text_emb", "image_emb"]
        assert (await _rest(http, "entities/insert", {"collectionName": "two", "data": rows}))["code"] == 0
        found = await _rest(http, "entities/search", {"collectionName": "two", "annsField": "image_emb",
                                                      "data": [IMAGE[2].tolist()], "limit": 3})
        assert [h["book_id"] for h in found["data"]] == _expected(IMAGE[2], "L2", IMAGE, 3)
        listed = (await _rest(http, "indexes/list", {"collectionName": "two"}))["data"]
        assert listed == ["text_emb", "image_emb"]

        # One index for two vector fields: created, but not loaded (the create answers why, as Milvus's
        # does); loading it names the field again.
        half = await _rest(http, "collections/create", {"collectionName": "one", "schema": {"fields": fields},
                                                        "indexParams": both[:1]})
        assert half["code"] == 65535 and "image_emb" in half["message"]
        assert "one" in (await _rest(http, "collections/list", {}))["data"]
        state = (await _rest(http, "collections/get_load_state", {"collectionName": "one"}))["data"]["loadState"]
        assert state == "LoadStateNotLoad"
        refused = await _rest(http, "collections/load", {"collectionName": "one"})
        assert refused["code"] == 65535 and "image_emb" in refused["message"]
        await _rest(http, "indexes/create", {"collectionName": "one", "indexParams": both[1:]})
        assert (await _rest(http, "collections/load", {"collectionName": "one"}))["code"] == 0
