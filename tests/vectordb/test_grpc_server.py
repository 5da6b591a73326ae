"""pymilvus, unchanged, against `docvec vectordb`'s Milvus gRPC front end (vectordb/grpc_server.py).

Milvus's own MilvusClient quick start and the ORM walkthrough run as written; errors come back as Milvus
statuses with the REST server's codes; the token is checked; RPCs docvec lacks answer a clear status.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from vectordb.engine import Engine

from .live_grpc_server import LiveGrpcServer

_MISSING = [name for name in ("pymilvus", "grpc") if importlib.util.find_spec(name) is None]
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"{' and '.join(_MISSING)} not installed")

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def grpc_server(tmp_path: Path) -> Iterator[LiveGrpcServer]:
    engine = Engine.open(tmp_path / "vec", fsync=False)
    server = LiveGrpcServer(engine).start()
    try:
        yield server
    finally:
        server.stop()
        engine.close()


@pytest.fixture
def client(grpc_server: LiveGrpcServer) -> Iterator[Any]:
    from pymilvus import MilvusClient

    c = MilvusClient(uri=grpc_server.uri, timeout=30)
    try:
        yield c
    finally:
        c.close()


def test_milvus_client_quick_start(client: Any) -> None:
    """https://milvus.io/docs/quickstart.md, step by step."""
    client.create_collection(collection_name="demo_collection", dimension=5)
    assert client.has_collection("demo_collection")
    assert client.list_collections() == ["demo_collection"]
    assert client.get_load_state("demo_collection")["state"].name == "Loaded"

    colors = ["green", "blue", "yellow", "red", "black", "white", "purple", "pink", "orange", "brown"]
    rng = random.Random(7)
    data = [{"id": i, "vector": [rng.uniform(-1, 1) for _ in range(5)], "color": colors[i]} for i in range(10)]
    res = client.insert(collection_name="demo_collection", data=data)
    assert res["insert_count"] == 10
    assert list(res["ids"]) == list(range(10))

    query_vector = data[3]["vector"]
    hits = client.search(collection_name="demo_collection", data=[query_vector], limit=3, output_fields=["color"])
    assert len(hits) == 1 and len(hits[0]) == 3
    assert hits[0][0]["id"] == 3 and hits[0][0]["entity"] == {"color": "red"}
    assert hits[0][0]["distance"] == pytest.approx(1.0, abs=1e-5)  # COSINE of a vector with itself

    filtered = client.search(collection_name="demo_collection", data=[query_vector, data[0]["vector"]], limit=3,
                             filter='color like "b%"', output_fields=["color", "id"])
    assert len(filtered) == 2
    for per_query in filtered:
        assert {h["entity"]["color"] for h in per_query} <= {"blue", "black", "brown"}
        assert all(h["entity"]["id"] == h["id"] for h in per_query)

    liked = client.query(collection_name="demo_collection", filter='color like "p%"', output_fields=["color"])
    assert sorted((r["id"], r["color"]) for r in liked) == [(6, "purple"), (7, "pink")]
    in_ids = client.query(collection_name="demo_collection", filter="id in [0, 2]", output_fields=["vector", "color"])
    assert sorted(r["id"] for r in in_ids) == [0, 2]
    assert in_ids[0]["vector"] == pytest.approx(data[in_ids[0]["id"]]["vector"], abs=1e-6)

    got = client.get(collection_name="demo_collection", ids=[0, 2], output_fields=["color"])
    assert sorted((r["id"], r["color"]) for r in got) == [(0, "green"), (2, "yellow")]

    up = client.upsert(collection_name="demo_collection",
                       data=[{"id": 0, "vector": [0.1] * 5, "color": "gray", "extra": 42}])
    assert up["upsert_count"] == 1
    assert list(client.get(collection_name="demo_collection", ids=[0], output_fields=["color", "extra"])) == [
        {"id": 0, "color": "gray", "extra": 42}
    ]

    assert client.delete(collection_name="demo_collection", ids=[0, 2])["delete_count"] == 2
    assert client.delete(collection_name="demo_collection", filter="id in [4, 5, 6]")["delete_count"] == 3
    count = client.query(collection_name="demo_collection", filter="", output_fields=["count(*)"])
    assert count[0]["count(*)"] == 5
    client.drop_collection(collection_name="demo_collection")
    assert not client.has_collection("demo_collection")


