from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import vectordb
from vectordb.errors import (
    CollectionExists,
    CollectionNotFound,
    DataDirLocked,
    DuplicatePrimaryKey,
    FilterError,
    RowError,
)
from vectordb.schema import IndexParams
from vectordb.segment import SealedSegment

from .conftest import clustered, make_rows, make_schema

DIM = 16


def reference_top_k(vectors: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int, metric: str) -> list[list[int]]:
    if metric == "COSINE":
        v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        s = v @ (q / np.linalg.norm(q, axis=1, keepdims=True)).T
    elif metric == "IP":
        s = vectors @ q.T
    else:
        s = -(((vectors[:, None, :] - q[None, :, :]) ** 2).sum(-1))
    order = np.argsort(-s, axis=0, kind="stable")[:k].T
    return [ids[o].tolist() for o in order]


@pytest.fixture
def engine(tmp_path):
    eng = vectordb.open_engine(tmp_path / "db", seal_rows=400)
    yield eng
    eng.close()


def _load(eng, name: str, n: int, index: IndexParams, *, flush_every: int | None = None):
    eng.create_collection(name, make_schema(DIM), index)
    data = clustered(n, DIM)
    for start in range(0, n, 100):
        eng.insert(name, make_rows(data[start : start + 100], start))
        if flush_every and start % flush_every == 0:
            eng.flush(name)
    return data


@pytest.mark.parametrize("metric", ["COSINE", "IP", "L2"])
def test_flat_search_is_exact_across_growing_and_sealed(engine, metric):
    data = _load(engine, "c", 1000, IndexParams("FLAT", metric), flush_every=300)
    q = clustered(5, DIM, seed=7)
    hits = engine.search("c", q, limit=10)
    want = reference_top_k(data, np.arange(1000), q, 10, metric)
    assert [[h.id for h in row] for row in hits] == want
    for row in hits:
        d = [h.distance for h in row]
        assert d == sorted(d, reverse=metric != "L2")
    if metric == "L2":
        assert hits[0][0].distance == pytest.approx(float(((data[want[0][0]] - q[0]) ** 2).sum()), rel=1e-4)


@pytest.mark.parametrize("index_type", ["HNSW", "IVF_FLAT", "IVF_SQ8"])
def test_ann_recall_on_clustered_data(engine, index_type):
    data = _load(engine, "c", 2000, IndexParams(index_type, "COSINE"))
    engine.flush("c")
    q = clustered(20, DIM, seed=11)
    hits = engine.search("c", q, limit=10, search_params={"ef": 64, "nprobe": 16})
    want = reference_top_k(data, np.arange(2000), q, 10, "COSINE")
    recall = np.mean([len({h.id for h in got} & set(w)) / 10 for got, w in zip(hits, want, strict=True)])
    assert recall >= 0.9


def test_filtered_search_returns_true_top_k_of_matches(engine):
    data = _load(engine, "c", 2000, IndexParams("HNSW", "L2"), flush_every=500)
    rows = make_rows(data)
    q = clustered(4, DIM, seed=5)
    for expr, pred in [
        ("n < 3", lambda r: r["n"] < 3),  # 3% selective: exact path
        ("ok == false", lambda r: not r["ok"]),  # 67%: ANN with selector
        (
            'meta["bucket"] in [1, 2] and title like "doc-1%"',
            lambda r: r["meta"]["bucket"] in (1, 2) and r["title"].startswith("doc-1"),
        ),
    ]:
        keep = np.array([pred(r) for r in rows])
        want = reference_top_k(data[keep], np.flatnonzero(keep), q, 10, "L2")
        hits = engine.search("c", q, limit=10, filter=expr, output_fields=["n", "title", "meta", "ok"])
        for got, w in zip(hits, want, strict=True):
            assert all(pred(h.entity | {"id": h.id}) for h in got)
            assert len({h.id for h in got} & set(w)) >= 9


