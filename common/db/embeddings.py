"""Stored chunk vectors by `common.embedding.cache.embedding_key`: read before embedding, written after."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from common.db.store import IN_LIST_MAX, Store

_FLOAT32_LE = np.dtype("<f4")


class Embeddings(Store):
    """The `embedding` table: one float32 vector per key, written once (a key's vector never changes)."""

    def get_many(self, keys: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """The stored vectors of those of `keys` that have one of dimension `dim`."""
        e = self.m.embedding
        unique = list(dict.fromkeys(keys))
        found: dict[str, np.ndarray] = {}
        with self.session.read():
            for begin in range(0, len(unique), IN_LIST_MAX):
                rows = e.select(e.key, e.vector).where(
                    e.key.in_(unique[begin : begin + IN_LIST_MAX]) & (e.dim == dim)
                ).tuples()
                for key, blob in rows:
                    vector = np.frombuffer(bytes(blob), dtype=_FLOAT32_LE)
                    if vector.shape == (dim,):
                        found[key] = vector.astype(np.float32)
        return found

    def put_many(self, vectors: Mapping[str, np.ndarray]) -> None:
        """Store vectors by key; a key already stored keeps its vector (another worker wrote the same)."""
        e = self.m.embedding
        now = time.time()
        rows = [
            {"key": key, "dim": int(v.shape[0]), "vector": np.ascontiguousarray(v, dtype=_FLOAT32_LE).tobytes(),
             "created_at": now}
            for key, v in vectors.items()
        ]
        with self.session.transaction():
            for begin in range(0, len(rows), IN_LIST_MAX):
                e.insert_many(rows[begin : begin + IN_LIST_MAX]).on_conflict_ignore().execute()

    def count(self) -> int:
        with self.session.read():
            return int(self.m.embedding.select().count())