def test_search_options_map_to_the_engine(client: Any) -> None:
    """Offsets, range search, partitions and consistency levels travel as the REST server takes them."""
    client.create_collection("opts", dimension=4, metric_type="L2")
    client.create_partition("opts", "p1")
    assert client.has_partition("opts", "p1")
    assert sorted(client.list_partitions("opts")) == ["_default", "p1"]
    rows = [{"id": i, "vector": [float(i), 0.0, 0.0, 0.0]} for i in range(20)]
    client.insert("opts", rows[:10])
    client.insert("opts", rows[10:], partition_name="p1")
    q = [[0.0, 0.0, 0.0, 0.0]]
    first = client.search("opts", data=q, limit=3, consistency_level="Strong")
    assert [h["id"] for h in first[0]] == [0, 1, 2]
    paged = client.search("opts", data=q, limit=3, search_params={"offset": 2}, consistency_level="Eventually")
    assert [h["id"] for h in paged[0]] == [2, 3, 4]
    in_p1 = client.search("opts", data=q, limit=2, partition_names=["p1"])
    assert [h["id"] for h in in_p1[0]] == [10, 11]
    ranged = client.search("opts", data=q, limit=10, search_params={"params": {"radius": 10.0, "range_filter": 1.0}})
    assert sorted(h["id"] for h in ranged[0]) == [1, 2, 3]  # squared L2 in [1, 10)
    assert client.query("opts", filter="id >= 0", limit=3, offset=1, output_fields=["id"]) == [
        {"id": 1}, {"id": 2}, {"id": 3}]
    client.flush("opts")
    assert client.get_collection_stats("opts")["row_count"] == 20
    assert client.get_partition_stats("opts", "p1")["row_count"] == 10


def test_errors_come_back_with_the_rest_codes(client: Any) -> None:
    from pymilvus.exceptions import MilvusException

    assert not client.has_collection("missing")
    with pytest.raises(MilvusException) as caught:
        client.search("missing", data=[[0.0] * 4], limit=1)
    assert caught.value.code == 100
    client.create_collection("e", dimension=4)
    with pytest.raises(MilvusException) as caught:
        client.query("e", filter="id >>> 3")
    assert caught.value.code == 1100 and "failed to create query plan" in caught.value.message
    with pytest.raises(MilvusException) as caught:
        client.create_alias("e", "e_alias")  # an RPC docvec does not have: a status naming it
    assert caught.value.code == 1100 and "CreateAlias" in caught.value.message


@pytest.mark.filterwarnings("ignore::FutureWarning")  # pymilvus 3 deprecates the ORM it still ships
def test_orm_walkthrough(grpc_server: LiveGrpcServer) -> None:
    """The ORM example of Milvus's walkthrough: VARCHAR key, DOUBLE field, 1,024-dim vectors, 3,000 rows."""
    import numpy as np
    from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, connections, utility

    alias = f"orm-{grpc_server.port}"
    connections.connect(alias=alias, host="127.0.0.1", port=str(grpc_server.port))
    try:
        fields = [
            FieldSchema(name="pk", dtype=DataType.VARCHAR, is_primary=True, auto_id=False, max_length=100),
            FieldSchema(name="random", dtype=DataType.DOUBLE),
            FieldSchema(name="embeddings", dtype=DataType.FLOAT_VECTOR, dim=1024),
        ]
        schema = CollectionSchema(fields, "hello_milvus is the simplest demo")
        hello = Collection("hello_milvus", schema, consistency_level="Strong", shards_num=2, using=alias)
        assert utility.has_collection("hello_milvus", using=alias)
        rng = np.random.default_rng(19530)
        n = 3000
        vectors = rng.random((n, 1024), dtype=np.float32)
        entities = [[str(i) for i in range(n)], rng.random(n).tolist(), vectors]
        result = hello.insert(entities)
        assert result.insert_count == n
        hello.flush()
        assert hello.num_entities == n
        hello.create_index("embeddings", {"index_type": "IVF_FLAT", "metric_type": "L2", "params": {"nlist": 128}})
        assert hello.index().params["index_type"] == "IVF_FLAT"
        hello.load()
        hits = hello.search(vectors[-2:].tolist(), "embeddings", {"metric_type": "L2", "params": {"nprobe": 128}},
                            limit=3, output_fields=["random"])
        assert [h[0].id for h in hits] == [str(n - 2), str(n - 1)]
        assert hits[0][0].distance == pytest.approx(0.0, abs=1e-3)
        assert 0.0 <= hits[0][0].entity.get("random") <= 1.0
        found = hello.search(vectors[:1].tolist(), "embeddings", {"metric_type": "L2", "params": {"nprobe": 16}},
                             limit=3, expr="random > 0.5", output_fields=["random"])
        assert all(h.entity.get("random") > 0.5 for h in found[0])
        rows = hello.query(expr="random > 0.5", output_fields=["random", "embeddings"], limit=5)
        assert len(rows) == 5 and all(r["random"] > 0.5 and len(r["embeddings"]) == 1024 for r in rows)
        hello.delete('pk in ["0", "1"]')
        assert hello.query(expr="", output_fields=["count(*)"])[0]["count(*)"] == n - 2
        hello.release()
        utility.drop_collection("hello_milvus", using=alias)
        assert not utility.has_collection("hello_milvus", using=alias)
    finally:
        connections.disconnect(alias)


