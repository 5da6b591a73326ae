"""Collection schemas, index parameters, and row validation into columnar batches."""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vectordb.errors import FieldOptionError, InvalidName, RowError, SchemaError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DYNAMIC_FIELD = "$meta"
COUNT_FIELD = "count(*)"  # the output field a query asks for to get how many rows match
PARTITION_FIELD = "$partition"  # hidden INT64 column: the id of the partition a row was written to
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")


class DataType(enum.StrEnum):
    INT64 = "INT64"
    VARCHAR = "VARCHAR"
    FLOAT_VECTOR = "FLOAT_VECTOR"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    BOOL = "BOOL"
    JSON = "JSON"
    ARRAY = "ARRAY"


MAX_VECTOR_FIELDS = 4  # Milvus's default limit of vector fields per collection
ARRAY_ELEMENT_TYPES = (DataType.INT64, DataType.VARCHAR, DataType.BOOL, DataType.FLOAT, DataType.DOUBLE)
MAX_ARRAY_CAPACITY = 4096  # Milvus's limit on an ARRAY field's max_capacity


class IndexType(enum.StrEnum):
    AUTOINDEX = "AUTOINDEX"
    FLAT = "FLAT"
    IVF_FLAT = "IVF_FLAT"
    IVF_SQ8 = "IVF_SQ8"
    HNSW = "HNSW"


class MetricType(enum.StrEnum):
    COSINE = "COSINE"
    IP = "IP"
    L2 = "L2"


def check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidName(  # Milvus's words first ("Invalid collection name")
            f"Invalid {kind} name {name!r}: use letters, digits and underscores, starting with a letter or _"
        )