def test_insert_upsert_delete_semantics(engine):
    engine.create_collection("c", make_schema(DIM), IndexParams("FLAT", "L2"))
    data = clustered(10, DIM)
    assert engine.insert("c", make_rows(data)) == list(range(10))
    with pytest.raises(DuplicatePrimaryKey, match="use upsert"):
        engine.insert("c", make_rows(data[:1]))
    with pytest.raises(DuplicatePrimaryKey):
        engine.insert("c", make_rows(data[:1], 50) * 2)
    assert engine.count("c") == 10
    new = make_rows(data[:2])
    new[0]["title"] = "replaced"
    engine.upsert("c", new)
    assert engine.count("c") == 10
    assert engine.get("c", [0], output_fields=["title"]) == [{"id": 0, "title": "replaced"}]
    assert engine.delete("c", ids=[1, 2, 999]) == 2
    assert engine.delete("c", filter="n >= 8") == 2
    assert engine.count("c") == 6
    assert sorted(r["id"] for r in engine.query("c", filter="n >= 0")) == [0, 3, 4, 5, 6, 7]
    hits = engine.search("c", data[1:2], limit=10)
    assert {h.id for h in hits[0]} == {0, 3, 4, 5, 6, 7}


def test_query_limit_offset_and_fields(engine):
    _load(engine, "c", 300, IndexParams("FLAT"))
    rows = engine.query("c", filter="n < 10", output_fields=["n"], limit=5, offset=2)
    assert len(rows) == 5 and all(set(r) == {"id", "n"} for r in rows)
    full = engine.query("c", filter="id == 7", output_fields=["*"])
    assert set(full[0]) == {"id", "vec", "title", "n", "score", "ok", "meta"} and len(full[0]["vec"]) == DIM


def test_errors(engine):
    with pytest.raises(CollectionNotFound):
        engine.count("missing")
    engine.create_collection("c", make_schema(DIM))
    engine.create_collection("c", make_schema(DIM), if_not_exists=True)
    with pytest.raises(CollectionExists):
        engine.create_collection("c", make_schema(DIM))
    with pytest.raises(CollectionExists, match="different schema"):
        engine.create_collection("c", make_schema(8), if_not_exists=True)
    with pytest.raises(RowError, match="'vec' must have dim 16"):
        engine.insert("c", make_rows(clustered(1, 8)))
    with pytest.raises(FilterError, match="unknown field 'nope' .*at position 0"):
        engine.query("c", filter="nope == 1")
    with pytest.raises(vectordb.errors.InvalidRequest, match="shape"):
        engine.search("c", [[1.0, 2.0]], limit=3)
    engine.drop_collection("c")
    engine.drop_collection("c")
    assert engine.list_collections() == []


def test_reopen_keeps_every_row_and_same_results(tmp_path):
    eng = vectordb.open_engine(tmp_path / "db", seal_rows=250)
    data = _load(eng, "c", 1000, IndexParams("HNSW", "COSINE"))
    eng.flush("c")
    more = clustered(150, DIM, seed=3)
    eng.insert("c", make_rows(more, 1000))
    eng.delete("c", ids=list(range(0, 1150, 10)))
    eng.upsert("c", make_rows(more[:5], 3))
    q = clustered(6, DIM, seed=21)
    before = eng.search("c", q, limit=10, filter="n < 90", output_fields=["title"])
    before_count = eng.count("c")
    eng.close()
    eng = vectordb.open_engine(tmp_path / "db")
    try:
        assert eng.count("c") == before_count == 1150 - 115
        after = eng.search("c", q, limit=10, filter="n < 90", output_fields=["title"])
        assert [[h.id for h in r] for r in after] == [[h.id for h in r] for r in before]
        assert eng.get("c", [3], output_fields=["vec"])[0]["vec"] == pytest.approx(more[0].tolist())
        assert eng.describe_index("c").index_type == "HNSW"
    finally:
        eng.close()
    assert data.shape == (1000, DIM)


