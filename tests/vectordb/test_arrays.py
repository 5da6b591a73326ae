"""ARRAY fields (element type, capacity) and the filter functions and arithmetic Milvus has for them,
through the embedded engine, across a restart and over REST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vectordb.engine import Engine
from vectordb.errors import FilterError, RowError, SchemaError
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

SCHEMA = CollectionSchema((
    FieldSchema("id", DataType.INT64, is_primary=True),
    FieldSchema("vec", DataType.FLOAT_VECTOR, dim=2),
    FieldSchema("n", DataType.INT64),
    FieldSchema("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=8),
    FieldSchema("nums", DataType.ARRAY, element_type=DataType.INT64, max_capacity=8),
    FieldSchema("meta", DataType.JSON),
))
ROWS = [
    {"id": i, "vec": [1.0, float(i)], "n": i, "tags": tags, "nums": list(range(i)), "meta": {"xs": list(range(i))}}
    for i, tags in enumerate([[], ["red"], ["red", "blue"], ["blue"], ["green", "red", "blue"], ["Red"]])
]


def _ids(engine: Engine, expr: str) -> list[int]:
    return sorted(r["id"] for r in engine.query("c", filter=expr, output_fields=["id"]))


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    eng = Engine.open(tmp_path / "vec", fsync=False)
    eng.create_collection("c", SCHEMA, IndexParams("FLAT", "L2"))
    eng.insert("c", ROWS)
    yield eng
    eng.close()


@pytest.mark.parametrize("expr, expected", [
    ('array_contains(tags, "red")', [1, 2, 4]),
    ('ARRAY_CONTAINS(tags, "red")', [1, 2, 4]),  # function names are case-insensitive
    ('array_contains_all(tags, ["red", "blue"])', [2, 4]),
    ('array_contains_any(tags, ["green", "Red"])', [4, 5]),
    ('not array_contains(tags, "red")', [0, 3, 5]),
    ("array_length(tags) == 0", [0]),
    ("array_length(nums) >= 4", [4, 5]),
    ('tags[0] == "red"', [1, 2]),
    ("nums[2] > 1", [3, 4, 5]),
    ("nums[0] == 0", [1, 2, 3, 4, 5]),
    ("json_contains(meta['xs'], 3)", [4, 5]),
    ("json_contains_any(meta['xs'], [0, 9])", [1, 2, 3, 4, 5]),
    ("10 + 20 <= n * 10 < 20 + 30", [3, 4]),  # Milvus's suite: constant arithmetic around a range
    ("n + 1 == 3", [2]),
    ("n % 2 == 1 and n - 1 > 1", [3, 5]),
    ("-n < -3", [4, 5]),
    ("n / 2 == 1.5", [3]),
])
def test_array_filters_and_arithmetic(engine: Engine, expr: str, expected: list[int]) -> None:
    assert _ids(engine, expr) == expected


@pytest.mark.parametrize("expr, words", [
    ("array_contains(n, 1)", "ARRAY or JSON field"),
    ('array_contains(nums, "x")', "cannot compare"),
    ("array_length(n) == 1", "ARRAY or JSON field"),
    ("tags['a'] == 1", "index it with one integer"),
    ("n + 'a' > 1", "needs numbers"),
    ("n / 0 > 1", None),  # a division by zero per row matches nothing; by a literal zero it is an error
    ("2 / 0 > 1", "division by zero"),
    ("array_length(tags) == 'x'", "cannot compare a number"),
])
def test_bad_array_filters_are_filter_errors(engine: Engine, expr: str, words: str | None) -> None:
    if words is None:
        assert _ids(engine, expr) == []
        return
    with pytest.raises(FilterError, match=words):
        engine.query("c", filter=expr)


def test_array_values_are_checked_and_kept_across_a_restart(tmp_path: Path) -> None:
    eng = Engine.open(tmp_path / "vec", fsync=False)
    eng.create_collection("c", SCHEMA, IndexParams("FLAT", "L2"))
    eng.insert("c", ROWS)
    for bad, words in [({"tags": ["a"] * 5}, "max_capacity 4"), ({"tags": ["toolongtag"]}, "max_length 8"),
                       ({"nums": [1, "2"]}, "element 1"), ({"nums": 3}, "expects an ARRAY")]:
        with pytest.raises(RowError, match=words):
            eng.insert("c", [{**ROWS[1], "id": 99, **bad}])
    eng.flush("c")
    eng.close()
    again = Engine.open(tmp_path / "vec", fsync=False)
    try:
        assert again.describe_collection("c") == SCHEMA
        got = again.get("c", [4], output_fields=["tags", "nums"])
        assert got == [{"id": 4, "tags": ["green", "red", "blue"], "nums": [0, 1, 2, 3]}]
        assert _ids(again, 'array_contains(tags, "blue")') == [2, 3, 4]
    finally:
        again.close()


@pytest.mark.parametrize("options, words", [
    ({"max_capacity": 4}, "element type"),
    ({"element_type": DataType.JSON, "max_capacity": 4}, "element type"),
    ({"element_type": DataType.INT64}, "max_capacity"),
    ({"element_type": DataType.INT64, "max_capacity": 5000}, "max_capacity"),
    ({"element_type": DataType.VARCHAR, "max_capacity": 4}, "max_length"),
    ({"element_type": DataType.INT64, "max_capacity": 4, "is_primary": True}, "primary key"),
])
def test_bad_array_fields_are_schema_errors(options: dict[str, Any], words: str) -> None:
    with pytest.raises(SchemaError, match=words):
        FieldSchema("a", DataType.ARRAY, **options)