@dataclass(frozen=True, slots=True)
class FieldSchema:
    """One field. `dim` is required for FLOAT_VECTOR, `max_length` (characters) for VARCHAR. `auto_id`: an
    INT64 primary key the store assigns at insert (rows leave it out). ARRAY: a list of at most
    `max_capacity` values of `element_type` (VARCHAR elements each within `max_length`). `nullable`: a
    row may leave the field out or give null; `default_value`: what such a row gets instead (scalar
    fields other than the primary key, JSON and ARRAY, as in Milvus)."""

    name: str
    dtype: DataType
    is_primary: bool = False
    dim: int | None = None
    max_length: int | None = None
    auto_id: bool = False
    element_type: DataType | None = None
    max_capacity: int | None = None
    nullable: bool = False
    default_value: Any = None

    def __post_init__(self) -> None:
        check_name("field", self.name)
        try:
            object.__setattr__(self, "dtype", DataType(self.dtype))
        except ValueError:
            raise SchemaError(f"field {self.name!r}: unknown data type {self.dtype!r}") from None
        if self.dtype is DataType.FLOAT_VECTOR:
            if not isinstance(self.dim, int) or isinstance(self.dim, bool) or not 1 <= self.dim <= 32768:
                raise SchemaError(f"field {self.name!r}: FLOAT_VECTOR needs dim in [1, 32768], got {self.dim!r}")
        elif self.dim is not None:
            raise SchemaError(f"field {self.name!r}: dim only applies to FLOAT_VECTOR")
        if self.dtype is DataType.ARRAY:
            self._check_array()
        elif self.element_type is not None or self.max_capacity is not None:
            raise SchemaError(f"field {self.name!r}: element_type and max_capacity only apply to ARRAY")
        if self.dtype is DataType.VARCHAR or self.element_type is DataType.VARCHAR:
            ml = self.max_length
            if not isinstance(ml, int) or isinstance(ml, bool) or not 1 <= ml <= 65535:
                raise SchemaError(f"field {self.name!r}: VARCHAR needs max_length in [1, 65535], got {ml!r}")
        elif self.max_length is not None:
            raise SchemaError(f"field {self.name!r}: max_length only applies to VARCHAR (and ARRAY of VARCHAR)")
        if self.is_primary and self.dtype not in (DataType.INT64, DataType.VARCHAR):
            raise SchemaError(f"field {self.name!r}: the primary key must be INT64 or VARCHAR")
        if self.auto_id and not (self.is_primary and self.dtype is DataType.INT64):
            raise SchemaError(f"field {self.name!r}: autoID applies only to an INT64 primary key")
        if self.nullable and (self.is_primary or self.dtype is DataType.FLOAT_VECTOR):
            what = "vector type not support null" if self.dtype is DataType.FLOAT_VECTOR else \
                "primary field not support null"
            raise FieldOptionError(f"field {self.name!r}: {what}")
        if self.default_value is not None:
            if self.is_primary:
                raise FieldOptionError(f"field {self.name!r}: primary field not support default_value")
            if self.dtype in (DataType.JSON, DataType.ARRAY, DataType.FLOAT_VECTOR):
                raise FieldOptionError(f"field {self.name!r}: convert defaultValue fail: {self.dtype.value} "
                                       "fields take no default value")
            plain = FieldSchema(self.name, self.dtype, max_length=self.max_length)
            try:
                object.__setattr__(self, "default_value", _check_value(plain, self.default_value, "defaultValue"))
            except RowError as exc:
                raise FieldOptionError(f"field {self.name!r}: convert defaultValue fail: {exc.message}") from None

    def _check_array(self) -> None:
        try:
            element = DataType(self.element_type) if self.element_type is not None else None
        except ValueError:
            element = None
        if element not in ARRAY_ELEMENT_TYPES:
            raise SchemaError(f"field {self.name!r}: ARRAY needs an element type among "
                              f"{[t.value for t in ARRAY_ELEMENT_TYPES]}, got {self.element_type!r}")
        object.__setattr__(self, "element_type", element)
        cap = self.max_capacity
        if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_ARRAY_CAPACITY:
            raise SchemaError(
                f"field {self.name!r}: ARRAY needs max_capacity in [1, {MAX_ARRAY_CAPACITY}], got {cap!r}")
        if self.is_primary:
            raise SchemaError(f"field {self.name!r}: an ARRAY cannot be the primary key")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "dtype": self.dtype.value,
            "is_primary": self.is_primary,
            "dim": self.dim,
            "max_length": self.max_length,
            "auto_id": self.auto_id,
        }
        if self.dtype is DataType.ARRAY:
            assert self.element_type is not None
            out.update(element_type=self.element_type.value, max_capacity=self.max_capacity)
        if self.nullable:
            out["nullable"] = True
        if self.default_value is not None:
            out["default_value"] = self.default_value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FieldSchema:
        element = d.get("element_type")
        return cls(d["name"], DataType(d["dtype"]), d.get("is_primary", False), d.get("dim"), d.get("max_length"),
                   d.get("auto_id", False), DataType(element) if element else None, d.get("max_capacity"),
                   d.get("nullable", False), d.get("default_value"))

    @property
    def optional(self) -> bool:
        """Whether a row may leave the field out (or give null): nullable or with a default value."""
        return self.nullable or self.default_value is not None


