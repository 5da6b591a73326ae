"""Conversions between Milvus's gRPC protobuf messages (`pymilvus.grpc_gen`) and the REST v2 shapes
that `vectordb.rest`'s handlers take and return.

The gRPC front end (`vectordb.grpc_server`) never implements a behaviour itself: it turns a protobuf
request into a REST request body, calls the REST handler, and turns the handler's reply back into
protobuf. This module holds those pure translations:

- columns (`FieldData`, Milvus's column-wise rows) to REST rows and back, the dynamic field (`$meta`,
  a JSON column) merged into / split out of each row, nullable columns through `valid_data`;
- a protobuf `CollectionSchema` to the REST custom-schema object, REST `collections/describe` data to
  `DescribeCollectionResponse`'s schema;
- `KeyValuePair` lists (search and index parameters) to dicts;
- a docvec error to a `common_pb2.Status` carrying the Milvus code of `vectordb.restproto`.

Importing it needs pymilvus (its generated protobuf modules); `vectordb.grpc_server` says so clearly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pymilvus.grpc_gen import common_pb2, schema_pb2

from common.errors import DocvecError, InvalidRequest
from vectordb.restproto import CODE_OK, code_for, wire_message

DYNAMIC_FIELD = "$meta"  # Milvus's name for the JSON column holding dynamic keys
COUNT_FIELD = "count(*)"
_TYPE_PARAMS = ("dim", "max_length", "max_capacity")

_SCALAR_PAYLOAD: dict[int, str] = {
    schema_pb2.Bool: "bool_data",
    schema_pb2.Int8: "int_data",
    schema_pb2.Int16: "int_data",
    schema_pb2.Int32: "int_data",
    schema_pb2.Int64: "long_data",
    schema_pb2.Float: "float_data",
    schema_pb2.Double: "double_data",
    schema_pb2.VarChar: "string_data",
    schema_pb2.String: "string_data",
}


_PLACEHOLDER: dict[int, Any] = {
    schema_pb2.Bool: False, schema_pb2.Int64: 0, schema_pb2.Float: 0.0, schema_pb2.Double: 0.0,
    schema_pb2.VarChar: "", schema_pb2.Array: [],
}


class UnsupportedRequest(InvalidRequest):
    """A gRPC request using a Milvus feature docvec's store does not have (code 1100)."""

    code = "unsupported"


# ------------------------------------------------------------------------------------------ status


def ok_status() -> common_pb2.Status:
    return common_pb2.Status(error_code=common_pb2.Success, code=CODE_OK, reason="")


def error_status(code: int, reason: str, *, retriable: bool = False) -> common_pb2.Status:
    """A Milvus error status: `code` (Milvus 2.3+ `merr` numbering) and the legacy `error_code`
    (UnexpectedError, or CollectionNotExists for code 100, which older clients look at)."""
    legacy = common_pb2.CollectionNotExists if code == 100 else common_pb2.UnexpectedError
    return common_pb2.Status(error_code=legacy, code=code, reason=reason, retriable=retriable)


def status_for(exc: BaseException) -> common_pb2.Status:
    """The status of an error raised by a REST handler: the same code the REST server would answer."""
    message = wire_message(exc) if isinstance(exc, DocvecError) else f"internal error: {type(exc).__name__}"
    code = code_for(exc)
    return error_status(code, message, retriable=code == 2)


# ------------------------------------------------------------------------------------- parameters


def kv_dict(pairs: Iterable[common_pb2.KeyValuePair]) -> dict[str, str]:
    return {p.key: p.value for p in pairs}


def json_param(value: str | None, where: str) -> Any:
    """A parameter pymilvus sent JSON-encoded (`params`), or as `str()` of a number/bool."""
    if value is None or value == "":
        return None
    try:
        return json.loads(value)
    except ValueError as e:
        raise InvalidRequest(f"{where} is not valid JSON: {value!r}") from e


def consistency_name(level: int, use_default: bool) -> str:
    """The consistency level a request asks for; the collection default (not stored by docvec) is Strong,
    as is Milvus's Customized (a guarantee timestamp docvec cannot take)."""
    if use_default or level == common_pb2.Customized:
        return "Strong"
    return str(common_pb2.ConsistencyLevel.Name(level))


# ------------------------------------------------------------------------------------------ schemas


def _type_name(dtype: int) -> str:
    try:
        return str(schema_pb2.DataType.Name(dtype))
    except ValueError:
        return f"DataType({dtype})"


