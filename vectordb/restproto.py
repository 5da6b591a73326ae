"""The wire format shared by `vectordb.server` and `vectordb.http_client` (Milvus RESTful API v2 subset).

Error codes. Every error is `{"code": <non-zero>, "message": "..."}`. Codes follow Milvus's `merr`
numbering where Milvus has an equivalent; the 185x codes are docvec extensions for distinctions Milvus
folds into 1100/65535. Each code maps back to exactly one docvec exception class, so the HTTP client
raises what the embedded client raises:

    code   Milvus name                  docvec exception
    0      Success                      -
    2      ErrServiceUnavailable        EngineClosed (and any other TransientError)
    100    ErrCollectionNotFound        CollectionNotFound
    101    ErrCollectionNotLoaded       CollectionNotLoaded
    105    ErrCollectionIllegalSchema   SchemaError
    200    ErrPartitionNotFound         PartitionNotFound
    700    ErrIndexNotFound             NotFound
    800    ErrDatabaseNotFound          NotFound (only dbName "default" exists)
    1001   ErrIoFailed                  StorageError
    1100   ErrParameterInvalid          InvalidRequest (also: unsupported feature, a bad name, a bad data
                                        type); FilterError, its message "failed to create query plan: ..."
    1102   ErrParameterTooLarge         LimitExceeded (request body over the server's limit)
    1800   ErrNeedAuthenticate          Unauthorized (missing or wrong bearer token; HTTP 401)
    1801   ErrIncorrectParameterFormat  InvalidRequest (body is not a JSON object, wrong parameter type)
    1802   ErrMissingRequiredParameters InvalidRequest
    1804   ErrInvalidInsertData         RowError
    1806   ErrCheckPrimaryKey           DuplicatePrimaryKey
    1851   (docvec) collection exists   CollectionExists
    1852   (docvec) request timed out   StageTimeout (the server's per-request timeout)
    1853   (docvec) conflict            Conflict
    65535  (unexpected)                 DocvecError (also: a search limit or offset out of range, as Milvus)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from common.errors import (
    Conflict,
    DocvecError,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    StageTimeout,
    TransientError,
    Unauthorized,
)
from vectordb.errors import (
    CollectionExists,
    CollectionNotFound,
    CollectionNotLoaded,
    DuplicatePrimaryKey,
    EngineClosed,
    FieldOptionError,
    FilterError,
    InvalidName,
    PartitionNotFound,
    RowError,
    SchemaError,
    StorageError,
)
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

API_PREFIX = "/v2/vectordb/"
DEFAULT_DB = "default"
DEFAULT_PARTITION = "_default"
LOAD_STATE_LOADED = "LoadStateLoaded"
LOAD_STATE_NOT_EXIST = "LoadStateNotExist"

CODE_OK = 0
CODE_UNAVAILABLE = 2
CODE_COLLECTION_NOT_FOUND = 100
CODE_COLLECTION_NOT_LOADED = 101
CODE_ILLEGAL_SCHEMA = 105
CODE_PARTITION_NOT_FOUND = 200
CODE_INDEX_NOT_FOUND = 700
CODE_DATABASE_NOT_FOUND = 800
CODE_IO_FAILED = 1001
CODE_PARAMETER_INVALID = 1100
CODE_PARAMETER_TOO_LARGE = 1102
CODE_NEED_AUTHENTICATE = 1800
CODE_INCORRECT_FORMAT = 1801
CODE_MISSING_PARAMETER = 1802
CODE_INVALID_INSERT_DATA = 1804
CODE_CHECK_PRIMARY_KEY = 1806
CODE_COLLECTION_EXISTS = 1851
CODE_TIMEOUT = 1852
CODE_CONFLICT = 1853
CODE_UNEXPECTED = 65535


class RequestObject(Mapping[str, Any]):
    """A JSON object of a request whose keys match case-insensitively where no key matches exactly, as
    Milvus's do (Go's `encoding/json`): `autoId` and `autoid` are `autoID`. For the objects that carry
    parameters (the body, `schema`, its `fields`, `indexParams` entries, `params`), never for rows, whose
    keys are field names."""

    __slots__ = ("_folded", "_raw")

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self._raw = raw
        self._folded: dict[str, str] = {}
        for key in raw:
            self._folded.setdefault(key.casefold(), key)

    def __getitem__(self, key: str) -> Any:
        if key in self._raw:
            return self._raw[key]
        return self._raw[self._folded.get(key.casefold(), key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)


def request_object(value: Any, where: str) -> RequestObject:
    """`value` as a `RequestObject`, or `IncorrectParameterFormat` naming `where` if it is not an object."""
    if isinstance(value, RequestObject):
        return value
    if not isinstance(value, Mapping):
        raise IncorrectParameterFormat(f"{where} must be a JSON object")
    return RequestObject(value)


class IncorrectParameterFormat(InvalidRequest):
    """The body is not a JSON object or a parameter has the wrong JSON type."""

    code = "incorrect_parameter_format"


class MissingParameter(InvalidRequest):
    code = "missing_parameter"


class SearchRangeError(InvalidRequest):
    """A search limit or offset outside Milvus's range: code 65535, as Milvus answers it (its message
    starts with `SEARCH_RANGE_PREFIX`, which tells the HTTP client it is an `InvalidRequest`)."""

    code = "search_range"


SEARCH_RANGE_PREFIX = "search limit or offset out of range: "


class DatabaseNotFound(NotFound):
    code = "database_not_found"


class IndexNotFound(NotFound):
    code = "index_not_found"


# Most specific first: `code_for` walks an exception's MRO and takes the first class listed here.
_CLASS_TO_CODE: dict[type[BaseException], int] = {
    CollectionNotFound: CODE_COLLECTION_NOT_FOUND,
    CollectionNotLoaded: CODE_COLLECTION_NOT_LOADED,
    PartitionNotFound: CODE_PARTITION_NOT_FOUND,
    IndexNotFound: CODE_INDEX_NOT_FOUND,
    DatabaseNotFound: CODE_DATABASE_NOT_FOUND,
    SchemaError: CODE_ILLEGAL_SCHEMA,
    RowError: CODE_INVALID_INSERT_DATA,
    FilterError: CODE_PARAMETER_INVALID,
    InvalidName: CODE_PARAMETER_INVALID,
    FieldOptionError: CODE_PARAMETER_INVALID,
    SearchRangeError: CODE_UNEXPECTED,
    IncorrectParameterFormat: CODE_INCORRECT_FORMAT,
    MissingParameter: CODE_MISSING_PARAMETER,
    InvalidRequest: CODE_PARAMETER_INVALID,
    DuplicatePrimaryKey: CODE_CHECK_PRIMARY_KEY,
    CollectionExists: CODE_COLLECTION_EXISTS,
    Conflict: CODE_CONFLICT,
    LimitExceeded: CODE_PARAMETER_TOO_LARGE,
    Unauthorized: CODE_NEED_AUTHENTICATE,
    StorageError: CODE_IO_FAILED,
    StageTimeout: CODE_TIMEOUT,
    EngineClosed: CODE_UNAVAILABLE,
    TransientError: CODE_UNAVAILABLE,
}

_CODE_TO_CLASS: dict[int, type[DocvecError]] = {
    CODE_UNAVAILABLE: EngineClosed,
    CODE_COLLECTION_NOT_FOUND: CollectionNotFound,
    CODE_ILLEGAL_SCHEMA: SchemaError,
    CODE_COLLECTION_NOT_LOADED: CollectionNotLoaded,
    CODE_PARTITION_NOT_FOUND: PartitionNotFound,
    CODE_INDEX_NOT_FOUND: NotFound,
    CODE_DATABASE_NOT_FOUND: NotFound,
    CODE_IO_FAILED: StorageError,
    CODE_PARAMETER_INVALID: InvalidRequest,
    CODE_PARAMETER_TOO_LARGE: LimitExceeded,
    CODE_NEED_AUTHENTICATE: Unauthorized,
    CODE_INCORRECT_FORMAT: InvalidRequest,
    CODE_MISSING_PARAMETER: InvalidRequest,
    CODE_INVALID_INSERT_DATA: RowError,
    CODE_CHECK_PRIMARY_KEY: DuplicatePrimaryKey,
    CODE_COLLECTION_EXISTS: CollectionExists,
    CODE_TIMEOUT: StageTimeout,
    CODE_CONFLICT: Conflict,
}


def code_for(exc: BaseException) -> int:
    """The wire code of an exception raised while serving a request."""
    for cls in type(exc).__mro__:
        code = _CLASS_TO_CODE.get(cls)
        if code is not None:
            return code
    return CODE_UNEXPECTED


_INVALID_NAME = re.compile(r"Invalid (collection|field|partition) name ")  # `check_name`'s words
FILTER_ERROR_PREFIX = "failed to create query plan: "  # Milvus's words for a filter it cannot parse


def wire_message(exc: DocvecError) -> str:
    """An error's message as the server sends it (a filter error in Milvus's words)."""
    return FILTER_ERROR_PREFIX + exc.message if isinstance(exc, FilterError) else exc.message


def error_from(code: int, message: str) -> DocvecError:
    """The docvec exception for an error envelope (the inverse of `code_for` and `wire_message`)."""
    if code == CODE_PARAMETER_INVALID and message.startswith(FILTER_ERROR_PREFIX):
        return FilterError(message[len(FILTER_ERROR_PREFIX):])
    if code == CODE_UNEXPECTED and message.startswith(SEARCH_RANGE_PREFIX):
        return InvalidRequest(message)
    if code == CODE_PARAMETER_INVALID and _INVALID_NAME.match(message):
        return InvalidName(message)
    cls = _CODE_TO_CLASS.get(code)
    if cls is None:
        return DocvecError(f"vector store server error {code}: {message}")
    return cls(message)


# ------------------------------------------------------------------------------------------ schemas

_REST_TYPES: dict[DataType, str] = {
    DataType.INT64: "Int64",
    DataType.VARCHAR: "VarChar",
    DataType.FLOAT_VECTOR: "FloatVector",
    DataType.FLOAT: "Float",
    DataType.DOUBLE: "Double",
    DataType.BOOL: "Bool",
    DataType.JSON: "JSON",
    DataType.ARRAY: "Array",
}
_FROM_REST: dict[str, DataType] = {name: dt for dt, name in _REST_TYPES.items()}
# Milvus's other type names: known, refused as unsupported rather than as unknown.
_UNSUPPORTED_REST_TYPES = ("Int8", "Int16", "Int32", "BinaryVector", "Float16Vector", "BFloat16Vector",
                           "SparseFloatVector")


def rest_type(dtype: DataType) -> str:
    return _REST_TYPES[dtype]


def parse_type(field: str, value: Any) -> DataType:
    """A Milvus data type name, exactly as Milvus spells it (`VarChar`, not `VARCHAR`: Milvus refuses that)."""
    dt = _FROM_REST.get(value) if isinstance(value, str) else None
    if dt is None:
        supported = sorted(_REST_TYPES.values())
        if value in _UNSUPPORTED_REST_TYPES:
            raise InvalidRequest(f"field {field!r}: data type {value} is not supported by docvec's vector store; "
                                 f"use one of {supported}")
        raise InvalidRequest(f"field {field!r}: invalid data type {value!r}; use one of {supported}")
    return dt


def int_param(where: str, value: Any) -> int | None:
    """Milvus sends dim/max_length as numbers or numeric strings ("dim": "1536")."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise SchemaError(f"{where} must be an integer, got {value!r}")