@dataclass(frozen=True, slots=True)
class CollectionSchema:
    """Fields of a collection: exactly one INT64/VARCHAR primary key and exactly one FLOAT_VECTOR."""

    fields: tuple[FieldSchema, ...]
    enable_dynamic_field: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "fields", tuple(self.fields))
        if not all(isinstance(f, FieldSchema) for f in self.fields):
            raise SchemaError("schema fields must be FieldSchema instances")
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise SchemaError(f"duplicate field names: {dupes}")
        primaries = [f for f in self.fields if f.is_primary]
        if len(primaries) != 1:
            raise SchemaError(f"a schema needs exactly one primary key field, found {len(primaries)}")
        vectors = [f for f in self.fields if f.dtype is DataType.FLOAT_VECTOR]
        if not 1 <= len(vectors) <= MAX_VECTOR_FIELDS:
            raise SchemaError(f"a schema needs one to {MAX_VECTOR_FIELDS} FLOAT_VECTOR fields, found {len(vectors)}")

    @property
    def primary(self) -> FieldSchema:
        return next(f for f in self.fields if f.is_primary)

    @property
    def vectors(self) -> tuple[FieldSchema, ...]:
        """Every vector field, in schema order."""
        return tuple(f for f in self.fields if f.dtype is DataType.FLOAT_VECTOR)

    @property
    def vector(self) -> FieldSchema:
        """The first vector field: the one the collection's FAISS index covers (see `extra_vectors`)."""
        return self.vectors[0]

    @property
    def extra_vectors(self) -> tuple[FieldSchema, ...]:
        """Vector fields after the first: stored as columns and searched exactly (`anns_field`)."""
        return self.vectors[1:]

    @property
    def dim(self) -> int:
        assert self.vector.dim is not None
        return self.vector.dim

    @property
    def scalar_fields(self) -> tuple[FieldSchema, ...]:
        """Every field except the primary key and the vectors."""
        return tuple(f for f in self.fields if not f.is_primary and f.dtype is not DataType.FLOAT_VECTOR)

    @property
    def column_fields(self) -> tuple[FieldSchema, ...]:
        """What a segment keeps as columns: every field except the primary key and the first vector."""
        first = self.vector.name
        return tuple(f for f in self.fields if not f.is_primary and f.name != first)

    def field(self, name: str) -> FieldSchema | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": [f.to_dict() for f in self.fields],
            "enable_dynamic_field": self.enable_dynamic_field,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CollectionSchema:
        return cls(
            tuple(FieldSchema.from_dict(f) for f in d["fields"]),
            d.get("enable_dynamic_field", False),
            d.get("description", ""),
        )


_INDEX_PARAM_KEYS = {
    IndexType.FLAT: set(),
    IndexType.IVF_FLAT: {"nlist"},
    IndexType.IVF_SQ8: {"nlist"},
    IndexType.HNSW: {"M", "efConstruction"},
}


