from __future__ import annotations

import pytest

from vectordb.errors import RowError, SchemaError
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams, validate_rows

from .conftest import clustered, make_rows, make_schema


def test_schema_needs_one_primary_and_one_vector():
    vec = FieldSchema("v", DataType.FLOAT_VECTOR, dim=4)
    with pytest.raises(SchemaError, match="primary key"):
        CollectionSchema((vec,))
    with pytest.raises(SchemaError, match="FLOAT_VECTOR"):
        CollectionSchema((FieldSchema("id", DataType.INT64, is_primary=True),))
    with pytest.raises(SchemaError, match="duplicate"):
        CollectionSchema((FieldSchema("id", DataType.INT64, is_primary=True), vec, FieldSchema("v", DataType.BOOL)))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "v", "dtype": DataType.FLOAT_VECTOR}, "dim"),
        ({"name": "s", "dtype": DataType.VARCHAR}, "max_length"),
        ({"name": "f", "dtype": DataType.FLOAT, "is_primary": True}, "primary key"),
        ({"name": "9bad", "dtype": DataType.BOOL}, "Invalid field name"),
        ({"name": "x", "dtype": "NOPE"}, "unknown data type"),
    ],
)
def test_field_validation(kwargs, match):
    with pytest.raises(SchemaError, match=match):
        FieldSchema(**kwargs)


def test_index_params():
    assert IndexParams().resolved_type.value == "HNSW"
    assert IndexParams("ivf_flat", "l2", {"nlist": 8}).index_type == "IVF_FLAT"
    with pytest.raises(SchemaError, match="index type"):
        IndexParams("DISKANN")
    with pytest.raises(SchemaError, match="metric"):
        IndexParams(metric_type="HAMMING")
    with pytest.raises(SchemaError, match="unknown parameters"):
        IndexParams("HNSW", params={"nlist": 3})


def test_schema_round_trips_through_dict():
    s = make_schema(dynamic=True)
    assert CollectionSchema.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda r: r.pop("title"), r"missing field\(s\) \['title'\]"),
        (lambda r: r.update(vec=[0.0] * 3), "'vec' must have dim 16"),
        (lambda r: r.update(title="x" * 65), "'title' has length 65"),
        (lambda r: r.update(n="7"), "'n' expects INT64"),
        (lambda r: r.update(n=True), "'n' expects INT64"),
        (lambda r: r.update(ok=1), "'ok' expects BOOL"),
        (lambda r: r.update(extra=1), "unknown field"),
        (lambda r: r.update(meta={"x": object()}), "'meta' is not JSON"),
        (lambda r: r.update(vec=[float("nan")] * 16), "NaN"),
    ],
)
def test_row_errors_name_the_field(schema, change, match):
    rows = make_rows(clustered(2, 16))
    change(rows[1])
    with pytest.raises(RowError, match=match) as info:
        validate_rows(schema, rows)
    assert "row 1" in str(info.value)


def test_dynamic_fields_collected():
    s = make_schema(dynamic=True)
    rows = make_rows(clustered(2, 16))
    rows[0]["color"] = "red"
    batch = validate_rows(s, rows)
    assert batch.dynamic == [{"color": "red"}, {}]
    assert batch.columns["score"][1] == 0.5
