"""Hostile filters against a real `docvec vectordb` process (REST and pymilvus on one port): the `like`
filter that froze the server answers while other requests keep being served, a deeply nested filter is a
1100 status (not 65535 "internal error"), and a filter over its work budget is refused with a message."""

from __future__ import annotations

import concurrent.futures
import importlib.util
from pathlib import Path
from typing import Any

import httpx
import pytest

from .test_grpc_server import _server_process

pytestmark = pytest.mark.skipif(importlib.util.find_spec("pymilvus") is None, reason="pymilvus not installed")

HEADERS = {"Authorization": "Bearer s3cret"}
FREEZER = 'text like "' + "%a" * 500 + '%"'  # backtracked exponentially as `.*` under re.fullmatch
NESTED = "-" * 2000 + "1 == n"
COSTLY = " or ".join(f'meta["b"] == {i}' for i in range(25_000))  # x 400 rows: over the budget


def _rest(url: str, endpoint: str, body: dict[str, Any], timeout_s: float = 30) -> dict[str, Any]:
    reply = httpx.post(f"{url}/v2/vectordb/{endpoint}", headers=HEADERS, json=body, timeout=timeout_s)
    assert reply.status_code == 200
    return dict(reply.json())


def test_hostile_filters_over_rest_and_grpc(tmp_path: Path) -> None:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    with _server_process(tmp_path, same_port=True) as port:
        url = f"http://127.0.0.1:{port}"
        schema = {"fields": [
            {"fieldName": "id", "dataType": "Int64", "isPrimary": True},
            {"fieldName": "vector", "dataType": "FloatVector", "elementTypeParams": {"dim": 2}},
            {"fieldName": "text", "dataType": "VarChar", "elementTypeParams": {"max_length": 4096}},
            {"fieldName": "n", "dataType": "Int64"},
            {"fieldName": "meta", "dataType": "JSON"}]}
        assert _rest(url, "collections/create", {"collectionName": "c", "schema": schema, "indexParams": [
            {"fieldName": "vector", "indexName": "v", "metricType": "L2", "indexType": "FLAT"}]})["code"] == 0
        rows = [{"id": i, "vector": [float(i), 1.0], "text": ("ab" * 300) if i % 2 else ("a" * 2000), "n": i,
                 "meta": {"b": i % 7}} for i in range(400)]
        assert _rest(url, "entities/insert", {"collectionName": "c", "data": rows})["code"] == 0

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            hostile = [pool.submit(_rest, url, "entities/query", {"collectionName": "c", "filter": FREEZER,
                                                                   "outputFields": ["id"], "limit": 500}, 120)
                       for _ in range(2)]
            for _ in range(5):  # the server keeps answering others meanwhile
                assert _rest(url, "collections/list", {}, timeout_s=10)["data"] == ["c"]
            answers = [f.result(timeout=120) for f in hostile]
        for answer in answers:
            assert answer["code"] == 0
            assert sorted(r["id"] for r in answer["data"]) == list(range(0, 400, 2))  # 500 "a"s: only in "a" * 2000

        nested = _rest(url, "entities/query", {"collectionName": "c", "filter": NESTED})
        assert nested["code"] == 1100 and "levels deep" in nested["message"]
        costly = _rest(url, "entities/search", {"collectionName": "c", "data": [[0.0, 1.0]], "limit": 3,
                                                 "filter": COSTLY})
        assert costly["code"] == 1100 and "steps of work" in costly["message"]

        client = MilvusClient(uri=url, token="s3cret", timeout=120)
        try:
            liked = client.query("c", filter=FREEZER, output_fields=["id"], limit=500)
            assert sorted(r["id"] for r in liked) == list(range(0, 400, 2))
            for text, words in ((NESTED, "levels deep"), (COSTLY, "steps of work")):
                with pytest.raises(MilvusException) as caught:
                    client.query("c", filter=text, output_fields=["id"])
                assert caught.value.code == 1100 and words in caught.value.message
        finally:
            client.close()
