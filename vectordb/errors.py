"""vectordb's error types, all rooted in docvec's common error tree."""

from __future__ import annotations

from common.errors import Conflict, InvalidRequest, NotFound, TransientError


class SchemaError(InvalidRequest):
    """A collection schema or index definition is invalid."""

    code = "invalid_schema"


class InvalidName(SchemaError):
    """A collection, field or partition name outside letters, digits and underscores (Milvus: code 1100)."""

    code = "invalid_name"


class FieldOptionError(SchemaError):
    """A field option Milvus refuses with code 1100: a nullable vector or primary key, a default value on
    the primary key or on a JSON, ARRAY or vector field, a default that does not fit its type."""

    code = "invalid_field_option"


class RowError(InvalidRequest):
    """A row does not match the collection schema (the message names the field)."""

    code = "invalid_row"


_SHOWN_FILTER_CHARS = 200  # of the filter quoted in its error message


class FilterError(InvalidRequest):
    """A filter expression failed to parse or refers to an unknown field; carries the 0-based position."""

    code = "invalid_filter"

    def __init__(self, message: str, *, position: int | None = None, expression: str = "") -> None:
        where = f" at position {position}" if position is not None else ""
        if len(expression) > _SHOWN_FILTER_CHARS:
            expression = expression[:_SHOWN_FILTER_CHARS] + "..."
        shown = f" in {expression!r}" if expression else ""
        super().__init__(f"{message}{where}{shown}")
        self.position = position


class CollectionNotFound(NotFound):
    code = "collection_not_found"


class CollectionNotLoaded(InvalidRequest):
    """The collection was released: load it before searching or querying it."""

    code = "collection_not_loaded"


class PartitionNotFound(NotFound):
    code = "partition_not_found"


class PartitionExists(Conflict):
    code = "partition_exists"


class CollectionExists(Conflict):
    code = "collection_exists"


class DuplicatePrimaryKey(Conflict):
    code = "duplicate_primary_key"


class DataDirLocked(Conflict):
    """Another process (or another engine in this process) owns the data directory."""

    code = "data_dir_locked"


class EngineClosed(TransientError):
    code = "engine_closed"


class StorageError(TransientError):
    """Writing or reading the data directory failed (disk full, I/O error)."""

    code = "storage_error"


class UnsupportedUri(InvalidRequest, NotImplementedError):
    """The URI scheme is known but not implemented yet (http://, milvus://)."""

    code = "unsupported_uri"


class ConsistencyTimeout(TransientError):
    """A read waited too long for the serviceable timestamp to reach its guarantee timestamp."""

    code = "consistency_timeout"


class InsecureServer(InvalidRequest):
    """The server would listen beyond loopback without a token (see `vectordb.server.check_exposure`)."""

    code = "insecure_server"
