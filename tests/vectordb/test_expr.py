from __future__ import annotations

import numpy as np
import pytest

from vectordb.errors import FilterError
from vectordb.evaluation import evaluate
from vectordb.expr import compile_filter, tokenize
from vectordb.schema import DYNAMIC_FIELD, DataType

from .conftest import clustered, make_rows, make_schema

_DTYPES = {"id": np.int64, "n": np.int64, "score": np.float64, "ok": np.bool_}


class Rows:
    """A ColumnSource over plain dict rows."""

    def __init__(self, rows: list[dict], dynamic: list[dict] | None = None) -> None:
        self.rows, self.n, self.dynamic = rows, len(rows), dynamic

    def column(self, name: str) -> np.ndarray:
        if name == DYNAMIC_FIELD:
            values = self.dynamic
        else:
            values = [r[name] for r in self.rows]
        if name in _DTYPES:
            return np.asarray(values, dtype=_DTYPES[name])
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr


ROWS = make_rows(clustered(60, 16))
SCHEMA = make_schema()


def matching(expr: str) -> list[int]:
    mask = evaluate(compile_filter(expr, SCHEMA), Rows(ROWS))
    return [r["id"] for r, m in zip(ROWS, mask, strict=True) if m]


def ids(pred) -> list[int]:
    return [r["id"] for r in ROWS if pred(r)]


@pytest.mark.parametrize(
    "expr, pred",
    [
        ("n == 5", lambda r: r["n"] == 5),
        ("n != 5", lambda r: r["n"] != 5),
        ("n >= 10 and n < 20", lambda r: 10 <= r["n"] < 20),
        ("10 <= n < 20", lambda r: 10 <= r["n"] < 20),
        ("5 > n", lambda r: r["n"] < 5),
        ("score > 1.5 || ok", lambda r: r["score"] > 1.5 or r["ok"]),
        ("not ok && n in [1, 2, 3, 30]", lambda r: not r["ok"] and r["n"] in (1, 2, 3, 30)),
        ("n not in [1, 2]", lambda r: r["n"] not in (1, 2)),
        ('title == "doc-3"', lambda r: r["title"] == "doc-3"),
        ("title == 'doc-3' or title in ['doc-4']", lambda r: r["title"] in ("doc-3", "doc-4")),
        ('title like "doc-1%"', lambda r: r["title"].startswith("doc-1")),
        ('title like "%-1_"', lambda r: r["title"][-2:-1] == "1" and len(r["title"]) == 6),
        ('meta["bucket"] == 2', lambda r: r["meta"]["bucket"] == 2),
        ('meta["bucket"] in [0, 4] and !(n > 50)', lambda r: r["meta"]["bucket"] in (0, 4) and r["n"] <= 50),
        ('meta["tags"][0] == "a"', lambda r: r["meta"]["tags"][:1] == ["a"]),
        ('meta["missing"] == 1', lambda r: False),
        ("ok == true", lambda r: r["ok"]),
        ("(n < 3 or n > 97) and id >= 0", lambda r: r["n"] < 3 or r["n"] > 97),
        ("NOT (n < 50) AND n IN [60, 61]", lambda r: r["n"] in (60, 61)),
        ("n > -1 and score >= 0.0", lambda r: True),
        ("id == n", lambda r: r["id"] == r["n"]),
    ],
)
def test_matches_python_reference(expr, pred):
    assert matching(expr) == ids(pred)


@pytest.mark.parametrize(
    "expr, message, position",
    [
        ("n = 5", "unexpected character '='", 2),
        ("n == ", "expected a field name or a literal", 5),
        ("nope > 1", "unknown field 'nope'", 0),
        ("(n > 1", r"expected '\)'", 6),
        ('title == "abc', "unterminated string", 9),
        ("n > 1 n < 2", "unexpected 'n'", 6),
        ('n == "x"', "field 'n' is INT64", 2),
        ("title > 3", "field 'title' is VARCHAR", 6),
        ("vec > 1", "cannot filter on vector field", 0),
        ("n like 'a%'", "'like' needs a VARCHAR", 2),
        ("n", "not a boolean condition", 0),
        ("n in [1, n]", "only literals", 9),
        ('n["k"] == 1', "only JSON fields", 0),
    ],
)
def test_errors_are_clear_with_position(expr, message, position):
    with pytest.raises(FilterError, match=message) as info:
        compile_filter(expr, SCHEMA)
    assert info.value.position == position
    assert f"at position {position}" in str(info.value)


def test_empty_filter_is_none():
    assert compile_filter("  ", SCHEMA) is None


def test_tokenizer_handles_escapes_and_numbers():
    toks = tokenize(r'a == "x\"y" && b <= 1.5e2')
    assert [t.kind for t in toks] == ["IDENT", "CMP", "STRING", "AND", "IDENT", "CMP", "FLOAT", "EOF"]
    assert toks[2].value == 'x"y' and toks[6].value == 150.0


def test_dynamic_field_names_resolve_to_meta():
    schema = make_schema(dynamic=True)
    rows = ROWS[:4]
    dyn = [{"color": "red"}, {"color": "blue"}, {}, {"color": "red", "size": 3}]
    mask = evaluate(compile_filter('color == "red" or size > 2', schema), Rows(rows, dyn))
    assert mask.tolist() == [True, False, False, True]
    ref = compile_filter("color == 1", schema)
    assert ref is not None and ref.left.column == DYNAMIC_FIELD  # type: ignore[union-attr]


def test_json_type_mismatch_is_false_not_error():
    schema = make_schema()
    rows = [dict(ROWS[0], meta={"v": "text"}), dict(ROWS[1], meta={"v": 3})]
    mask = evaluate(compile_filter('meta["v"] > 2', schema), Rows(rows))
    assert mask.tolist() == [False, True]
    assert DataType.JSON


@pytest.mark.parametrize(
    "expr",
    ["(" * 1500 + "n > 1" + ")" * 1500, "not " * 1000 + "ok", "!" * 5000 + "ok", "(not " * 40 + "ok" + ")" * 40],
)
def test_deep_nesting_is_a_filter_error_naming_the_limit(schema, expr):
    with pytest.raises(FilterError, match=r"more than 64 levels deep \(the limit\)") as info:
        compile_filter(expr, schema)
    assert len(str(info.value)) < 600  # the quoted filter is cut short


def test_nesting_up_to_the_limit_parses_and_evaluates(schema):
    rows = make_rows(clustered(6, 16))
    deep = compile_filter("(" * 62 + "not (n > 2)" + ")" * 62, schema)  # 64 levels
    nots = compile_filter("not " * 64 + "ok", schema)
    assert evaluate(deep, Rows(rows)).tolist() == [r["n"] <= 2 for r in rows]
    assert evaluate(nots, Rows(rows)).tolist() == [r["ok"] for r in rows]


def test_an_overlong_filter_is_a_filter_error_naming_the_limit(schema):
    long = "n in [" + ", ".join(["1"] * 400_000) + "]"
    with pytest.raises(FilterError, match="above the limit of 1,048,576"):
        compile_filter(long, schema)
    assert compile_filter("n in [" + ", ".join(["1"] * 100_000) + "]", schema) is not None