def test_second_opener_in_process_is_refused(tmp_path):
    eng = vectordb.open_engine(tmp_path / "db")
    try:
        with pytest.raises(DataDirLocked, match="in use"):
            vectordb.open_engine(tmp_path / "db")
    finally:
        eng.close()
    vectordb.open_engine(tmp_path / "db").close()


def test_second_process_is_refused_and_lock_dies_with_holder(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, vectordb
        try:
            vectordb.open_engine({str(tmp_path / "db")!r})
        except vectordb.DataDirLocked as e:
            print("LOCKED", e); sys.exit(3)
        print("OPEN")
        """
    )
    eng = vectordb.open_engine(tmp_path / "db")
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 3, proc.stderr
        assert "in use by another engine" in proc.stdout
    finally:
        eng.close()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "OPEN" in proc.stdout


def test_create_index_rebuilds_sealed_segments(engine):
    data = _load(engine, "c", 600, IndexParams("HNSW", "L2"))
    engine.flush("c")
    engine.create_index("c", IndexParams("FLAT", "L2"))
    q = clustered(3, DIM, seed=2)
    hits = engine.search("c", q, limit=5)
    assert [[h.id for h in r] for r in hits] == reference_top_k(data, np.arange(600), q, 5, "L2")


def test_concurrent_writers_readers_and_background_seals(tmp_path):
    import threading

    eng = vectordb.open_engine(tmp_path / "db", seal_rows=150, fsync=False)
    try:
        for name in ("a", "b"):
            eng.create_collection(name, make_schema(DIM), IndexParams("HNSW", "L2"))
        data = clustered(800, DIM)
        errors: list[BaseException] = []

        def writer(name: str) -> None:
            try:
                for s in range(0, 800, 50):
                    eng.insert(name, make_rows(data[s : s + 50], s))
                    eng.delete(name, ids=[s])
            except BaseException as e:  # surfaced by the assert below
                errors.append(e)

        def reader() -> None:
            try:
                for _ in range(30):
                    for row in eng.search("a", data[:3], limit=5, filter="n >= 0"):
                        assert len({h.id for h in row}) == len(row)
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")] + [threading.Thread(target=reader)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        for name in ("a", "b"):
            eng.flush(name)
            assert eng.count(name) == 800 - 16
    finally:
        eng.close()
    eng = vectordb.open_engine(tmp_path / "db")
    try:
        assert eng.count("a") == eng.count("b") == 784
    finally:
        eng.close()


def test_delete_landing_while_a_flush_seals_survives_restart(tmp_path, monkeypatch):
    """A delete between sealing a segment and swapping it in must still be persisted by a later flush
    (regression: the sealed segment did not count it, so the next flush skipped it and truncated the
    WAL that held it, bringing the row back after a restart)."""
    eng = vectordb.open_engine(tmp_path / "db", seal_rows=10_000)
    eng.create_collection("c", make_schema(DIM), IndexParams("FLAT", "L2"))
    eng.insert("c", make_rows(clustered(20, DIM), 0))
    coll = eng.ops.get("c")
    real_seal = SealedSegment.seal.__func__

    def seal_then_delete(cls, growing, directory, index_params):
        sealed = real_seal(cls, growing, directory, index_params)
        coll.delete_pks([7])  # lands on the growing segment object before the swap
        return sealed

    monkeypatch.setattr(SealedSegment, "seal", classmethod(seal_then_delete))
    eng.flush("c")
    monkeypatch.undo()
    eng.insert("c", make_rows(clustered(5, DIM, seed=4), 100))
    eng.flush("c")  # must persist the delete: the WAL that holds it is truncated here
    assert eng.get("c", [7]) == []
    eng.close()
    eng = vectordb.open_engine(tmp_path / "db")
    try:
        assert eng.get("c", [7]) == []
        assert eng.count("c") == 24
    finally:
        eng.close()