def schema_to_rest(schema: CollectionSchema) -> dict[str, Any]:
    """A CollectionSchema as the custom-form `schema` object of collections/create."""
    fields = []
    for f in schema.fields:
        entry: dict[str, Any] = {"fieldName": f.name, "dataType": rest_type(f.dtype), "isPrimary": f.is_primary}
        params: dict[str, Any] = {}
        if f.dim is not None:
            params["dim"] = f.dim
        if f.max_length is not None:
            params["max_length"] = f.max_length
        if f.element_type is not None:
            entry["elementDataType"] = rest_type(f.element_type)
            params["max_capacity"] = f.max_capacity
        if params:
            entry["elementTypeParams"] = params
        if f.nullable:
            entry["nullable"] = True
        if f.default_value is not None:
            entry["defaultValue"] = f.default_value
        fields.append(entry)
    return {"autoID": schema.primary.auto_id, "enableDynamicField": schema.enable_dynamic_field, "fields": fields}


def index_to_rest(schema: CollectionSchema, index: IndexParams, field: str | None = None) -> dict[str, Any]:
    """One entry of `indexParams` (create) and of indexes/describe (which adds state fields), for vector
    field `field` (None: the first)."""
    name = field or schema.vector.name
    return {
        "fieldName": name,
        "indexName": name,
        "metricType": index.metric_type,
        "indexType": index.index_type,
        "params": dict(index.params),
    }