@dataclass(frozen=True, slots=True)
class IndexParams:
    """Index of the vector field. AUTOINDEX resolves to HNSW."""

    index_type: str = "AUTOINDEX"
    metric_type: str = "COSINE"
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "index_type", IndexType(str(self.index_type).upper()).value)
        except ValueError:
            raise SchemaError(
                f"unsupported index type {self.index_type!r}; use one of {[t.value for t in IndexType]}"
            ) from None
        try:
            object.__setattr__(self, "metric_type", MetricType(str(self.metric_type).upper()).value)
        except ValueError:
            raise SchemaError(
                f"unsupported metric type {self.metric_type!r}; use one of {[m.value for m in MetricType]}"
            ) from None
        params = dict(self.params or {})
        unknown = set(params) - _INDEX_PARAM_KEYS[self.resolved_type]
        if unknown:
            raise SchemaError(f"unknown parameters {sorted(unknown)} for index type {self.index_type}")
        for key, value in params.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65536:
                raise SchemaError(f"index parameter {key} must be an integer in [1, 65536], got {value!r}")
        object.__setattr__(self, "params", params)

    @property
    def resolved_type(self) -> IndexType:
        t = IndexType(self.index_type)
        return IndexType.HNSW if t is IndexType.AUTOINDEX else t

    @property
    def metric(self) -> MetricType:
        return MetricType(self.metric_type)

    def to_dict(self) -> dict[str, Any]:
        return {"index_type": self.index_type, "metric_type": self.metric_type, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> IndexParams:
        return cls(d["index_type"], d["metric_type"], d.get("params", {}))


@dataclass(frozen=True, slots=True)
class RowBatch:
    """Validated rows in columnar form. `columns` holds every field but the primary key and the first
    vector (`CollectionSchema.column_fields`)."""

    pks: list[Any]
    vectors: np.ndarray  # float32, shape (n, dim)
    columns: dict[str, list[Any]]
    dynamic: list[dict[str, Any]] | None

    def __len__(self) -> int:
        return len(self.pks)

    def select(self, positions: Sequence[int]) -> RowBatch:
        return RowBatch(
            [self.pks[i] for i in positions],
            self.vectors[list(positions)],
            {k: [v[i] for i in positions] for k, v in self.columns.items()},
            None if self.dynamic is None else [self.dynamic[i] for i in positions],
        )


def normalize_pk(schema: CollectionSchema, value: Any, *, where: str = "primary key") -> Any:
    pk = schema.primary
    return _check_value(pk, value, where)


def _check_value(f: FieldSchema, value: Any, where: str) -> Any:
    dt = f.dtype
    if value is None:
        if f.default_value is not None:
            return f.default_value
        if f.nullable:
            return None
        raise RowError(f"{where}: field {f.name!r} is null; it is not nullable and has no default value")
    if dt is DataType.INT64:
        if isinstance(value, np.integer):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise RowError(f"{where}: field {f.name!r} expects INT64, got {type(value).__name__}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise RowError(f"{where}: field {f.name!r} value {value} is out of INT64 range")
        return value
    if dt in (DataType.FLOAT, DataType.DOUBLE):
        if isinstance(value, np.floating | np.integer):
            value = float(value)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise RowError(f"{where}: field {f.name!r} expects {dt.value}, got {type(value).__name__}")
        return float(value)
    if dt is DataType.BOOL:
        if isinstance(value, np.bool_):
            value = bool(value)
        if not isinstance(value, bool):
            raise RowError(f"{where}: field {f.name!r} expects BOOL, got {type(value).__name__}")
        return value
    if dt is DataType.VARCHAR:
        if not isinstance(value, str):
            raise RowError(f"{where}: field {f.name!r} expects VARCHAR, got {type(value).__name__}")
        assert f.max_length is not None
        if len(value) > f.max_length:
            raise RowError(f"{where}: field {f.name!r} has length {len(value)}, above its max_length {f.max_length}")
        return value
    if dt is DataType.JSON:
        return _check_json(f.name, value, where)
    if dt is DataType.ARRAY:
        return _check_array(f, value, where)
    if dt is DataType.FLOAT_VECTOR:  # a vector field after the first, kept as a column of float lists
        return _check_vector(f, value, where).tolist()
    raise RowError(f"{where}: field {f.name!r} has unsupported type {dt}")


def _check_array(f: FieldSchema, value: Any, where: str) -> list[Any]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list | tuple):
        raise RowError(f"{where}: field {f.name!r} expects an ARRAY (a list), got {type(value).__name__}")
    assert f.element_type is not None and f.max_capacity is not None
    if len(value) > f.max_capacity:
        raise RowError(f"{where}: field {f.name!r} has {len(value)} elements, above its max_capacity {f.max_capacity}")
    element = FieldSchema(f.name, f.element_type, max_length=f.max_length)
    return [_check_value(element, item, f"{where} element {i}") for i, item in enumerate(value)]


def _check_json(name: str, value: Any, where: str) -> Any:
    try:
        # Round-trip: stores exactly what a reload from disk would give back.
        return json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise RowError(f"{where}: field {name!r} is not JSON-serialisable: {e}") from None


def _check_vector(f: FieldSchema, value: Any, where: str) -> np.ndarray:
    if value is None:
        raise RowError(f"{where}: field {f.name!r} is null; it is not nullable and has no default value")
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise RowError(f"{where}: field {f.name!r} must be a list of floats") from None
    if arr.ndim != 1 or arr.shape[0] != f.dim:
        raise RowError(f"{where}: field {f.name!r} must have dim {f.dim}, got shape {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise RowError(f"{where}: field {f.name!r} contains NaN or infinity")
    return arr


def validate_rows(schema: CollectionSchema, rows: Sequence[Mapping[str, Any]],
                  new_ids: Callable[[int], list[int]] | None = None) -> RowBatch:
    """Check every row against the schema and return them as columns. Errors name the row and field.

    An autoID primary key: rows to insert leave it out and `new_ids(n)` gives theirs; rows to upsert
    (`new_ids` None) name the rows they replace by it, as with any other key."""
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise RowError("rows must be a list of dicts")
    if not rows:
        raise RowError("no rows given")
    known = {f.name for f in schema.fields}
    pk_field, vec_field = schema.primary, schema.vector
    assigned = pk_field.auto_id and new_ids is not None
    required = [f.name for f in schema.fields if not (assigned and f.is_primary) and not f.optional]
    scalars = schema.column_fields
    pks: list[Any] = []
    vectors = np.empty((len(rows), schema.dim), dtype=np.float32)
    columns: dict[str, list[Any]] = {f.name: [] for f in scalars}
    dynamic: list[dict[str, Any]] | None = [] if schema.enable_dynamic_field else None
    for i, row in enumerate(rows):
        where = f"row {i}"
        if not isinstance(row, Mapping):
            raise RowError(f"{where}: expected a dict, got {type(row).__name__}")
        missing = [name for name in required if name not in row]
        if missing:
            raise RowError(f"{where}: missing field(s) {missing}")
        if assigned and pk_field.name in row:
            raise RowError(f"{where}: the primary key {pk_field.name!r} is assigned by the store (autoID); "
                           "leave it out of the rows to insert")
        extra = [k for k in row if k not in known]
        if extra and dynamic is None:
            raise RowError(f"{where}: unknown field(s) {extra}; the schema does not enable dynamic fields")
        if not assigned:
            pks.append(_check_value(pk_field, row[pk_field.name], where))
        vectors[i] = _check_vector(vec_field, row[vec_field.name], where)
        for f in scalars:
            columns[f.name].append(_check_value(f, row.get(f.name), where))
        if dynamic is not None:
            if any(not isinstance(k, str) for k in extra):
                raise RowError(f"{where}: dynamic field names must be strings")
            dynamic.append(_check_json(DYNAMIC_FIELD, {k: row[k] for k in extra}, where))
    if assigned:
        assert new_ids is not None
        pks = new_ids(len(rows))
    return RowBatch(pks, vectors, columns, dynamic)


def validate_columns(
    schema: CollectionSchema,
    ids: Sequence[Any],
    vectors: Any,
    columns: Mapping[str, Sequence[Any]],
    *,
    id_field: str,
    vector_field: str,
) -> RowBatch:
    """A columnar batch (see `vectordb.base.ColumnBatch`) checked against the schema: the vectors as one
    float32 matrix (copied, so the caller may reuse its array), each scalar value as `validate_rows`
    checks it. Errors name the row and field."""
    pk_field, vec_field = schema.primary, schema.vector
    if (id_field, vector_field) != (pk_field.name, vec_field.name):
        raise RowError(
            f"the batch's key and vector fields are {id_field!r} and {vector_field!r}; "
            f"the schema's are {pk_field.name!r} and {vec_field.name!r}"
        )
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence | np.ndarray):
        raise RowError("ids must be a list of primary keys")
    n = len(ids)
    if not n:
        raise RowError("no rows given")
    try:
        matrix = np.array(vectors, dtype=np.float32, order="C")
    except (TypeError, ValueError):
        raise RowError(f"field {vec_field.name!r} must be a float matrix") from None
    if matrix.shape != (n, schema.dim):
        raise RowError(f"field {vec_field.name!r} must have shape ({n}, {schema.dim}), got {list(matrix.shape)}")
    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        raise RowError(f"row {int(np.argmin(finite))}: field {vec_field.name!r} contains NaN or infinity")
    scalars = schema.column_fields
    missing = [f.name for f in scalars if f.name not in columns]
    if missing:
        raise RowError(f"missing column(s) {missing}")
    extra = [k for k in columns if schema.field(k) is None or k in (pk_field.name, vec_field.name)]
    if extra:
        raise RowError(f"unknown column(s) {extra}; a column batch carries the schema's scalar fields only")
    out: dict[str, list[Any]] = {}
    for f in scalars:
        values = columns[f.name]
        if len(values) != n:
            raise RowError(f"column {f.name!r} has {len(values)} values for {n} rows")
        if isinstance(values, np.ndarray):
            values = values.tolist()
        out[f.name] = [_check_value(f, v, f"row {i}") for i, v in enumerate(values)]
    keys = ids.tolist() if isinstance(ids, np.ndarray) else ids
    pks = [_check_value(pk_field, v, f"row {i}") for i, v in enumerate(keys)]
    dynamic: list[dict[str, Any]] | None = [{} for _ in range(n)] if schema.enable_dynamic_field else None
    return RowBatch(pks, matrix, out, dynamic)


def is_finite_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
