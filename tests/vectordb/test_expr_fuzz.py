"""No filter, whatever its shape, reaches anything but a result or a FilterError.

Hypothesis generates filters three ways — from the grammar (well-formed, nested, typed right or wrong),
as a soup of the grammar's tokens, and as constructs repeated thousands of times (signs, parentheses,
`not`, `array_length(`, arithmetic chains, paths) — and runs each through a real engine's query over
sealed and growing rows with nulls, JSON, arrays and dynamic fields. Before the depth limit covered every
recursive construct, `"-" * 2000 + "1 == n"` was a RecursionError (a 500 over the API).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vectordb.engine import Engine
from vectordb.errors import FilterError
from vectordb.expr import MAX_FILTER_DEPTH, compile_filter
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

SCHEMA = CollectionSchema(
    (
        FieldSchema("id", DataType.INT64, is_primary=True),
        FieldSchema("vec", DataType.FLOAT_VECTOR, dim=2),
        FieldSchema("title", DataType.VARCHAR, max_length=64),
        FieldSchema("n", DataType.INT64),
        FieldSchema("score", DataType.DOUBLE),
        FieldSchema("ok", DataType.BOOL),
        FieldSchema("wc", DataType.INT64, nullable=True),
        FieldSchema("meta", DataType.JSON, nullable=True),
        FieldSchema("tags", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8, nullable=True),
        FieldSchema("words", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=8, max_length=16),
    ),
    enable_dynamic_field=True,
)
METAS = [None, {"a": 1, "b": "x%_y", "c": [1, "2", [3]], "d": {"e": 10**30}}, {"a": 2.5, "b": None},
         {"a": "text", "c": []}, {"a": True, "d": {"e": -1}}]


def _row(i: int) -> dict:
    row = {"id": i, "vec": [float(i), 1.0], "title": ["", "a%b", "ünï ☃", "abc" * 20, "_\\"][i % 5],
           "n": i * 7 - 20, "score": i / 3 - 1, "ok": i % 2 == 0, "wc": None if i % 3 == 0 else i,
           "meta": METAS[i % len(METAS)], "tags": None if i % 4 == 0 else list(range(i % 5)),
           "words": ["a", "b%"][: i % 3]}
    if i % 2:
        row["color"] = ["red", 3, None, [1, 2], {"k": "v"}][i % 5]  # a dynamic field of many kinds
    return row


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    eng = Engine.open(tmp_path_factory.mktemp("fuzz") / "vec", fsync=False)
    eng.create_collection("c", SCHEMA, IndexParams("FLAT", "L2"))
    eng.insert("c", [_row(i) for i in range(20)])
    eng.flush("c")  # sealed rows
    eng.insert("c", [_row(i) for i in range(20, 30)])  # and growing ones
    eng.delete("c", ids=[3, 25])
    try:
        yield eng
    finally:
        eng.close()


FIELDS = ["id", "n", "score", "ok", "wc", "title", "meta", 'meta["a"]', 'meta["c"][0]', 'meta["d"]["e"]', "tags",
          "tags[1]", "words", "color", 'color["k"]', "vec", "nope", "$meta"]
LITERALS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=False).map(repr),
    st.sampled_from(["1e999", "-0.0", ".5", "5.", "007", "9223372036854775808", "1" * 5000, "0" * 30 + "1"]),
    st.text(max_size=6).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.sampled_from(["true", "false", "TRUE", "'x'", '"%a%"', "'\\'", '"\\u00e9"']),
)
OPERANDS = st.one_of(st.sampled_from(FIELDS), LITERALS)


def _operand(draw: st.DrawFn, depth: int) -> str:
    kind = draw(st.integers(0, 4 if depth < 3 else 0))
    if kind == 0:
        return draw(OPERANDS)
    if kind == 1:
        return draw(st.sampled_from(["-", "+", "- -"])) + _operand(draw, depth + 1)
    if kind == 2:
        op = draw(st.sampled_from(["+", "-", "*", "/", "%"]))
        return f"{_operand(draw, depth + 1)} {op} {_operand(draw, depth + 1)}"
    if kind == 3:
        return f"array_length({draw(st.sampled_from(FIELDS))})"
    return f"({_operand(draw, depth + 1)})"


@st.composite
def grammar(draw: st.DrawFn, depth: int = 0) -> str:
    """A filter from the grammar: mostly well-formed, with types right or wrong."""
    kind = draw(st.integers(0, 9 if depth < 4 else 5))
    left = _operand(draw, 0)
    if kind == 0:
        op = draw(st.sampled_from(["==", "!=", "<", "<=", ">", ">="]))
        return f"{left} {op} {_operand(draw, 0)}"
    if kind == 1:
        values = draw(st.lists(LITERALS, max_size=5))
        return f"{left} {draw(st.sampled_from(['in', 'not in', 'IN']))} [{', '.join(values)}]"
    if kind == 2:
        pattern = draw(st.text(alphabet="ab%_\\é", max_size=10)).replace('"', "")
        return f'{left} like "{pattern}"'
    if kind == 3:
        return f"{left} is {draw(st.sampled_from(['null', 'not null', 'NULL', 'nul']))}"
    if kind == 4:
        fn = draw(st.sampled_from(["array_contains", "array_contains_all", "array_contains_any", "json_contains"]))
        arg = draw(LITERALS) if fn.endswith("contains") else f"[{', '.join(draw(st.lists(LITERALS, max_size=4)))}]"
        return f"{fn}({draw(st.sampled_from(FIELDS))}, {arg})"
    if kind == 5:
        return f"{_operand(draw, 0)} < {left} <= {_operand(draw, 0)}"
    if kind == 6:
        return f"{draw(st.sampled_from(['not ', '!', 'NOT ']))}{draw(grammar(depth + 1))}"
    if kind == 7:
        return f"({draw(grammar(depth + 1))})"
    op = draw(st.sampled_from(["and", "or", "&&", "||", "AND"]))
    return f"{draw(grammar(depth + 1))} {op} {draw(grammar(depth + 1))}"


TOKENS = ["(", ")", "[", "]", ",", "-", "+", "*", "/", "%", "==", "!=", "<", ">=", "!", "not", "and", "or", "&&",
          "||", "in", "like", "is", "null", "array_length", "array_contains", "true", '"s"', "'", '"', "1", "2.5",
          "1e309", "\\", "=", "#", "é", "\x00", *FIELDS]
soup = st.lists(st.sampled_from(TOKENS), max_size=30).map(" ".join)

REPEATABLE = ["-", "+", "(", "not ", "!", "array_length(", "n + ", "n * ", "1 + ", "meta[0]", '["k"]', "n - -",
              "(n + ", "not (", "1 * (", "[", "-(", "array_contains(", "tags[", "x or ", "n > 1 and "]


@st.composite
def repeated(draw: st.DrawFn) -> str:
    """One construct repeated up to thousands of times, around a small valid core."""
    unit = draw(st.sampled_from(REPEATABLE))
    times = draw(st.integers(MAX_FILTER_DEPTH - 2, 3000))
    core = draw(st.sampled_from(["1 == n", "ok", "n", "meta", "n > 1", ""]))
    closing = ")" * times if draw(st.booleans()) else ""
    return unit * times + core + closing


def _check(engine: Engine, text: str) -> None:
    try:
        rows = engine.query("c", filter=text, output_fields=["id"])
    except FilterError as exc:
        assert str(exc)  # a message a user can read
        return
    assert {r["id"] for r in rows} <= set(range(30)) - {3, 25}


_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                           HealthCheck.too_slow])


@_SETTINGS
@given(grammar())
@example('meta["d"]["e"] * 1.5 > 1')  # a JSON integer beyond a float's range
@example("n + 9223372036854775807 > 0")
@example("-" * 2000 + "1 == n")  # the item 2
def test_grammar_filters_give_a_result_or_a_filter_error(engine: Engine, text: str) -> None:
    _check(engine, text)


@_SETTINGS
@given(soup)
@example("n == ²")
@example("n == 1" + "9" * 5000)
def test_token_soup_gives_a_result_or_a_filter_error(engine: Engine, text: str) -> None:
    _check(engine, text)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(repeated())
def test_repeated_constructs_give_a_result_or_a_filter_error(engine: Engine, text: str) -> None:
    _check(engine, text)


@pytest.mark.parametrize("text", [
    "-" * 2000 + "1 == n",
    "+" * 65 + "n > 1",
    "array_length(" * 2000 + "tags" + ")" * 2000 + " == 1",
    "n" + " + n" * 3000 + " > 1",
    "n" + " * n" * 65 + " > 1",
    "(" * 40 + "-" * 30 + "n > 1" + ")" * 40,  # signs and parentheses count together
])
def test_every_recursive_construct_counts_toward_the_depth_limit(text: str) -> None:
    with pytest.raises(FilterError, match=rf"more than {MAX_FILTER_DEPTH} levels deep \(the limit\)"):
        compile_filter(text, SCHEMA)


@pytest.mark.parametrize("text", ["-" * 63 + "1 == n", "n" + " + n" * 63 + " > 1", "n + n * n - n / 2 % 3 > 1",
                                  " or ".join(["n > 1"] * 10_000), "-1 + 2 * -3 == n"])
def test_constructs_within_the_limit_still_parse(engine: Engine, text: str) -> None:
    assert compile_filter(text, SCHEMA) is not None
    engine.query("c", filter=text, output_fields=["id"])


@pytest.mark.parametrize("text, message", [
    ("n == 99999999999999999999", "out of the INT64 range"),
    ("n == 1" + "0" * 5000, "out of the INT64 range"),  # past Python's int-from-string digit limit
    ("n > 4294967296 * 4294967296", "out of the INT64 range"),
    ("n > " + " * ".join(["99999999"] * 90_000), "out of the INT64 range"),  # big-integer folding is refused
])
def test_integers_stay_within_int64(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter(text, SCHEMA)


def test_int64_extremes_are_literals(engine: Engine) -> None:
    assert engine.query("c", filter="n > -9223372036854775808 and n < 9223372036854775807", output_fields=["id"])
