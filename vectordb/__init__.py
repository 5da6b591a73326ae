"""docvec's embedded Milvus-style vector store.

client = vectordb.connect("./data/vectors")       # async, in-process (a VectorStore)
engine = vectordb.open_engine("./data/vectors")   # sync

Every client implements `VectorStore`; writes take rows or a `ColumnBatch`, filters text or a `Where`.
"""

from vectordb.base import ColumnBatch, VectorStore
from vectordb.client import EmbeddedClient, connect, open_engine
from vectordb.engine import Engine
from vectordb.errors import (
    CollectionExists,
    CollectionNotFound,
    DataDirLocked,
    DuplicatePrimaryKey,
    EngineClosed,
    FilterError,
    RowError,
    SchemaError,
    UnsupportedUri,
)
from vectordb.filters import Where
from vectordb.results import Hit
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

__all__ = [
    "CollectionExists",
    "CollectionNotFound",
    "CollectionSchema",
    "ColumnBatch",
    "DataDirLocked",
    "DataType",
    "DuplicatePrimaryKey",
    "EmbeddedClient",
    "Engine",
    "EngineClosed",
    "FieldSchema",
    "FilterError",
    "Hit",
    "IndexParams",
    "RowError",
    "SchemaError",
    "UnsupportedUri",
    "VectorStore",
    "Where",
    "connect",
    "open_engine",
]
