"""Segments: growing (in memory, append-only, brute-force search) and sealed (on disk, FAISS index).

Every row carries the id of its partition (the hidden PARTITION_FIELD column, 0 = "_default"), an
insert timestamp and a delete timestamp (MAX while alive); a reader at
timestamp `ts` sees rows with `insert_ts <= ts < delete_ts` (MVCC). Readers work on a
`SegmentView`, a snapshot of array references and row count taken under the collection lock, so
searches run without the lock while writers keep appending.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from vectordb import index as idx
from vectordb.fsutil import atomic_write_bytes, fsync_path
from vectordb.schema import (
    DYNAMIC_FIELD,
    PARTITION_FIELD,
    CollectionSchema,
    DataType,
    IndexParams,
    MetricType,
    RowBatch,
)
from vectordb.tso import MAX_TIMESTAMP

_NUMPY_DTYPES = {
    DataType.INT64: np.int64,
    DataType.FLOAT: np.float64,
    DataType.DOUBLE: np.float64,
    DataType.BOOL: np.bool_,
}


def _to_array(values: Sequence[Any], dtype: DataType | None) -> np.ndarray:
    np_dtype = _NUMPY_DTYPES.get(dtype) if dtype is not None else None
    if np_dtype is not None:
        return np.asarray(values, dtype=np_dtype)
    arr = np.empty(len(values), dtype=object)
    arr[:] = list(values)
    return arr


class Segment:
    """State shared by growing and sealed segments. Mutations happen under the collection lock."""

    def __init__(self, seg_id: int, schema: CollectionSchema) -> None:
        self.id = seg_id
        self.schema = schema
        self.n = 0
        self.pks: list[Any] = []
        self.columns: dict[str, list[Any]] = {f.name: [] for f in schema.column_fields}
        self.columns[PARTITION_FIELD] = []
        self.dynamic: list[dict[str, Any]] | None = [] if schema.enable_dynamic_field else None
        self.vectors = np.empty((0, schema.dim), dtype=np.float32)
        self.norms = np.empty(0, dtype=np.float32)
        self.insert_ts = np.empty(0, dtype=np.int64)
        self.delete_ts = np.empty(0, dtype=np.int64)
        self.delete_version = 0  # bumped on every delete; flush persists deletes when it moved
        self._cache: dict[str, np.ndarray] = {}

    def view(self) -> SegmentView:
        return SegmentView(self, self.n, self.vectors, self.norms, self.insert_ts, self.delete_ts)

    def mark_deleted(self, offset: int, ts: int) -> None:
        if self.delete_ts[offset] == MAX_TIMESTAMP:
            self.delete_ts[offset] = ts
            self.delete_version += 1

    def column_array(self, name: str, n: int) -> np.ndarray:
        """Column `name` (pk, scalar field or DYNAMIC_FIELD) as a numpy array of at least the first n rows."""
        cached = self._cache.get(name)
        if cached is not None and len(cached) >= n:
            return cached[:n]
        if name == self.schema.primary.name:
            arr = _to_array(self.pks[:], self.schema.primary.dtype)
        elif name == DYNAMIC_FIELD:
            arr = _to_array(self.dynamic[:] if self.dynamic is not None else [{}] * self.n, None)
        elif name == PARTITION_FIELD:
            arr = _to_array(self.columns[name][:], DataType.INT64)
        else:
            f = self.schema.field(name)
            assert f is not None
            arr = _to_array(self.columns[name][:], None if f.nullable else f.dtype)  # nulls: objects
        self._cache[name] = arr
        return arr[:n]

    def row(self, offset: int, fields: Sequence[str], vectors: np.ndarray) -> dict[str, Any]:
        """The output fields of one row; dynamic keys are flattened in like Milvus does."""
        out: dict[str, Any] = {}
        pk_name, vec_name = self.schema.primary.name, self.schema.vector.name
        for name in fields:
            if name == pk_name:
                out[name] = self.pks[offset]
            elif name == vec_name:
                out[name] = vectors[offset].tolist()
            elif name == DYNAMIC_FIELD:
                if self.dynamic is not None:
                    out.update(self.dynamic[offset])
            elif name in self.columns:
                out[name] = self.columns[name][offset]
            elif self.dynamic is not None and name in self.dynamic[offset]:
                out[name] = self.dynamic[offset][name]
        return out


_FIXED_ROW_BYTES = 4 + 8 + 8 + 8 + 8  # norm, insert ts, delete ts, pk, partition id


def _estimate_bytes(batch: RowBatch) -> int:
    """Approximate memory of a batch: fixed-width parts exactly, strings and JSON by their length."""
    total = batch.vectors.nbytes + len(batch) * _FIXED_ROW_BYTES
    for values in batch.columns.values():
        for v in values:
            total += len(v) if isinstance(v, str) else len(json.dumps(v)) if isinstance(v, dict | list) else 8
    if batch.dynamic is not None:
        total += sum(len(json.dumps(d)) for d in batch.dynamic)
    if batch.pks and isinstance(batch.pks[0], str):
        total += sum(len(pk) for pk in batch.pks)
    return total


class GrowingSegment(Segment):
    """In-memory, append-only; arrays grow by doubling. Searched by brute force."""

    def __init__(self, seg_id: int, schema: CollectionSchema) -> None:
        super().__init__(seg_id, schema)
        self.frozen = False
        self.size_bytes = 0  # estimated memory of the appended rows (seal by bytes)
        self.first_append_s: float | None = None  # time.monotonic() of the first append (seal by age)

    def age_s(self, now_s: float | None = None) -> float:
        """Seconds since the first row was appended (0 while empty)."""
        if self.first_append_s is None:
            return 0.0
        return (time.monotonic() if now_s is None else now_s) - self.first_append_s

    def append(self, batch: RowBatch, ts: int) -> int:
        """Append the batch; return the offset of its first row."""
        assert not self.frozen, "appending to a frozen segment"
        start, m = self.n, len(batch)
        self._reserve(start + m)
        self.vectors[start : start + m] = batch.vectors
        self.norms[start : start + m] = np.linalg.norm(batch.vectors, axis=1)
        self.insert_ts[start : start + m] = ts
        self.delete_ts[start : start + m] = MAX_TIMESTAMP
        self.pks.extend(batch.pks)
        for name, values in batch.columns.items():
            self.columns[name].extend(values)
        if PARTITION_FIELD not in batch.columns:
            self.columns[PARTITION_FIELD].extend([0] * m)
        if self.dynamic is not None:
            self.dynamic.extend(batch.dynamic if batch.dynamic is not None else [{}] * m)
        if self.first_append_s is None:
            self.first_append_s = time.monotonic()
        self.size_bytes += _estimate_bytes(batch)
        self.n = start + m  # publish last: views only read [:n]
        return start

    def _reserve(self, needed: int) -> None:
        cap = len(self.insert_ts)
        if needed <= cap:
            return
        new_cap = max(needed, cap * 2, 1024)
        # New arrays rather than in-place resize: views hold the old ones and stay valid.
        vectors = np.empty((new_cap, self.schema.dim), dtype=np.float32)
        vectors[: self.n] = self.vectors[: self.n]
        norms = np.empty(new_cap, dtype=np.float32)
        norms[: self.n] = self.norms[: self.n]
        ins = np.empty(new_cap, dtype=np.int64)
        ins[: self.n] = self.insert_ts[: self.n]
        dels = np.full(new_cap, MAX_TIMESTAMP, dtype=np.int64)
        dels[: self.n] = self.delete_ts[: self.n]
        self.vectors, self.norms, self.insert_ts, self.delete_ts = vectors, norms, ins, dels

    def freeze(self) -> None:
        """No more appends: the segment is being sealed."""
        self.frozen = True


class SealedSegment(Segment):
    """Immutable rows persisted under `directory`, with a FAISS index; only delete_ts changes."""

    def __init__(self, seg_id: int, schema: CollectionSchema, directory: Path) -> None:
        super().__init__(seg_id, schema)
        self.directory = directory
        self.index: faiss.Index | None = None
        self.index_params: IndexParams | None = None
        self.persisted_delete_version = 0

    @classmethod
    def seal(cls, growing: GrowingSegment, directory: Path, index_params: IndexParams) -> SealedSegment:
        """Write a frozen growing segment to `directory` (files fsynced) and index it.

        The sealed segment shares the growing segment's delete_ts buffer, so deletes that land while
        the index is built are not lost.
        """
        assert growing.frozen
        n = growing.n
        seg = cls.create(
            growing.id,
            growing.schema,
            directory,
            index_params,
            pks=growing.pks[:n],
            columns={k: v[:n] for k, v in growing.columns.items()},
            dynamic=None if growing.dynamic is None else growing.dynamic[:n],
            vectors=growing.vectors[:n].copy(),
            norms=growing.norms[:n].copy(),
            insert_ts=growing.insert_ts[:n].copy(),
            delete_ts=growing.delete_ts[:n],  # a view: shares memory with the growing segment
        )
        seg.delete_version = growing.delete_version
        return seg

    @classmethod
    def create(
        cls,
        seg_id: int,
        schema: CollectionSchema,
        directory: Path,
        index_params: IndexParams,
        *,
        pks: list[Any],
        columns: dict[str, list[Any]],
        dynamic: list[dict[str, Any]] | None,
        vectors: np.ndarray,
        norms: np.ndarray,
        insert_ts: np.ndarray,
        delete_ts: np.ndarray | None = None,
    ) -> SealedSegment:
        """Persist rows as a new sealed segment in `directory` (files fsynced, meta.json last) and index it."""
        seg = cls(seg_id, schema, directory)
        seg.n = n = len(pks)
        seg.pks, seg.columns, seg.dynamic = pks, columns, dynamic
        seg.vectors, seg.norms, seg.insert_ts = vectors, norms, insert_ts
        seg.delete_ts = np.full(n, MAX_TIMESTAMP, dtype=np.int64) if delete_ts is None else delete_ts
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / "vectors.npy", seg.vectors)
        np.save(directory / "norms.npy", seg.norms)
        np.save(directory / "insert_ts.npy", seg.insert_ts)
        (directory / "rows.json").write_text(
            json.dumps({"pks": seg.pks, "columns": seg.columns, "dynamic": seg.dynamic}, separators=(",", ":"))
        )
        seg.build_index(index_params)
        for name in ("vectors.npy", "norms.npy", "insert_ts.npy", "rows.json"):
            fsync_path(directory / name)
        atomic_write_bytes(directory / "meta.json", json.dumps({"id": seg.id, "rows": n}).encode())
        fsync_path(directory)
        return seg

    def build_index(self, params: IndexParams) -> None:
        """(Re)build and persist the FAISS index; swap it in only when complete."""
        index = idx.build_index(self.vectors, self.norms, params)
        tmp = self.directory / "index.faiss.tmp"
        idx.write_index(index, str(tmp))
        fsync_path(tmp)
        tmp.replace(self.directory / "index.faiss")
        fsync_path(self.directory)
        self.index, self.index_params = index, params

    @classmethod
    def load(
        cls,
        seg_id: int,
        schema: CollectionSchema,
        directory: Path,
        index_params: IndexParams,
        deletes_file: str | None,
    ) -> SealedSegment:
        seg = cls(seg_id, schema, directory)
        seg.vectors = np.load(directory / "vectors.npy", mmap_mode="r")
        seg.norms = np.load(directory / "norms.npy")
        seg.insert_ts = np.load(directory / "insert_ts.npy")
        rows = json.loads((directory / "rows.json").read_text())
        seg.pks, seg.columns, seg.dynamic = rows["pks"], rows["columns"], rows["dynamic"]
        seg.n = len(seg.pks)
        seg.columns.setdefault(PARTITION_FIELD, [0] * seg.n)  # written before partitions existed
        seg.delete_ts = seg._persisted_deletes(deletes_file)
        seg.index = idx.read_index(str(directory / "index.faiss"))
        seg.index_params = index_params
        return seg

    @property
    def deleted_count(self) -> int:
        return int(np.count_nonzero(self.delete_ts[: self.n] != MAX_TIMESTAMP))

    def _persisted_deletes(self, deletes_file: str | None) -> np.ndarray:
        delete_ts = np.full(self.n, MAX_TIMESTAMP, dtype=np.int64)
        if deletes_file:
            deletes = np.load(self.directory / deletes_file)
            if len(deletes):
                delete_ts[deletes[:, 0]] = deletes[:, 1]
        return delete_ts

    def reload_deletes(self, deletes_file: str | None) -> None:
        """Forget the deletes held only in memory: back to what `deletes_file` persisted.

        A new array (views taken before keep theirs); the delete version moves on, so cached
        visibility summaries are recomputed.
        """
        self.delete_ts = self._persisted_deletes(deletes_file)
        self.delete_version += 1
        self.persisted_delete_version = self.delete_version

    def write_deletes(self, name: str, *, up_to_ts: int = MAX_TIMESTAMP) -> None:
        """Persist (offset, delete_ts) of every row deleted at or before `up_to_ts` to `name`.

        Flush passes its checkpoint timestamp: later deletes live in the WAL after the checkpoint and
        may not be durable yet, so they must not reach a file that outlives that WAL.
        """
        snapshot = self.delete_ts.copy()
        offsets = np.flatnonzero((snapshot != MAX_TIMESTAMP) & (snapshot <= up_to_ts))
        pairs = np.stack([offsets, snapshot[offsets]], axis=1).astype(np.int64)
        path = self.directory / name
        with open(path, "wb") as f:
            np.save(f, pairs)
        fsync_path(path)
        fsync_path(self.directory)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Per-query search results from one segment: scores and row offsets, best first."""

    view: SegmentView
    scores: list[np.ndarray]
    offsets: list[np.ndarray]