def index_from_rest(entry: Any) -> IndexParams:
    entry = request_object(entry, "each indexParams entry")
    params = dict(request_object(entry.get("params") or {}, "indexParams[].params"))
    # Milvus lets index_type/metric_type also travel inside params.
    index_type = entry.get("indexType") or params.pop("index_type", None) or "AUTOINDEX"
    metric_type = entry.get("metricType") or params.pop("metric_type", None) or "COSINE"
    params.pop("index_type", None)
    params.pop("metric_type", None)
    clean = {k: int_param(f"index parameter {k}", v) for k, v in params.items()}
    return IndexParams(index_type, metric_type, clean)


def field_from_custom(entry: Any, *, auto_id: bool = False) -> FieldSchema:
    """One `schema.fields` entry; `auto_id` (the schema's `autoID`) goes to the primary key."""
    entry = request_object(entry, "each schema.fields entry")
    name = entry.get("fieldName")
    if not isinstance(name, str):
        raise MissingParameter("schema.fields[].fieldName is required")
    nullable, default = _field_options(name, entry)
    etp = entry.get("elementTypeParams") or {}
    if not isinstance(etp, Mapping):
        raise IncorrectParameterFormat(f"field {name!r}: elementTypeParams must be an object")
    dtype = parse_type(name, entry.get("dataType"))
    is_primary = bool(entry.get("isPrimary", False))
    element = parse_type(name, entry.get("elementDataType")) if dtype is DataType.ARRAY else None
    takes_length = DataType.VARCHAR in (dtype, element)
    return FieldSchema(
        name,
        dtype,
        is_primary,
        int_param(f"field {name!r} dim", etp.get("dim")) if dtype is DataType.FLOAT_VECTOR else None,
        int_param(f"field {name!r} max_length", etp.get("max_length")) if takes_length else None,
        auto_id=auto_id and is_primary,
        element_type=element,
        max_capacity=int_param(f"field {name!r} max_capacity", etp.get("max_capacity")) if element else None,
        nullable=nullable,
        default_value=default,
    )


