"""The search path (`vectordb/search.py`) and the proxy's inline DQL execution."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import vectordb
from vectordb.errors import EngineClosed
from vectordb.schema import IndexParams
from vectordb.search import VisibilityCache
from vectordb.tasks import CountTask

from .conftest import clustered, make_rows, make_schema

DIM = 16


def exact_ids(vectors: np.ndarray, ids: list[int], q: np.ndarray, k: int) -> list[int]:
    v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = v @ (q / np.linalg.norm(q))
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


@pytest.fixture
def engine(tmp_path):
    eng = vectordb.open_engine(tmp_path / "db", seal_rows=300)
    yield eng
    eng.close()


def test_deletes_are_invisible_and_the_cached_visibility_follows_them(engine):
    engine.create_collection("c", make_schema(DIM), IndexParams("FLAT", "COSINE"))
    vecs = clustered(900, DIM, seed=3)
    engine.insert("c", make_rows(vecs))
    engine.flush("c")  # sealed segments with an index, no deletes: the selector-free path
    q = vecs[7] + 0.01
    alive = list(range(900))
    assert [h.id for h in engine.search("c", [q], limit=5)[0]] == exact_ids(vecs, alive, q, 5)
    for round_ in range(3):  # each delete must invalidate the segment's cached summary
        gone = [h.id for h in engine.search("c", [q], limit=2)[0]]
        engine.delete("c", ids=gone)
        alive = [i for i in alive if i not in gone]
        got = [h.id for h in engine.search("c", [q], limit=5)[0]]
        assert got == exact_ids(vecs[alive], alive, q, 5), round_
    engine.flush("c")  # deletes persisted; still hidden
    assert [h.id for h in engine.search("c", [q], limit=5)[0]] == exact_ids(vecs[alive], alive, q, 5)


def test_visibility_cache_respects_the_read_timestamp(engine):
    engine.create_collection("c", make_schema(DIM), IndexParams("FLAT", "COSINE"))
    engine.insert("c", make_rows(clustered(50, DIM, seed=1)))
    coll = engine.ops.get("c")
    cache = VisibilityCache()
    ts_before, views = coll.snapshot()
    (view,) = views
    assert cache.allowed(view, ts_before) is None  # everything visible: no mask at all
    engine.delete("c", ids=[3, 4])
    ts_after, (view,) = coll.snapshot()
    live = cache.allowed(view, ts_after)
    assert live is not None and not live[3] and not live[4] and live.sum() == 48
    assert cache.allowed(view, ts_before) is None  # a read before the delete still sees every row
    assert cache.allowed(view, 0) is not None and not cache.allowed(view, 0).any()  # before any insert


def test_multi_segment_reduce_is_best_first_and_unique(engine):
    engine.create_collection("c", make_schema(DIM), IndexParams("HNSW", "COSINE", {"M": 8}))
    vecs = clustered(1000, DIM, seed=5)
    for start in range(0, 1000, 250):  # three sealed segments plus a growing one
        engine.insert("c", make_rows(vecs[start : start + 250], start))
        if start < 750:
            engine.flush("c")
    assert sum(1 for s in engine.ops.get("c").segments.values() if s.n) >= 2  # compaction may merge some
    for hits in engine.search("c", vecs[:20] + 0.01, limit=10, search_params={"params": {"ef": 200}}):
        scores = [h.distance for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert len({h.id for h in hits}) == len(hits) == 10


def test_dql_runs_inline_in_the_callers_thread(engine):
    engine.create_collection("c", make_schema(DIM))
    engine.insert("c", make_rows(clustered(10, DIM)))
    seen: list[str] = []

    class Probe(CountTask):
        def execute(self) -> int:
            seen.append(threading.current_thread().name)
            return super().execute()

    assert engine.proxy.execute(Probe(engine.ops, "c")) == 10
    assert seen == [threading.current_thread().name]


def test_run_async_and_closed_engine(tmp_path):
    engine = vectordb.open_engine(tmp_path / "db")
    engine.create_collection("c", make_schema(DIM))
    engine.insert("c", make_rows(clustered(10, DIM)))
    assert asyncio.run(engine.proxy.run_async(CountTask(engine.ops, "c"))) == 10
    engine.close()
    with pytest.raises(EngineClosed):
        engine.proxy.execute(CountTask(engine.ops, "c"))
