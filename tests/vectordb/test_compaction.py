"""Compaction: merging small segments, purging deletes, crash-safe swap, searches during compaction."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import vectordb
from vectordb.compaction import CompactionPolicy
from vectordb.schema import IndexParams

from .conftest import clustered, make_rows, make_schema

DIM = 8


def _engine(path, **options):
    options.setdefault("compaction", CompactionPolicy(auto=False))
    return vectordb.open_engine(path, seal_rows=10**6, fsync=False, **options)


def _segments(eng, name="c"):
    return eng.ops.get(name).meta.segments


def _fill(eng, n_segments: int, rows: int = 20) -> np.ndarray:
    eng.create_collection("c", make_schema(DIM), IndexParams("FLAT", "L2"))
    data = clustered(n_segments * rows, DIM)
    for start in range(0, len(data), rows):
        eng.insert("c", make_rows(data[start : start + rows], start))
        eng.flush("c")
    return data


def test_compaction_merges_small_segments_and_purges_deletes(tmp_path):
    with _engine(tmp_path / "db") as eng:
        data = _fill(eng, 5)
        old_dirs = [eng.ops.get("c").segment_dir(s.id) for s in _segments(eng)]
        gone = list(range(0, 100, 3))
        eng.delete("c", ids=gone)
        before = eng.search("c", data[:3], limit=10)
        result = eng.compact("c")
        assert len(result.removed) == 5 and len(result.added) == 1 and result.purged_rows == len(gone)
        (seg,) = _segments(eng)
        assert seg.rows == 100 - len(gone) and seg.deletes_file is None
        assert not any(d.exists() for d in old_dirs)
        assert eng.count("c") == 100 - len(gone)
        after = eng.search("c", data[:3], limit=10)
        assert [[h.id for h in row] for row in after] == [[h.id for h in row] for row in before]
        assert [h.distance for h in after[0]] == pytest.approx([h.distance for h in before[0]], rel=1e-4)
        assert [r["id"] for r in eng.get("c", [1, 3])] == [1]
        eng.upsert("c", make_rows(data[1:2], 1))  # pk map points into the new segment
        assert eng.count("c") == 100 - len(gone)
    with _engine(tmp_path / "db") as eng:
        assert eng.count("c") == 100 - len(gone)
        assert {r["id"] for r in eng.query("c", output_fields=[])} == set(range(100)) - set(gone)


def test_compaction_leaves_large_clean_segments_alone(tmp_path):
    with _engine(tmp_path / "db", compaction=CompactionPolicy(small_segment_rows=10, auto=False)) as eng:
        _fill(eng, 3)
        assert eng.compact("c").removed == ()
        eng.delete("c", ids=[0])
        result = eng.compact("c")
        assert len(result.removed) == 1 and result.purged_rows == 1


def test_deletes_during_compaction_survive_the_swap_and_a_restart(tmp_path, monkeypatch):
    import vectordb.compaction as compaction

    with _engine(tmp_path / "db") as eng:
        _fill(eng, 3)
        real_merge = compaction._merge

        def merge_then_delete(*args, **kwargs):
            merged = real_merge(*args, **kwargs)
            eng.ops.get("c").delete_pks([5, 25])  # lands after the compaction timestamp
            return merged

        monkeypatch.setattr(compaction, "_merge", merge_then_delete)
        eng.compact("c")
        assert eng.count("c") == 58
        assert eng.get("c", [5, 25]) == []
    with _engine(tmp_path / "db") as eng:
        assert eng.count("c") == 58 and eng.get("c", [5, 25]) == []
        eng.flush("c")  # the carried-over deletes are persisted with the new segment
    with _engine(tmp_path / "db") as eng:
        assert eng.count("c") == 58


def test_searches_keep_working_during_compaction(tmp_path):
    with _engine(tmp_path / "db") as eng:
        data = _fill(eng, 8, rows=50)
        eng.delete("c", ids=list(range(0, 400, 2)))
        want = [[h.id for h in row] for row in eng.search("c", data[:4], limit=5)]
        stop = threading.Event()
        errors: list[BaseException] = []

        def searcher() -> None:
            while not stop.is_set():
                try:
                    assert [[h.id for h in row] for row in eng.search("c", data[:4], limit=5)] == want
                except BaseException as e:  # reported below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=searcher) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for _ in range(3):
                eng.compact("c")
                eng.insert("c", make_rows(data[:1] + 100, 10_000 + len(_segments(eng))))
                eng.delete("c", ids=[10_000 + len(_segments(eng))])
                eng.flush("c")
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert not errors, errors[0]


def test_automatic_compaction_in_the_background(tmp_path):
    policy = CompactionPolicy(auto=True, auto_min_small_segments=2)
    with vectordb.open_engine(tmp_path / "db", seal_rows=10, seal_age_s=0.2, fsync=False, compaction=policy) as eng:
        _fill(eng, 4, rows=10)
        for _ in range(100):
            if len(_segments(eng)) <= 2:
                break
            threading.Event().wait(0.05)
        assert len(_segments(eng)) <= 2
        assert eng.count("c") == 40


def test_policy_is_validated():
    with pytest.raises(ValueError):
        CompactionPolicy(small_segment_rows=10, max_segment_rows=5)