def schema_to_rest(schema: schema_pb2.CollectionSchema) -> dict[str, Any]:
    """A protobuf collection schema as the REST custom-form `schema` object (the REST handler validates it)."""
    if schema.functions:
        raise UnsupportedRequest("collection functions (BM25, embeddings) are not supported by docvec's vector store")
    fields = []
    auto_id = schema.autoID
    for f in schema.fields:
        if f.is_dynamic or f.name == DYNAMIC_FIELD:
            continue
        if f.is_partition_key or f.is_clustering_key:
            raise UnsupportedRequest(f"field {f.name!r}: partition and clustering keys are not supported")
        params = kv_dict(f.type_params)
        entry: dict[str, Any] = {"fieldName": f.name, "dataType": _type_name(f.data_type),
                                 "isPrimary": f.is_primary_key}
        etp = {k: params[k] for k in _TYPE_PARAMS if k in params}
        if etp:
            entry["elementTypeParams"] = etp
        if f.data_type == schema_pb2.Array:
            entry["elementDataType"] = _type_name(f.element_type)
        if f.nullable:
            entry["nullable"] = True
        if f.HasField("default_value"):
            kind = f.default_value.WhichOneof("data")
            if kind is not None:
                entry["defaultValue"] = getattr(f.default_value, kind)
        auto_id = auto_id or (f.is_primary_key and f.autoID)
        fields.append(entry)
    return {"autoID": auto_id, "enableDynamicField": schema.enable_dynamic_field, "fields": fields}


def _default_value(field: Mapping[str, Any]) -> schema_pb2.ValueField | None:
    data = (field.get("defaultValue") or {}).get("Data") or {}
    if len(data) != 1:
        return None
    kind, value = next(iter(data.items()))
    attr = {"LongData": "long_data", "StringData": "string_data", "BoolData": "bool_data",
            "FloatData": "float_data", "DoubleData": "double_data"}.get(kind)
    return schema_pb2.ValueField(**{attr: value}) if attr else None


def schema_from_rest(described: Mapping[str, Any]) -> schema_pb2.CollectionSchema:
    """REST collections/describe data as the protobuf schema of DescribeCollectionResponse."""
    fields = []
    for f in described["fields"]:
        proto = schema_pb2.FieldSchema(
            fieldID=int(f["id"]),
            name=f["name"],
            is_primary_key=bool(f["primaryKey"]),
            description=f.get("description", ""),
            data_type=schema_pb2.DataType.Value(f["type"]),
            type_params=[common_pb2.KeyValuePair(key=p["key"], value=p["value"]) for p in f.get("params", [])],
            autoID=bool(f.get("autoId", False)),
            nullable=bool(f.get("nullable", False)),
        )
        if f.get("elementType"):
            proto.element_type = schema_pb2.DataType.Value(f["elementType"])
        default = _default_value(f)
        if default is not None:
            proto.default_value.CopyFrom(default)
        fields.append(proto)
    return schema_pb2.CollectionSchema(
        name=described["collectionName"],
        description=described.get("description", ""),
        autoID=bool(described.get("autoId", False)),
        fields=fields,
        enable_dynamic_field=bool(described.get("enableDynamicField", False)),
    )


# -------------------------------------------------------------------------------- columns -> rows


def _scalar_values(scalars: schema_pb2.ScalarField) -> list[Any]:
    kind = scalars.WhichOneof("data")
    if kind is None:
        return []
    payload = getattr(scalars, kind)
    if kind == "json_data":
        return [json.loads(v) for v in payload.data]
    if kind == "array_data":
        return [_scalar_values(item) for item in payload.data]
    if kind in ("bool_data", "int_data", "long_data", "float_data", "double_data", "string_data"):
        return list(payload.data)
    raise UnsupportedRequest(f"column data of kind {kind} is not supported by docvec's vector store")


def _column_values(column: schema_pb2.FieldData, num_rows: int) -> list[Any]:
    if column.HasField("vectors"):
        vectors = column.vectors
        if vectors.WhichOneof("data") != "float_vector":
            raise UnsupportedRequest(f"field {column.field_name!r}: only FloatVector data is supported")
        dim = int(vectors.dim)
        flat = np.asarray(vectors.float_vector.data, dtype=np.float32)
        values: list[Any] = list(flat.reshape(-1, dim)) if dim > 0 and flat.size else []
    else:
        values = _scalar_values(column.scalars)
    if column.valid_data:  # nullable: the values of the valid rows only, in order
        it = iter(values)
        values = [next(it, None) if valid else None for valid in column.valid_data]
    if len(values) != num_rows:
        raise InvalidRequest(f"field {column.field_name!r} has {len(values)} values for {num_rows} rows")
    return values


def rows_from_columns(columns: Sequence[schema_pb2.FieldData], num_rows: int) -> list[dict[str, Any]]:
    """Column-wise insert/upsert data as the REST rows (`data: [{field: value}]`), vectors as float lists."""
    if num_rows == 0 and columns:
        num_rows = _first_length(columns)
    rows: list[dict[str, Any]] = [{} for _ in range(num_rows)]
    for column in columns:
        values = _column_values(column, num_rows)
        if column.is_dynamic:
            for row, extra in zip(rows, values, strict=True):
                if extra is not None:
                    if not isinstance(extra, dict):
                        raise InvalidRequest("the dynamic field's values must be JSON objects")
                    row.update(extra)
            continue
        for row, value in zip(rows, values, strict=True):
            row[column.field_name] = value.tolist() if isinstance(value, np.ndarray) else value
    return rows


