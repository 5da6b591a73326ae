"""`Where`: filters built in code compile to the tree their Milvus text parses to, for any value."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from vectordb.errors import FilterError
from vectordb.evaluation import evaluate
from vectordb.expr import compile_filter
from vectordb.filters import Where, compile_any, filter_text
from vectordb.schema import CollectionSchema, DataType, FieldSchema

SCHEMA = CollectionSchema(
    (
        FieldSchema("id", DataType.INT64, is_primary=True),
        FieldSchema("vec", DataType.FLOAT_VECTOR, dim=2),
        FieldSchema("name", DataType.VARCHAR, max_length=256),
        FieldSchema("n", DataType.INT64),
        FieldSchema("x", DataType.DOUBLE),
        FieldSchema("ok", DataType.BOOL),
    )
)


class Rows:
    """A column source for the evaluator: a few rows, one of which holds the probed values."""

    def __init__(self, columns: dict[str, list[object]]) -> None:
        self.columns = {k: np.array(v, dtype=object) for k, v in columns.items()}
        self.n = len(next(iter(columns.values())))

    def column(self, name: str) -> np.ndarray:
        return self.columns[name]


texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
floats = st.floats(allow_nan=False, allow_infinity=False)


@given(name=texts, n=ints, x=floats, ok=st.booleans(), others=st.lists(ints, max_size=5))
@example(name="\x00", n=0, x=0.0, ok=False, others=[])  # numpy's fixed-width strings drop trailing NULs
@example(name="a\x00", n=1, x=1.0, ok=True, others=[])
def test_where_and_its_text_select_the_same_rows(name: str, n: int, x: float, ok: bool, others: list[int]) -> None:
    assume(x + 1.0 != x)  # the third row differs in x alone
    where = Where.eq("name", name) & Where.one_of("n", [n, *others]) & Where.ne("x", x + 1.0) & Where.eq("ok", ok)
    parsed = compile_filter(where.text(), SCHEMA)
    built = where.compile(SCHEMA)
    assert parsed is not None and built is not None
    rows = Rows({
        "name": [name, name + "!", name],
        "n": [n, n, n],
        "x": [x, x, x + 1.0],
        "ok": [ok, ok, ok],
    })
    mask = evaluate(built, rows)
    assert mask.tolist() == evaluate(parsed, rows).tolist()
    assert mask.tolist()[:2] == [True, False]


def test_where_is_type_checked_against_the_schema() -> None:
    for bad, message in (
        (Where.eq("nope", 1), "unknown field"),
        (Where.eq("n", "1"), "cannot compare"),
        (Where.one_of("name", ["a", 2]), "cannot compare"),
        (Where.eq("vec", 1.0), "vector field"),
    ):
        with pytest.raises(FilterError, match=message):
            bad.compile(SCHEMA)
    for value in (float("nan"), [1], None):
        with pytest.raises(FilterError):
            Where.eq("x", value)


def test_text_or_where_anywhere_a_filter_goes() -> None:
    assert compile_any(None, SCHEMA) is None and compile_any("", SCHEMA) is None
    assert compile_any(Where(), SCHEMA) is None
    assert compile_any(Where.eq("n", np.int64(3)), SCHEMA) == compile_any(Where.eq("n", 3), SCHEMA)
    assert filter_text(Where.eq("name", 'a "b"')) == 'name == "a \\"b\\""'
    assert filter_text("n > 1") == "n > 1" and filter_text(None) is None