# Below this share of visible rows a filtered sealed search scores the rows exactly instead of
# asking the ANN index (graph/IVF search with a sparse selector loses recall).
_EXACT_FRACTION = 0.1
_EXACT_MAX_ROWS = 2_000


@dataclass(frozen=True, slots=True)
class SegmentView:
    """A consistent snapshot of a segment's first `n` rows."""

    segment: Segment
    n: int
    vectors: np.ndarray
    norms: np.ndarray
    insert_ts: np.ndarray
    delete_ts: np.ndarray

    def column(self, name: str) -> np.ndarray:
        return self.segment.column_array(name, self.n)

    def visible(self, ts: int) -> np.ndarray:
        return (self.insert_ts[: self.n] <= ts) & (self.delete_ts[: self.n] > ts)

    def row(self, offset: int, fields: Sequence[str]) -> dict[str, Any]:
        return self.segment.row(offset, fields, self.vectors)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        allowed: np.ndarray,
        metric: MetricType,
        search_params: Mapping[str, Any],
    ) -> Candidates:
        """Top-k rows among `allowed` for each (prepared) query."""
        count = int(allowed.sum())
        seg = self.segment
        index = seg.index if isinstance(seg, SealedSegment) else None
        use_exact = index is None or (count < self.n and (count <= _EXACT_MAX_ROWS or count < self.n * _EXACT_FRACTION))
        if use_exact:
            return self._exact(queries, k, np.flatnonzero(allowed), metric)
        assert index is not None
        kk = min(k, count)
        dist, labels = idx.index_search(index, queries, kk, None if count == self.n else allowed, search_params)
        scores, offsets = [], []
        for qi in range(len(queries)):
            good = labels[qi] >= 0
            if good.sum() < kk:  # the ANN search came back short: answer this query exactly
                ex = self._exact(queries[qi : qi + 1], k, np.flatnonzero(allowed), metric)
                scores.append(ex.scores[0])
                offsets.append(ex.offsets[0])
            else:
                scores.append(dist[qi][good])
                offsets.append(labels[qi][good])
        return Candidates(self, scores, offsets)

    def search_column(self, field: str, queries: np.ndarray, k: int, rows: np.ndarray,
                      metric: MetricType) -> Candidates:
        """Top-k of `rows` by the vectors of column `field` (a vector field after the first), exactly."""
        values = self.segment.columns[field]
        vecs = np.asarray([values[i] for i in rows.tolist()], dtype=np.float32) if len(rows) else np.empty((0, 0))
        return self._ranked(queries, k, rows, metric, vecs, np.linalg.norm(vecs, axis=1))

    def _exact(self, queries: np.ndarray, k: int, rows: np.ndarray, metric: MetricType) -> Candidates:
        if len(rows) == self.n:
            vecs, norms = self.vectors[: self.n], self.norms[: self.n]
        else:
            vecs, norms = self.vectors[rows], self.norms[rows]
        return self._ranked(queries, k, rows, metric, vecs, norms)

    def _ranked(self, queries: np.ndarray, k: int, rows: np.ndarray, metric: MetricType, vecs: np.ndarray,
                norms: np.ndarray) -> Candidates:
        """The best `k` of `rows` (whose vectors and norms are `vecs` and `norms`) for each query."""
        if len(rows) == 0:
            empty = [np.empty(0, np.float32)] * len(queries)
            return Candidates(self, empty, [np.empty(0, np.int64)] * len(queries))
        scores = idx.exact_scores(vecs, norms, queries, metric)
        pos, best = idx.top_k_rows(scores, k, metric)
        return Candidates(self, list(best), [rows[p] for p in pos])
