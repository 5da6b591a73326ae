"""The catalog: collections, their schemas, index parameters, partitions, WAL generation and sealed segments.

Persisted as one JSON document replaced atomically on every change, so a crash leaves either the
old or the new catalog, never a mix. Files on disk that the catalog does not name are garbage from
an interrupted operation and are removed on open.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vectordb.fsutil import atomic_write_bytes
from vectordb.schema import CollectionSchema, IndexParams

CATALOG_VERSION = 1


@dataclass(frozen=True, slots=True)
class SegmentMeta:
    id: int
    rows: int
    deletes_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "rows": self.rows, "deletes_file": self.deletes_file}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SegmentMeta:
        return cls(int(d["id"]), int(d["rows"]), d.get("deletes_file"))


DEFAULT_PARTITION = "_default"
DEFAULT_PARTITION_ID = 0


@dataclass(frozen=True, slots=True)
class PartitionMeta:
    """A named partition; rows carry its `id` (ids are never reused, so a dropped partition's rows
    cannot reappear under a new partition of the same name)."""

    id: int
    name: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PartitionMeta:
        return cls(int(d["id"]), d["name"])


_DEFAULT_PARTITIONS = (PartitionMeta(DEFAULT_PARTITION_ID, DEFAULT_PARTITION),)


@dataclass(frozen=True, slots=True)
class CollectionMeta:
    id: int
    name: str
    schema: CollectionSchema
    index: IndexParams
    created_ts: int
    wal_gen: int = 0
    segments: tuple[SegmentMeta, ...] = ()
    partitions: tuple[PartitionMeta, ...] = _DEFAULT_PARTITIONS
    vector_indexes: tuple[tuple[str, IndexParams], ...] = ()
    """The declared indexes of the vector fields after the first (searched exactly, by their metric)."""

    def with_changes(self, **changes: Any) -> CollectionMeta:
        return replace(self, **changes)

    def index_of(self, field: str | None) -> IndexParams:
        """The index of vector field `field` (None: the first); an extra vector field's own when one was
        created, else the default (AUTOINDEX, COSINE)."""
        if field is None or field == self.schema.vector.name:
            return self.index
        return dict(self.vector_indexes).get(field, IndexParams())

    def partition(self, name: str) -> PartitionMeta | None:
        return next((p for p in self.partitions if p.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "schema": self.schema.to_dict(),
            "index": self.index.to_dict(),
            "created_ts": self.created_ts,
            "wal_gen": self.wal_gen,
            "segments": [s.to_dict() for s in self.segments],
            "partitions": [p.to_dict() for p in self.partitions],
            "vector_indexes": {name: index.to_dict() for name, index in self.vector_indexes},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CollectionMeta:
        return cls(
            int(d["id"]),
            d["name"],
            CollectionSchema.from_dict(d["schema"]),
            IndexParams.from_dict(d["index"]),
            int(d["created_ts"]),
            int(d["wal_gen"]),
            tuple(SegmentMeta.from_dict(s) for s in d["segments"]),
            tuple(PartitionMeta.from_dict(p) for p in d["partitions"]) if "partitions" in d else _DEFAULT_PARTITIONS,
            tuple((name, IndexParams.from_dict(i)) for name, i in d.get("vector_indexes", {}).items()),
        )


class Catalog:
    """Thread-safe map of collection name -> CollectionMeta, persisted atomically on each change."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._collections: dict[str, CollectionMeta] = {}
        if path.exists():
            doc = json.loads(path.read_text())
            if doc.get("version") != CATALOG_VERSION:
                raise ValueError(f"catalog {path} has unsupported version {doc.get('version')!r}")
            self._collections = {c["name"]: CollectionMeta.from_dict(c) for c in doc["collections"]}

    def get(self, name: str) -> CollectionMeta | None:
        with self._lock:
            return self._collections.get(name)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def all(self) -> list[CollectionMeta]:
        with self._lock:
            return list(self._collections.values())

    def put(self, meta: CollectionMeta) -> None:
        with self._lock:
            previous = self._collections.get(meta.name)
            self._collections[meta.name] = meta
            try:
                self._save()
            except BaseException:
                self._restore(meta.name, previous)
                raise

    def remove(self, name: str) -> None:
        with self._lock:
            previous = self._collections.pop(name, None)
            if previous is not None:
                try:
                    self._save()
                except BaseException:
                    self._restore(name, previous)
                    raise

    def _restore(self, name: str, previous: CollectionMeta | None) -> None:
        if previous is None:
            self._collections.pop(name, None)
        else:
            self._collections[name] = previous

    def _save(self) -> None:
        doc = {"version": CATALOG_VERSION, "collections": [c.to_dict() for c in self._collections.values()]}
        atomic_write_bytes(self._path, json.dumps(doc, indent=1).encode())
