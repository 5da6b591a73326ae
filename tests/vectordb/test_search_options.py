"""Milvus's search and query options through the embedded engine: range search (radius,
range_filter), ignore_growing, and `count(*)`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vectordb.engine import Engine
from vectordb.errors import InvalidRequest
from vectordb.schema import IndexParams

from .conftest import clustered, make_rows, make_schema

DIM = 8


@pytest.fixture(params=["L2", "COSINE"])
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    eng = Engine.open(tmp_path / "vec", fsync=False)
    eng.create_collection("c", make_schema(DIM), IndexParams("FLAT", request.param))
    rows = make_rows(clustered(300, DIM))
    eng.insert("c", rows[:200])
    eng.flush("c")  # 200 rows sealed, 100 growing
    eng.insert("c", rows[200:])
    yield eng
    eng.close()


def _all_distances(engine: Engine, query: list[float]) -> list[float]:
    return [h.distance for h in engine.search("c", [query], limit=300)[0]]


def test_range_search_keeps_the_hits_between_range_filter_and_radius(engine: Engine) -> None:
    """The band lies past the nearest 150 rows: the engine looks deeper than `limit` to fill it."""
    query = clustered(1, DIM, seed=7)[0].tolist()
    ranked = _all_distances(engine, query)  # best first
    higher = engine.describe_index("c").metric_type == "COSINE"
    radius, range_filter = ranked[220], ranked[150]  # both metrics: the radius is the far edge
    params = {"params": {"radius": radius, "range_filter": range_filter}}
    hits = engine.search("c", [query], limit=40, search_params=params)[0]
    expected = [d for d in ranked if (radius < d <= range_filter if higher else range_filter <= d < radius)][:40]
    assert len(expected) == 40
    assert [h.distance for h in hits] == pytest.approx(expected)
    only_radius = engine.search("c", [query], limit=300, search_params={"params": {"radius": ranked[10]}})[0]
    assert len(only_radius) == 10 or ranked[9] == ranked[10]


@pytest.mark.parametrize("params, words", [
    ({"range_filter": 1.0}, "needs a radius"),
    ({"radius": "x"}, "finite number"),
    ({"radius": 1.0, "range_filter": 1.0}, "range_filter must be"),
    ({"ignore_growing": "yes"}, "true or false"),
])
def test_bad_range_parameters_are_invalid_requests(engine: Engine, params: dict[str, Any], words: str) -> None:
    with pytest.raises(InvalidRequest, match=words):
        engine.search("c", [[0.1] * DIM], limit=5, search_params={"params": params})


def test_ignore_growing_searches_sealed_segments_only(engine: Engine) -> None:
    query = [[0.1] * DIM]
    sealed = engine.search("c", query, limit=300, search_params={"ignore_growing": True})[0]
    every = engine.search("c", query, limit=300)[0]
    assert len(every) == 300 and len(sealed) == 200
    assert {h.id for h in sealed} == set(range(200)), "the first 200 rows were sealed"


def test_count_star_counts_matching_rows(engine: Engine) -> None:
    assert engine.query("c", filter="", output_fields=["count(*)"]) == [{"count(*)": 300}]
    assert engine.query("c", filter="id < 10", output_fields=["COUNT(*)"]) == [{"count(*)": 10}]
    engine.delete("c", ids=list(range(5)))
    assert engine.query("c", filter="id < 10", output_fields=["count(*)"]) == [{"count(*)": 5}]
    with pytest.raises(InvalidRequest, match="no limit or offset"):
        engine.query("c", filter="", output_fields=["count(*)"], limit=3)
    assert np.isfinite(engine.search("c", [[0.1] * DIM], limit=1)[0][0].distance)
