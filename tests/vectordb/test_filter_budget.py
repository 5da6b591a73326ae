"""A request's filter has a bounded amount of work (`vectordb.evaluation.FilterBudget`): what its rows will cost
is charged before any is read, what the data adds (text for `like`) as it is read, one budget for every
segment the request reads; past `MAX_FILTER_WORK` it is a FilterError (a 4xx), never minutes of a thread."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from vectordb.engine import Engine
from vectordb.errors import FilterError
from vectordb.evaluation import MAX_FILTER_WORK, FilterBudget, evaluate, steps_per_row
from vectordb.expr import compile_filter
from vectordb.like import LikePattern
from vectordb.schema import IndexParams

from .conftest import make_rows, make_schema
from .test_expr import Rows

SCHEMA = make_schema(dim=2)
TOO_COSTLY = " or ".join(f'meta["bucket"] == {i}' for i in range(4_000))  # 4,000 conditions on a JSON path


class CountingRows(Rows):
    """Rows that count how often a column is read."""

    reads = 0

    def column(self, name: str) -> np.ndarray:
        self.reads += 1
        return super().column(name)


def _rows(n: int, start: int = 0) -> list[dict]:
    return make_rows(np.ones((n, 2), dtype=np.float32), start)


def test_a_costly_filter_is_refused_before_a_row_is_read() -> None:
    expr = compile_filter(TOO_COSTLY, SCHEMA)
    assert expr is not None and steps_per_row(expr) * 2_000 > MAX_FILTER_WORK
    src = CountingRows(_rows(2_000))
    with pytest.raises(FilterError, match=f"more than {MAX_FILTER_WORK:,} steps of work"):
        evaluate(expr, src)
    assert src.reads == 0
    few = CountingRows(_rows(100))
    assert evaluate(expr, few).tolist() == [r["meta"]["bucket"] < 4_000 for r in few.rows]  # within the budget


def test_a_request_is_charged_for_all_its_rows_before_reading_any() -> None:
    pattern = "doc-1%"
    expr = compile_filter(f'meta["bucket"] == 1 or title like "{pattern}"', SCHEMA)
    assert expr is not None
    budget = FilterBudget(limit=int(steps_per_row(expr) * 250))
    with pytest.raises(FilterError, match="steps of work"):
        budget.charge_rows(expr, 300)  # three sources of 100 rows: refused before the first is read
    budget = FilterBudget(limit=int(steps_per_row(expr) * 250))
    budget.charge_rows(expr, 200)
    sources = [Rows(_rows(100)), Rows(_rows(100, start=100))]
    for src in sources:
        evaluate(expr, src, budget)  # charges only what the text adds, once
    chars = sum(len(r["title"]) for src in sources for r in src.rows)
    assert budget.used == math.ceil(steps_per_row(expr) * 200) + LikePattern.compile(pattern).text_work(chars)


def test_what_the_text_costs_is_charged_as_it_is_read() -> None:
    pattern = "%" + "q_" * 50 + "%"
    expr = compile_filter(f'title like "{pattern}"', SCHEMA)
    rows = _rows(10)
    budget = FilterBudget.for_rows(expr, 10)
    evaluate(expr, Rows(rows), budget)
    chars = sum(len(r["title"]) for r in rows)
    assert budget.used == math.ceil(steps_per_row(expr) * 10) + LikePattern.compile(pattern).text_work(chars)
    assert LikePattern.compile(pattern).text_work(chars) > 0


@pytest.fixture
def engine(tmp_path: Path):
    eng = Engine.open(tmp_path / "vec", fsync=False, seal_rows=500)
    eng.create_collection("c", SCHEMA, IndexParams("FLAT", "L2"))
    try:
        yield eng
    finally:
        eng.close()


def test_search_query_and_delete_refuse_a_costly_filter(engine: Engine) -> None:
    engine.insert("c", _rows(1_000))
    engine.flush("c")
    engine.insert("c", _rows(1_000, start=1_000))  # sealed and growing rows
    for call in (lambda: engine.query("c", filter=TOO_COSTLY, output_fields=["id"]),
                 lambda: engine.search("c", [[1.0, 1.0]], limit=5, filter=TOO_COSTLY),
                 lambda: engine.delete("c", filter=TOO_COSTLY)):
        with pytest.raises(FilterError, match="steps of work"):
            call()
    assert engine.count("c") == 2_000  # the refused delete removed nothing
    assert len(engine.query("c", filter='meta["bucket"] == 1', output_fields=["id"])) == 400


def test_the_budget_covers_every_segment_of_one_query(engine: Engine) -> None:
    """Each 500-row segment costs 30% of the budget: three segments are answered, a fourth is refused."""
    text_chars = 10_000
    pattern = "%" + "q_" * 57 + "%"  # 114 wide: 'q' never occurs in the text, so the real work is small
    expr_text = f'meta["text"] like "{pattern}"'
    expr = compile_filter(expr_text, SCHEMA)
    per_row = steps_per_row(expr) + LikePattern.compile(pattern).text_work(text_chars)
    assert 0.25 * MAX_FILTER_WORK < per_row * 500 < 0.33 * MAX_FILTER_WORK

    def add(start: int) -> None:
        rows = _rows(500, start)
        for r in rows:
            r["meta"] = {"text": "a" * text_chars}
        engine.insert("c", rows)
        engine.flush("c")

    for start in (0, 500, 1_000):
        add(start)
    assert engine.query("c", filter=expr_text, output_fields=["id"]) == []
    add(1_500)
    with pytest.raises(FilterError, match="steps of work"):
        engine.query("c", filter=expr_text, output_fields=["id"])