def _first_length(columns: Sequence[schema_pb2.FieldData]) -> int:
    column = columns[0]
    if column.valid_data:
        return len(column.valid_data)
    if column.HasField("vectors") and column.vectors.dim:
        return len(column.vectors.float_vector.data) // int(column.vectors.dim)
    return len(_scalar_values(column.scalars))


def vectors_from_placeholder(raw: bytes) -> list[list[float]]:
    """A search's serialized PlaceholderGroup (float32 vectors) as lists of floats."""
    group = common_pb2.PlaceholderGroup.FromString(raw)
    if len(group.placeholders) != 1:
        raise InvalidRequest("a search takes one placeholder of query vectors")
    holder = group.placeholders[0]
    if holder.type != common_pb2.FloatVector:
        raise UnsupportedRequest(f"query vectors of type {common_pb2.PlaceholderType.Name(holder.type)} are not "
                                 "supported: only FloatVector")
    return [np.frombuffer(v, dtype="<f4").tolist() for v in holder.values]


def ids_values(ids: schema_pb2.IDs) -> list[Any]:
    kind = ids.WhichOneof("id_field")
    return list(getattr(ids, kind).data) if kind else []


# -------------------------------------------------------------------------------- rows -> columns


def ids_proto(values: Sequence[Any], pk_is_int: bool) -> schema_pb2.IDs:
    if pk_is_int:
        return schema_pb2.IDs(int_id=schema_pb2.LongArray(data=[int(v) for v in values]))
    return schema_pb2.IDs(str_id=schema_pb2.StringArray(data=[str(v) for v in values]))


def _fill_scalars(payload_name: str, dtype: int, values: Sequence[Any], column: schema_pb2.FieldData) -> None:
    if payload_name == "json_data":
        column.scalars.json_data.data.extend(json.dumps(v).encode() for v in values)
        return
    if payload_name == "array_data":
        column.scalars.array_data.element_type = dtype
        element = _SCALAR_PAYLOAD.get(dtype)
        if element is None:
            raise UnsupportedRequest(f"arrays of {_type_name(dtype)} are not supported")
        for value in values:
            item = schema_pb2.ScalarField()
            getattr(item, element).data.extend(value or [])
            column.scalars.array_data.data.append(item)
        return
    getattr(column.scalars, payload_name).data.extend(values)


def columns_from_rows(
    rows: Sequence[Mapping[str, Any]], fields: Sequence[schema_pb2.FieldSchema], names: Sequence[str]
) -> list[schema_pb2.FieldData]:
    """Result rows (query, get, search hits) as columns: one per schema field in `names` (in the
    schema's order), `count(*)` as an Int64 column, every other key into the dynamic `$meta` column."""
    by_name = {f.name: f for f in fields if not f.is_dynamic}
    columns: list[schema_pb2.FieldData] = []
    wanted = set(names)
    if COUNT_FIELD in wanted:
        counts = schema_pb2.ScalarField(long_data=schema_pb2.LongArray(data=[int(r[COUNT_FIELD]) for r in rows]))
        columns.append(schema_pb2.FieldData(type=schema_pb2.Int64, field_name=COUNT_FIELD, scalars=counts))
    for f in fields:
        if f.name in wanted and f.name in by_name:
            columns.append(_column(f, [r.get(f.name) for r in rows]))
    dynamic = [n for n in names if n not in by_name and n != COUNT_FIELD]
    if dynamic:
        meta = schema_pb2.FieldData(type=schema_pb2.JSON, field_name=DYNAMIC_FIELD, is_dynamic=True)
        meta.scalars.json_data.data.extend(
            json.dumps({k: r[k] for k in dynamic if k in r}).encode() for r in rows
        )
        columns.append(meta)
    return columns


def _column(f: schema_pb2.FieldSchema, values: list[Any]) -> schema_pb2.FieldData:
    column = schema_pb2.FieldData(type=f.data_type, field_name=f.name, field_id=f.fieldID)
    if f.data_type == schema_pb2.FloatVector:
        dim = int(kv_dict(f.type_params).get("dim", "0"))
        column.vectors.dim = dim
        column.vectors.float_vector.data.extend(
            np.asarray(values, dtype=np.float32).reshape(-1).tolist() if values else []
        )
        return column
    if f.nullable:
        # Results carry every row (a placeholder where null) and valid_data, as pymilvus reads them back.
        column.valid_data.extend(v is not None for v in values)
        values = [_PLACEHOLDER.get(f.data_type) if v is None else v for v in values]
    if f.data_type == schema_pb2.JSON:
        _fill_scalars("json_data", f.data_type, values, column)
    elif f.data_type == schema_pb2.Array:
        _fill_scalars("array_data", f.element_type, values, column)
    else:
        payload = _SCALAR_PAYLOAD.get(f.data_type)
        if payload is None:
            raise UnsupportedRequest(f"field {f.name!r}: data type {_type_name(f.data_type)} is not supported")
        _fill_scalars(payload, f.data_type, values, column)
    return column
