"""The REST server behaving as Milvus does where Milvus's own RESTful v2 test suite looks (issue 17):
request bodies as that suite's client sends them, spoken to a live server over HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .test_server import call, engine, http, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("server")


async def post_raw(http: httpx.AsyncClient, endpoint: str, content: bytes) -> dict[str, Any]:  # noqa: F811
    response = await http.post(f"/v2/vectordb/{endpoint}", content=content)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def test_a_null_body_is_an_empty_one(http: httpx.AsyncClient) -> None:  # noqa: F811
    """The suite's client sends `json.dumps(None)` for "no parameters" (its teardown lists collections so)."""
    assert await post_raw(http, "collections/list", b"null") == {"code": 0, "data": []}
    refused = await post_raw(http, "collections/list", b"[1, 2]")
    assert refused["code"] == 1801 and "JSON object" in refused["message"]


async def test_parameter_keys_match_case_insensitively_but_field_names_do_not(
        http: httpx.AsyncClient) -> None:  # noqa: F811
    body = {
        "COLLECTIONNAME": "books",
        "schema": {
            "AutoId": True,
            "enableDynamicField": "0",  # Go's ParseBool: "0"/"1", "t"/"f" too
            "Fields": [
                {"fieldname": "book_id", "dataType": "Int64", "ISPRIMARY": True},
                {"fieldName": "Title", "datatype": "VarChar", "elementTypeParams": {"max_length": "64"}},
                {"fieldName": "vec", "dataType": "FloatVector", "elementtypeparams": {"dim": "2"}},
            ],
        },
    }
    assert (await call(http, "collections/create", body))["code"] == 0
    described = (await call(http, "collections/describe", {"collectionName": "books"}))["data"]
    assert described["autoId"] is True and described["enableDynamicField"] is False
    assert [f["name"] for f in described["fields"]] == ["book_id", "Title", "vec"]
    # Row keys are field names: `title` is not `Title`, and dynamic fields are off.
    wrong = await call(http, "entities/insert", {"collectionName": "books",
                                                  "data": [{"title": "x", "vec": [1.0, 0.0]}]})
    assert wrong["code"] == 1804 and "Title" in wrong["message"]


async def test_auto_id_assigns_unique_int64_keys_at_insert(http: httpx.AsyncClient) -> None:  # noqa: F811
    await call(http, "collections/create", {"collectionName": "auto", "dimension": 2, "autoID": True})
    rows = [{"vector": [float(i), 1.0], "n": i} for i in range(5)]
    first = (await call(http, "entities/insert", {"collectionName": "auto", "data": rows}))["data"]
    second = (await call(http, "entities/insert", {"collectionName": "auto", "data": rows[:2]}))["data"]
    ids = first["insertIds"] + second["insertIds"]
    assert first["insertCount"] == 5 and len(set(ids)) == 7
    assert all(isinstance(i, int) and 0 < i < 2**63 for i in ids)
    assert ids == sorted(ids), "drawn from the timestamp oracle: increasing"
    got = (await call(http, "entities/get", {"collectionName": "auto", "id": first["insertIds"][3],
                                              "outputFields": ["n"]}))["data"]
    assert got == [{"id": first["insertIds"][3], "n": 3}]
    given = await call(http, "entities/insert", {"collectionName": "auto",
                                                  "data": [{"id": 7, "vector": [0.0, 1.0]}]})
    assert given["code"] == 1804 and "assigned by the store" in given["message"]
    # An upsert names the row it replaces by its key, as in any collection.
    key = first["insertIds"][0]
    upserted = await call(http, "entities/upsert", {"collectionName": "auto",
                                                     "data": [{"id": key, "vector": [0.0, 1.0], "n": 99}]})
    assert upserted["data"]["upsertIds"] == [key]
    again = (await call(http, "entities/get", {"collectionName": "auto", "id": key, "outputFields": ["n"]}))["data"]
    assert again == [{"id": key, "n": 99}]
    refused = await call(http, "collections/create", {"collectionName": "auto_text", "dimension": 2, "autoID": True,
                                                      "idType": "VarChar", "params": {"max_length": 8}})
    assert refused["code"] == 105 and "INT64" in refused["message"]


async def test_array_fields_as_the_suite_declares_them(http: httpx.AsyncClient) -> None:  # noqa: F811
    fields = [
        {"fieldName": "book_id", "dataType": "Int64", "isPrimary": True, "elementTypeParams": {}},
        {"fieldName": "int_array", "dataType": "Array", "elementDataType": "Int64",
         "elementTypeParams": {"max_capacity": "1024"}},
        {"fieldName": "varchar_array", "dataType": "Array", "elementDataType": "VarChar",
         "elementTypeParams": {"max_capacity": "1024", "max_length": "256"}},
        {"fieldName": "bool_array", "dataType": "Array", "elementDataType": "Bool",
         "elementTypeParams": {"max_capacity": "1024"}},
        {"fieldName": "text_emb", "dataType": "FloatVector", "elementTypeParams": {"dim": "2"}},
    ]
    created = await call(http, "collections/create", {"collectionName": "arr", "schema": {"fields": fields},
                                                       "indexParams": [{"fieldName": "text_emb", "metricType": "L2"}]})
    assert created["code"] == 0
    described = (await call(http, "collections/describe", {"collectionName": "arr"}))["data"]["fields"]
    varchar_array = next(f for f in described if f["name"] == "varchar_array")
    assert varchar_array["type"] == "Array" and varchar_array["elementType"] == "VarChar"
    assert {"key": "max_capacity", "value": "1024"} in varchar_array["params"]
    rows = [{"book_id": i, "int_array": [i, i + 1], "varchar_array": [f"varchar_{i}"], "bool_array": [i % 2 == 0],
             "text_emb": [1.0, float(i)]} for i in range(4)]
    assert (await call(http, "entities/insert", {"collectionName": "arr", "data": rows}))["data"]["insertCount"] == 4
    hits = await call(http, "entities/query", {"collectionName": "arr", "filter": "array_contains(int_array, 2)"})
    assert sorted(r["book_id"] for r in hits["data"]) == [1, 2]
    assert {"int_array", "varchar_array", "bool_array"} <= set(hits["data"][0])
    bad = await call(http, "entities/insert", {"collectionName": "arr", "data": [{**rows[0], "int_array": ["x"]}]})
    assert bad["code"] == 1804 and "int_array" in bad["message"]


