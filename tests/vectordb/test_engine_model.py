"""State machine: random insert/upsert/delete/flush/compact/reopen and partition operations checked
against a brute-force reference model (pk -> (tag, partition)); FLAT/L2 makes search deterministic."""

from __future__ import annotations

import shutil
import tempfile

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import vectordb
from vectordb.compaction import CompactionPolicy
from vectordb.schema import CollectionSchema, DataType, FieldSchema, IndexParams

SCHEMA = CollectionSchema(
    (
        FieldSchema("id", DataType.INT64, is_primary=True),
        FieldSchema("v", DataType.FLOAT_VECTOR, dim=4),
        FieldSchema("tag", DataType.INT64),
    )
)
PARTITIONS = ("_default", "p1", "p2")
POLICY = CompactionPolicy(small_segment_rows=6, max_segment_rows=12, auto=False)
keys = st.lists(st.integers(0, 30), min_size=1, max_size=5)
tags = st.integers(0, 9)
partitions = st.sampled_from(PARTITIONS)


def _vec(pk: int, tag: int) -> list[float]:
    return [float(pk), float(tag), 1.0, float(pk % 3)]


class EngineModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.path = tempfile.mkdtemp(prefix="docvec-model-")
        self.eng = self._open()
        self.eng.create_collection("c", SCHEMA, IndexParams("FLAT", "L2"))
        self.model: dict[int, tuple[int, str]] = {}
        self.partitions = {"_default"}

    def _open(self) -> vectordb.Engine:
        return vectordb.open_engine(self.path, seal_rows=8, fsync=False, compaction=POLICY)

    def _rows(self, pks: list[int], tag: int) -> list[dict]:
        return [{"id": k, "v": _vec(k, tag), "tag": tag} for k in pks]

    @rule(pks=keys, tag=tags, partition=partitions)
    def insert(self, pks: list[int], tag: int, partition: str) -> None:
        pks = list(dict.fromkeys(pks))
        if partition not in self.partitions:
            try:
                self.eng.insert("c", self._rows(pks, tag), partition_name=partition)
            except vectordb.errors.PartitionNotFound:
                return
            raise AssertionError("insert into a missing partition accepted")
        if any(k in self.model for k in pks):
            try:
                self.eng.insert("c", self._rows(pks, tag), partition_name=partition)
            except vectordb.DuplicatePrimaryKey:
                return
            raise AssertionError("duplicate insert accepted")
        self.eng.insert("c", self._rows(pks, tag), partition_name=partition)
        self.model.update({k: (tag, partition) for k in pks})

    @precondition(lambda self: len(self.partitions) > 0)
    @rule(pks=keys, tag=tags, data=st.data())
    def upsert(self, pks: list[int], tag: int, data: st.DataObject) -> None:
        partition = data.draw(st.sampled_from(sorted(self.partitions)))
        self.eng.upsert("c", self._rows(pks, tag), partition_name=partition)
        self.model.update({k: (tag, partition) for k in pks})

    @rule(pks=keys)
    def delete(self, pks: list[int]) -> None:
        assert self.eng.delete("c", ids=pks) == len({k for k in pks if k in self.model})
        for k in pks:
            self.model.pop(k, None)

    @rule(tag=tags)
    def delete_where(self, tag: int) -> None:
        gone = [k for k, (t, _) in self.model.items() if t == tag]
        assert self.eng.delete("c", filter=f"tag == {tag}") == len(gone)
        for k in gone:
            del self.model[k]

    @rule()
    def flush(self) -> None:
        self.eng.flush("c")

    @rule()
    def compact(self) -> None:
        self.eng.compact("c")

    @rule()
    def reopen(self) -> None:
        self.eng.close()
        self.eng = self._open()

    @rule(partition=st.sampled_from(PARTITIONS[1:]))
    def create_partition(self, partition: str) -> None:
        if partition in self.partitions:
            return
        self.eng.create_partition("c", partition)
        self.partitions.add(partition)

    @rule(partition=st.sampled_from(PARTITIONS[1:]))
    def drop_partition(self, partition: str) -> None:
        if partition not in self.partitions:
            return
        self.eng.drop_partition("c", partition)
        self.partitions.discard(partition)
        self.model = {k: v for k, v in self.model.items() if v[1] != partition}

    @invariant()
    def counts_and_rows_match(self) -> None:
        assert self.eng.count("c") == len(self.model)
        rows = self.eng.query("c", output_fields=["tag"])
        assert {r["id"]: r["tag"] for r in rows} == {k: t for k, (t, _) in self.model.items()}
        assert sorted(self.eng.list_partitions("c")) == sorted(self.partitions)

    @invariant()
    def search_matches_exact_top_k(self) -> None:
        q = np.array([[5.0, 3.0, 1.0, 2.0]], dtype=np.float32)
        for names in (None, ["p1"] if "p1" in self.partitions else None):
            pool = {k: t for k, (t, p) in self.model.items() if names is None or p in names}
            hits = self.eng.search("c", q, limit=5, partition_names=names)[0]
            dist = {k: float(((np.array(_vec(k, t), dtype=np.float32) - q[0]) ** 2).sum()) for k, t in pool.items()}
            want = sorted(dist.values())[:5]
            assert np.allclose([h.distance for h in hits], want, rtol=1e-5, atol=1e-5)
            assert all(np.isclose(dist[h.id], h.distance, rtol=1e-5, atol=1e-5) for h in hits)

    def teardown(self) -> None:
        self.eng.close()
        shutil.rmtree(self.path, ignore_errors=True)


EngineModel.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_engine_matches_reference_model = EngineModel.TestCase