# --------------------------------------------------------------------- the server process, with a token


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server_process(tmp_path: Path, *, same_port: bool) -> Iterator[int]:
    """`python -m vectordb.server` (what `docvec vectordb` runs) with a token, serving gRPC on its own
    `--grpc-port` or (by default) on the REST port; yields the port pymilvus connects to."""
    rest_port = _free_port()
    grpc_port = rest_port if same_port else _free_port()
    cmd = [sys.executable, "-m", "vectordb.server", "--data", str(tmp_path / "vec"), "--port", str(rest_port),
           "--token", "s3cret", "--no-fsync"]
    if grpc_port != rest_port:
        cmd += ["--grpc-port", str(grpc_port)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", grpc_port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    detail = proc.stderr.read() if proc.stderr else b""
                    raise RuntimeError(f"the server did not start: {detail!r}") from None
                time.sleep(0.1)
        yield grpc_port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(params=["own-port", "same-port"])
def token_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[int]:
    with _server_process(tmp_path, same_port=request.param == "same-port") as port:
        yield port


def test_token_is_required_over_grpc(token_server: int) -> None:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    uri = f"http://127.0.0.1:{token_server}"
    good = MilvusClient(uri=uri, token="s3cret", timeout=30)
    try:
        good.create_collection("guarded", dimension=3)
        assert good.list_collections() == ["guarded"]
    finally:
        good.close()
    for token in ("wrong", ""):
        with pytest.raises(MilvusException) as caught:
            bad = MilvusClient(uri=uri, token=token, timeout=30)
            try:
                bad.list_collections()
            finally:
                bad.close()
        assert caught.value.code == 1800
        assert "authentication failed" in caught.value.message


def test_rest_and_grpc_share_the_default_port(tmp_path: Path) -> None:
    """Milvus serves both on 19530; so does docvec vectordb: pymilvus and REST clients on one port."""
    from pymilvus import MilvusClient

    with _server_process(tmp_path, same_port=True) as port:
        url = f"http://127.0.0.1:{port}"
        milvus = MilvusClient(uri=url, token="s3cret", timeout=30)
        try:
            milvus.create_collection("shared", dimension=3)
            milvus.insert("shared", [{"id": 1, "vector": [0.1, 0.2, 0.3]}])
            rest = httpx.post(f"{url}/v2/vectordb/entities/get", headers={"Authorization": "Bearer s3cret"},
                              json={"collectionName": "shared", "id": [1]}, timeout=30)
            assert rest.status_code == 200 and rest.json()["data"] == [{"id": 1}]
            assert milvus.get("shared", ids=[1], output_fields=["id"]) == [{"id": 1}]
            assert httpx.post(f"{url}/v2/vectordb/collections/list", json={}, timeout=30).status_code == 401
        finally:
            milvus.close()


def test_grpc_port_without_a_token_beyond_loopback_is_refused(tmp_path: Path) -> None:
    from vectordb.errors import InsecureServer
    from vectordb.server import run_server

    with pytest.raises(InsecureServer):
        run_server(str(tmp_path / "vec"), host="0.0.0.0", port=_free_port(), grpc_port=_free_port())
    assert not (tmp_path / "vec").exists()  # refused before anything was opened


def test_langchains_milvus_store_runs_unchanged(grpc_server: LiveGrpcServer) -> None:
    """What the ecosystem builds on pymilvus reaches it too: LangChain's Milvus vector store, auto ids,
    metadata filters, delete, and its retriever (a deterministic fake embedding: no model)."""
    langchain_milvus = pytest.importorskip("langchain_milvus", reason="langchain-milvus is a dev extra")
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding

    store = langchain_milvus.Milvus(embedding_function=DeterministicFakeEmbedding(size=16), auto_id=True,
                                    connection_args={"uri": grpc_server.uri}, collection_name="lc", drop_old=True)
    texts = {"a": "the moon pulls the tides", "b": "bread rises overnight", "c": "bees dance for flowers"}
    ids = store.add_documents([Document(page_content=t, metadata={"source": s}) for s, t in texts.items()])
    assert len(set(ids)) == 3
    best = store.similarity_search(texts["a"], k=2)
    assert best[0].page_content == texts["a"] and best[0].metadata["source"] == "a"
    (only_c, score), = store.similarity_search_with_score(texts["a"], k=1, expr='source == "c"')
    assert only_c.metadata["source"] == "c" and score < 0.99
    assert store.delete(ids=[ids[0]])
    retriever = store.as_retriever(search_kwargs={"k": 3})
    assert sorted(d.metadata["source"] for d in retriever.invoke(texts["a"])) == ["b", "c"]  # "a" was deleted
