from __future__ import annotations

import numpy as np
import pytest

from vectordb.catalog import Catalog, CollectionMeta
from vectordb.collection import Collection
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams
from vectordb.streaming import StreamingOptions
from vectordb.tso import TimestampOracle
from vectordb.wal import FsyncPolicy


def make_schema(dim: int = 16, *, dynamic: bool = False, pk: DataType = DataType.INT64) -> CollectionSchema:
    return CollectionSchema(
        (
            FieldSchema("id", pk, is_primary=True, max_length=64 if pk is DataType.VARCHAR else None),
            FieldSchema("vec", DataType.FLOAT_VECTOR, dim=dim),
            FieldSchema("title", DataType.VARCHAR, max_length=64),
            FieldSchema("n", DataType.INT64),
            FieldSchema("score", DataType.DOUBLE),
            FieldSchema("ok", DataType.BOOL),
            FieldSchema("meta", DataType.JSON),
        ),
        enable_dynamic_field=dynamic,
    )


def clustered(n: int, dim: int, *, clusters: int = 8, seed: int = 0) -> np.ndarray:
    """Gaussian blobs around random centres: the realistic case for ANN indexes."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim)) * 4
    labels = rng.integers(0, clusters, size=n)
    return (centres[labels] + rng.normal(size=(n, dim))).astype(np.float32)


def make_rows(vectors: np.ndarray, start: int = 0) -> list[dict]:
    return [
        {
            "id": start + i,
            "vec": v.tolist(),
            "title": f"doc-{(start + i) % 13}",
            "n": (start + i) % 100,
            "score": float((start + i) % 7) / 2,
            "ok": (start + i) % 3 == 0,
            "meta": {"bucket": (start + i) % 5, "tags": ["a", "b"] if (start + i) % 2 else []},
        }
        for i, v in enumerate(vectors)
    ]


@pytest.fixture
def schema() -> CollectionSchema:
    return make_schema()


class BareCollection:
    """A Collection without an engine (no directory lock) over `tmp_path`: reopenable, and openable a
    second time without closing the first, which is what a process crash leaves behind."""

    def __init__(self, tmp_path, *, shards_num: int = 1, policy: FsyncPolicy = FsyncPolicy.NONE) -> None:
        self.root = tmp_path
        self.tso = TimestampOracle(tmp_path / "tso.json")
        self.catalog = Catalog(tmp_path / "catalog.json")
        self.options = StreamingOptions(fsync_policy=policy)
        meta = CollectionMeta(id=1, name="c", schema=make_schema(), index=IndexParams("FLAT", "L2"), created_ts=1)
        self.catalog.put(meta)
        self.coll = Collection.create(
            meta, tmp_path / "c", self.tso, self.catalog, streaming=self.options, shards_num=shards_num
        )

    def reopen(self) -> Collection:
        self.coll.close()
        return self.crash_reopen()

    def crash_reopen(self) -> Collection:
        """Open the collection again from disk without closing the live one (as after a crash)."""
        meta = self.catalog.get("c")
        assert meta is not None
        self.coll = Collection.open(meta, self.root / "c", self.tso, self.catalog, streaming=self.options)
        return self.coll
