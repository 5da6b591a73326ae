from __future__ import annotations

import numpy as np
import pytest

from vectordb.schema import CollectionSchema, DataType, FieldSchema


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