_DEFAULT_DATA = {DataType.INT64: "LongData", DataType.VARCHAR: "StringData", DataType.BOOL: "BoolData",
                 DataType.FLOAT: "FloatData", DataType.DOUBLE: "DoubleData"}


def default_to_rest(field: FieldSchema) -> dict[str, Any]:
    """A default value as Milvus describes it: `{"Data": {"LongData": 10}}`."""
    return {"Data": {_DEFAULT_DATA[field.dtype]: field.default_value}}


def default_from_rest(value: Any) -> Any:
    """A field's `defaultValue`: plain, or as Milvus describes it (`{"Data": {"StringData": "x"}}`)."""
    if isinstance(value, Mapping) and isinstance(value.get("Data"), Mapping) and len(value["Data"]) == 1:
        return next(iter(value["Data"].values()))
    return value


def _field_options(name: str, entry: Mapping[str, Any]) -> tuple[bool, Any]:
    """(nullable, default value) of a `schema.fields` entry; a nullable partition key is refused, as Milvus does."""
    nullable = entry.get("nullable")
    if nullable is not None and not isinstance(nullable, bool):
        raise IncorrectParameterFormat(f"field {name!r}: nullable must be true or false")
    if nullable and entry.get("isPartitionKey"):
        raise InvalidRequest(f"field {name!r}: partition key field not support nullable")
    return bool(nullable), default_from_rest(entry.get("defaultValue"))


