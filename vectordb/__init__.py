"""docvec's embedded Milvus-style vector store.

client = vectordb.connect("./data/vectors")       # async, in-process
engine = vectordb.open_engine("./data/vectors")   # sync
"""

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
from vectordb.results import Hit
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

__all__ = [
    "CollectionExists",
    "CollectionNotFound",
    "CollectionSchema",
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
    "connect",
    "open_engine",
]
