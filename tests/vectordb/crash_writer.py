"""Crash-test writer: upserts/deletes batches forever, printing `ACK <batch id>` after each one is
acknowledged. Run as `python -m tests.vectordb.crash_writer DIR FIRST_BATCH_ID`; the test SIGKILLs it."""

from __future__ import annotations

import random
import sys
from typing import Any

DIM = 4


def batch_ops(batch_id: int) -> tuple[str, list[int]]:
    """The deterministic write of one batch: ("upsert" | "delete" | "flush", primary keys)."""
    rng = random.Random(batch_id)
    roll = rng.random()
    if roll < 0.08:
        return "flush", []
    ids = rng.sample(range(60), rng.randint(1, 8))
    return ("delete" if roll < 0.3 else "upsert"), ids


def apply_model(model: dict[int, int], batch_id: int) -> None:
    op, ids = batch_ops(batch_id)
    for pk in ids:
        if op == "upsert":
            model[pk] = batch_id
        elif op == "delete":
            model.pop(pk, None)


def row(pk: int, batch_id: int) -> dict[str, Any]:
    return {"id": pk, "vec": [float(pk), float(batch_id % 97), 1.0, 0.5], "n": batch_id}


def main() -> None:
    from vectordb import CollectionSchema, DataType, FieldSchema, IndexParams, open_engine

    directory, first = sys.argv[1], int(sys.argv[2])
    eng = open_engine(directory, fsync_policy="batch", seal_rows=40)
    schema = CollectionSchema(
        (
            FieldSchema("id", DataType.INT64, is_primary=True),
            FieldSchema("vec", DataType.FLOAT_VECTOR, dim=DIM),
            FieldSchema("n", DataType.INT64),
        )
    )
    eng.create_collection("c", schema, IndexParams("FLAT", "L2"), if_not_exists=True)
    print("READY", flush=True)
    batch_id = first
    while True:
        op, ids = batch_ops(batch_id)
        if op == "flush":
            eng.flush("c")
        elif op == "delete":
            eng.delete("c", ids=ids)
        else:
            eng.upsert("c", [row(pk, batch_id) for pk in ids])
        print(f"ACK {batch_id}", flush=True)
        batch_id += 1


if __name__ == "__main__":
    main()
