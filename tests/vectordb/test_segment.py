"""Sealing growing segments by rows, bytes and age."""

from __future__ import annotations

import threading

import vectordb
from vectordb.compaction import CompactionPolicy
from vectordb.schema import IndexParams

from .conftest import clustered, make_rows, make_schema


def _wait_for(cond, timeout_s: float = 5.0) -> bool:
    for _ in range(int(timeout_s / 0.02)):
        if cond():
            return True
        threading.Event().wait(0.02)
    return cond()


def test_seal_by_bytes(tmp_path):
    with vectordb.open_engine(
        tmp_path / "db", fsync=False, seal_bytes=4096, compaction=CompactionPolicy(auto=False)
    ) as eng:
        eng.create_collection("c", make_schema(16), IndexParams("FLAT", "L2"))
        data = clustered(100, 16)
        for start in range(0, 100, 10):
            eng.insert("c", make_rows(data[start : start + 10], start))
        # Rows written while a seal is pending join it; the maintenance timer seals what is left.
        coll = eng.ops.get("c")
        assert _wait_for(lambda: coll.growing.size_bytes < 4096 and sum(s.rows for s in coll.meta.segments) >= 80)
        assert len(coll.meta.segments) >= 2
        assert eng.count("c") == 100


def test_seal_by_age_in_the_background(tmp_path):
    with vectordb.open_engine(tmp_path / "db", fsync=False, seal_age_s=0.2) as eng:
        eng.create_collection("c", make_schema(8), IndexParams("FLAT", "L2"))
        eng.insert("c", make_rows(clustered(5, 8)))
        assert not eng.ops.get("c").meta.segments
        assert _wait_for(lambda: len(eng.ops.get("c").meta.segments) == 1)
        assert eng.ops.get("c").growing.n == 0 and eng.count("c") == 5


def test_growing_segment_size_and_age(tmp_path):
    with vectordb.open_engine(tmp_path / "db", fsync=False) as eng:
        eng.create_collection("c", make_schema(8), IndexParams("FLAT", "L2"))
        growing = eng.ops.get("c").growing
        assert growing.size_bytes == 0 and growing.age_s() == 0.0
        eng.insert("c", make_rows(clustered(3, 8)))
        assert growing.size_bytes >= 3 * 8 * 4 and growing.age_s() >= 0.0