@pytest.mark.parametrize("endpoint, body, code, words", [
    ("collections/create", {"collectionName": "test collection", "dimension": 2}, 1100, "Invalid collection name"),
    ("collections/create", {"collectionName": "t", "schema": {"fields": [
        {"fieldName": "id", "dataType": "Int64", "isPrimary": True},
        {"fieldName": "v", "dataType": "FloatVector", "elementTypeParams": {"dim": 2}},
        {"fieldName": "s", "dataType": "VARCHAR", "elementTypeParams": {"max_length": 8}}]}}, 1100, "'VARCHAR'"),
    ("collections/create", {"collectionName": "t", "schema": {"fields": [
        {"fieldName": "id", "dataType": "Int64", "isPrimary": True},
        {"fieldName": "v", "dataType": "FloatVector", "elementTypeParams": {"dim": 2}, "nullable": True}]}},
     1100, "vector type not support null"),
    ("collections/create", {"collectionName": "t", "schema": {"fields": [
        {"fieldName": "id", "dataType": "Int64", "isPrimary": True, "defaultValue": 3},
        {"fieldName": "v", "dataType": "FloatVector", "elementTypeParams": {"dim": 2}}]}},
     1100, "primary field not support default_value"),
    ("collections/create", {"collectionName": "t", "schema": {"fields": [
        {"fieldName": "id", "dataType": "Int64", "isPrimary": True},
        {"fieldName": "j", "dataType": "JSON", "defaultValue": {"a": 1}},
        {"fieldName": "v", "dataType": "FloatVector", "elementTypeParams": {"dim": 2}}]}},
     1100, "convert defaultValue fail"),
    ("collections/create", {"collectionName": "t", "schema": {"fields": [
        {"fieldName": "id", "dataType": "Int64", "isPrimary": True},
        {"fieldName": "v", "dataType": "Float16Vector", "elementTypeParams": {"dim": 2}}]}}, 1100, "not supported"),
    ("collections/describe", {"collectionName": "missing"}, 100, "can't find collection"),
    ("entities/query", {"collectionName": "base", "filter": "[1, 2]"}, 1100, "failed to create query plan"),
    ("entities/search", {"collectionName": "base", "data": [[1.0, 0.0]], "limit": 0}, 65535, "limit"),
    ("entities/search", {"collectionName": "base", "data": [[1.0, 0.0]], "limit": 16385}, 65535, "limit"),
    ("entities/search", {"collectionName": "base", "data": [[1.0, 0.0]], "offset": -1}, 65535, "offset"),
    ("entities/insert", {"collectionName": "base", "data": [{"id": 1, "vector": [1.0, 0.0, 2.0]}]}, 1804,
     "fail to deal the insert data"),
])
async def test_error_codes_and_words_as_milvus_answers(http: httpx.AsyncClient, endpoint: str,  # noqa: F811
                                                       body: dict[str, Any], code: int, words: str) -> None:
    await call(http, "collections/create", {"collectionName": "base", "dimension": 2})
    answer = await call(http, endpoint, body)
    assert answer["code"] == code and words in answer["message"], answer


async def test_create_is_idempotent_and_a_custom_schema_without_index_starts_unloaded(
        http: httpx.AsyncClient) -> None:  # noqa: F811
    quick = {"collectionName": "same", "dimension": 2}
    assert [(await call(http, "collections/create", quick))["code"] for _ in range(3)] == [0, 0, 0]
    other = await call(http, "collections/create", {**quick, "dimension": 3})
    assert other["code"] == 1851 and "different schema" in other["message"]
    strict = await call(http, "collections/create", {**quick, "ifNotExists": False})
    assert strict["code"] == 1851

    fields = [{"fieldName": "id", "dataType": "Int64", "isPrimary": True},
              {"fieldName": "v", "dataType": "FloatVector", "elementTypeParams": {"dim": 2}}]
    await call(http, "collections/create", {"collectionName": "bare", "schema": {"fields": fields}})
    state = (await call(http, "collections/get_load_state", {"collectionName": "bare"}))["data"]["loadState"]
    described = (await call(http, "collections/describe", {"collectionName": "bare"}))["data"]
    assert state == described["load"] == "LoadStateNotLoad"
    refused = await call(http, "entities/search", {"collectionName": "bare", "data": [[1.0, 0.0]]})
    assert refused["code"] == 101
    await call(http, "indexes/create", {"collectionName": "bare",
                                        "indexParams": [{"fieldName": "v", "metricType": "L2"}]})
    await call(http, "collections/load", {"collectionName": "bare"})
    await call(http, "entities/insert", {"collectionName": "bare", "data": [{"id": 1, "v": [1.0, 0.0]}]})
    counted = await call(http, "entities/query", {"collectionName": "bare", "filter": "",
                                                  "outputFields": ["count(*)"], "limit": 0})
    assert counted["data"] == [{"count(*)": 1}]