def describe_to_rest(
    name: str, collection_id: int, schema: CollectionSchema, index: IndexParams,
    extra_indexes: Sequence[tuple[str, IndexParams]] = (),
) -> dict[str, Any]:
    """collections/describe data, shaped like Milvus's."""
    fields = []
    for i, f in enumerate(schema.fields):
        params = []
        if f.dim is not None:
            params.append({"key": "dim", "value": str(f.dim)})
        if f.max_length is not None:
            params.append({"key": "max_length", "value": str(f.max_length)})
        if f.max_capacity is not None:
            params.append({"key": "max_capacity", "value": str(f.max_capacity)})
        entry: dict[str, Any] = {
            "id": 100 + i,
            "name": f.name,
            "type": rest_type(f.dtype),
            "primaryKey": f.is_primary,
            "autoId": f.auto_id,
            "partitionKey": False,
            "description": "",
        }
        if f.element_type is not None:
            entry["elementType"] = rest_type(f.element_type)
        if params:
            entry["params"] = params
        entry["nullable"] = f.nullable
        if f.default_value is not None:
            entry["defaultValue"] = default_to_rest(f)
        fields.append(entry)
    return {
        "collectionName": name,
        "collectionID": collection_id,
        "dbName": DEFAULT_DB,
        "description": schema.description,
        "autoId": schema.primary.auto_id,
        "enableDynamicField": schema.enable_dynamic_field,
        "fields": fields,
        "indexes": [
            {"fieldName": schema.vector.name, "indexName": schema.vector.name, "metricType": index.metric_type},
            *({"fieldName": field, "indexName": field, "metricType": extra.metric_type}
              for field, extra in extra_indexes),
        ],
        "load": LOAD_STATE_LOADED,
        "partitionsNum": 1,
        "shardsNum": 1,
        "consistencyLevel": "Strong",
        "properties": [],
        "aliases": [],
    }


def schema_from_describe(data: Mapping[str, Any]) -> CollectionSchema:
    """Rebuild a CollectionSchema from collections/describe data."""
    fields = []
    for f in data.get("fields", []):
        params = {p["key"]: p["value"] for p in f.get("params", [])}
        dtype = parse_type(f["name"], f["type"])
        fields.append(
            FieldSchema(
                f["name"],
                dtype,
                bool(f.get("primaryKey", False)),
                int_param("dim", params.get("dim")),
                int_param("max_length", params.get("max_length")),
                bool(f.get("autoId", False)),
                parse_type(f["name"], f["elementType"]) if f.get("elementType") else None,
                int_param("max_capacity", params.get("max_capacity")),
                bool(f.get("nullable", False)),
                default_from_rest(f.get("defaultValue")),
            )
        )
    return CollectionSchema(
        tuple(fields), bool(data.get("enableDynamicField", False)), str(data.get("description", ""))
    )


def search_params_to_rest(search_params: Any) -> Any:
    """The engine's `{"metric_type": .., "params": {..}, <flat keys>}` as Milvus's `searchParams`."""
    if not isinstance(search_params, Mapping):
        return search_params  # the server hands it on, and the engine rejects it as the embedded one does
    sp = dict(search_params)
    out: dict[str, Any] = {}
    if "metric_type" in sp:
        out["metricType"] = sp.pop("metric_type")
    nested = sp.pop("params", None) or {}
    out["params"] = {**sp, **nested} if isinstance(nested, Mapping) else nested
    return out


def search_params_from_rest(value: Any) -> Any:
    """Milvus's `searchParams{metricType, params{ef|nprobe}}` as the engine's search_params."""
    if value is None or not isinstance(value, Mapping):
        return value
    sp = dict(value)
    out: dict[str, Any] = {}
    metric = sp.pop("metricType", None)
    if metric is not None:
        out["metric_type"] = metric
    if "params" in sp:
        out["params"] = sp.pop("params")
    out.update(sp)  # flat keys (ef, nprobe, metric_type) pass through
    return out


def as_id_list(ids: Any) -> list[Any] | None:
    """Primary keys as a JSON list, or None when `ids` is not a list (the caller raises, as the engine does)."""
    if isinstance(ids, np.ndarray):
        return list(ids.tolist())
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        return None
    return list(ids)
