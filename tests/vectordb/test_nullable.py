"""Nullable fields and default values: a row may leave such a field out or give null; a null is kept
(and matches no comparison, only `is null`), a default replaces it. Through the engine across a
restart, and as Milvus's REST suite declares and describes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from vectordb.engine import Engine
from vectordb.errors import FieldOptionError, RowError
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

from .test_server import call, engine, http, server  # noqa: F401  (fixtures)

SCHEMA = CollectionSchema((
    FieldSchema("id", DataType.INT64, is_primary=True),
    FieldSchema("vec", DataType.FLOAT_VECTOR, dim=2),
    FieldSchema("user_id", DataType.INT64, default_value=10),
    FieldSchema("word_count", DataType.INT64, nullable=True),
    FieldSchema("describe", DataType.VARCHAR, max_length=16, nullable=True, default_value="default"),
    FieldSchema("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4, nullable=True),
    FieldSchema("meta", DataType.JSON, nullable=True),
))
ROWS = [
    {"id": 0, "vec": [1.0, 0.0], "user_id": None, "word_count": None, "describe": None, "tags": None, "meta": None},
    {"id": 1, "vec": [0.0, 1.0]},  # every optional field left out
    {"id": 2, "vec": [1.0, 1.0], "user_id": 3, "word_count": 7, "describe": "given", "tags": [1], "meta": {"a": 1}},
]


def _ids(eng: Engine, expr: str) -> list[int]:
    return sorted(r["id"] for r in eng.query("c", filter=expr, output_fields=["id"]))


def test_nulls_and_defaults_are_stored_filtered_and_kept_across_a_restart(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path / "vec", fsync=False)
    eng.create_collection("c", SCHEMA, IndexParams("FLAT", "L2"))
    eng.insert("c", ROWS[:2])
    eng.flush("c")
    eng.insert("c", ROWS[2:])
    for _ in range(2):
        got = eng.get("c", [0, 1, 2])
        assert [(r["user_id"], r["word_count"], r["describe"], r["tags"], r["meta"]) for r in got] == [
            (10, None, "default", None, None), (10, None, "default", None, None), (3, 7, "given", [1], {"a": 1})]
        assert _ids(eng, "word_count > 0") == [2]
        assert _ids(eng, "word_count != 7") == [], "a null matches no comparison"
        assert _ids(eng, "word_count is null") == [0, 1]
        assert _ids(eng, "word_count IS NOT NULL and user_id < 5") == [2]
        assert _ids(eng, "word_count in [7, 8]") == [2]
        assert _ids(eng, "meta is null") == [0, 1]
        assert _ids(eng, "user_id == 10") == [0, 1]
        eng.close()
        eng = Engine.open(tmp_path / "vec", fsync=False)
    assert eng.describe_collection("c") == SCHEMA
    with pytest.raises(RowError, match="not nullable and has no default"):
        eng.insert("c", [{"id": 9, "vec": None}])
    eng.close()


@pytest.mark.parametrize("field, words", [
    (dict(name="v", dtype=DataType.FLOAT_VECTOR, dim=2, nullable=True), "vector type not support null"),
    (dict(name="k", dtype=DataType.INT64, is_primary=True, default_value=1), "primary field not support default"),
    (dict(name="j", dtype=DataType.JSON, default_value={"a": 1}), "convert defaultValue fail"),
    (dict(name="n", dtype=DataType.INT64, default_value="x"), "convert defaultValue fail"),
    (dict(name="s", dtype=DataType.VARCHAR, max_length=2, default_value="toolong"), "convert defaultValue fail"),
])
def test_field_options_milvus_refuses_are_refused(field: dict[str, Any], words: str) -> None:
    with pytest.raises(FieldOptionError, match=words):
        FieldSchema(**field)


async def test_rest_declares_and_describes_them_as_milvus(http: httpx.AsyncClient) -> None:  # noqa: F811
    fields = [
        {"fieldName": "book_id", "dataType": "Int64", "isPrimary": True},
        {"fieldName": "user_id", "dataType": "Int64", "isPartitionKey": True, "defaultValue": 10},
        {"fieldName": "word_count", "dataType": "Int64", "nullable": True},
        {"fieldName": "book_describe", "dataType": "VarChar", "elementTypeParams": {"max_length": "256"},
         "defaultValue": "default", "nullable": True},
        {"fieldName": "text_emb", "dataType": "FloatVector", "elementTypeParams": {"dim": "2"}},
    ]
    created = await call(http, "collections/create", {
        "collectionName": "dflt", "schema": {"autoId": True, "fields": fields},
        "indexParams": [{"fieldName": "text_emb", "metricType": "L2"}]})
    assert created["code"] == 0, created
    described = (await call(http, "collections/describe", {"collectionName": "dflt"}))["data"]["fields"]
    assert described[3]["defaultValue"] == {"Data": {"StringData": "default"}} and described[3]["nullable"] is True
    assert described[1]["defaultValue"] == {"Data": {"LongData": 10}} and described[1]["nullable"] is False
    rows = [{"user_id": None, "word_count": None, "book_describe": None, "text_emb": [1.0, float(i)]}
            for i in range(3)]
    assert (await call(http, "entities/insert", {"collectionName": "dflt", "data": rows}))["code"] == 0
    found = (await call(http, "entities/query", {"collectionName": "dflt", "filter": "user_id > 0", "limit": 5}))
    first = found["data"][0]
    assert len(found["data"]) == 3 and first["book_describe"] == "default" and first["word_count"] is None
    refused = await call(http, "collections/create", {"collectionName": "pk_null", "schema": {"fields": [
        {"fieldName": "id", "dataType": "Int64", "isPrimary": True},
        {"fieldName": "p", "dataType": "Int64", "isPartitionKey": True, "nullable": True},
        {"fieldName": "v", "dataType": "FloatVector", "elementTypeParams": {"dim": 2}}]}})
    assert refused["code"] == 1100 and "partition key field not support nullable" in refused["message"]
