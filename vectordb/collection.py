"""One collection as the engine uses it: `CollectionCore`'s state and writes, plus reads, flush,
index rebuilds and the compaction swap.

Reads: the consistency level gives a guarantee timestamp; the read waits until every channel's
serviceable timestamp reaches it, then runs at that serviceable timestamp under MVCC
(insert_ts <= read_ts < delete_ts). Reads take a snapshot of segment views under the lock and
compute without it.

Flush seals the growing segment, rotates every channel to a new WAL generation (the checkpoint
recorded in the catalog as `wal_gen`) and deletes the generations it covers. `flush_lock`
serialises flush, index rebuilds and compaction, which do their slow I/O outside `lock`; the
compaction's merge is `vectordb.compaction`'s, its swap into memory and the catalog is here.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vectordb.catalog import SegmentMeta
from vectordb.collection_core import CollectionCore
from vectordb.errors import CollectionNotFound, InvalidRequest, StorageError
from vectordb.evaluation import FilterBudget
from vectordb.expr import Expr
from vectordb.index import check_metric, higher_is_better, prepare_queries
from vectordb.results import Hit
from vectordb.schema import DYNAMIC_FIELD, CollectionSchema, IndexParams
from vectordb.search import reduce_hits, search_segments
from vectordb.segment import GrowingSegment, SealedSegment
from vectordb.streaming.consistency import ConsistencyLevel, guarantee_ts, parse_level
from vectordb.wal import Op, WalRecord

RANGE_SEARCH_FETCH = 4  # a range search short of hits looks this many times deeper, again
RANGE_SEARCH_MAX_FETCH = 16_384  # ...up to the largest search limit (`validation.MAX_LIMIT`)


def _pop_flag(params: dict[str, Any], keys: tuple[str, ...]) -> bool:
    value = False
    for key in keys:
        given = params.pop(key, None)
        if given is not None:
            if not isinstance(given, bool):
                raise InvalidRequest(f"search parameter {key} must be true or false, got {given!r}")
            value = given
    return value


@dataclass(frozen=True, slots=True)
class DistanceRange:
    """Milvus's range search: hits beyond `radius` are dropped, and (with `range_filter`) those nearer
    than it. L2 (lower is closer): range_filter <= distance < radius; IP and COSINE (higher is closer):
    radius < distance <= range_filter."""

    radius: float
    inner: float | None
    higher: bool

    @classmethod
    def pop_from(cls, params: dict[str, Any], higher: bool) -> DistanceRange | None:
        radius, inner = params.pop("radius", None), params.pop("range_filter", None)
        if radius is None:
            if inner is not None:
                raise InvalidRequest("range_filter needs a radius")
            return None
        for key, value in (("radius", radius), ("range_filter", inner)):
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)
                                      or not math.isfinite(value)):
                raise InvalidRequest(f"search parameter {key} must be a finite number, got {value!r}")
        if inner is not None and (inner <= radius if higher else inner >= radius):
            closer = "above" if higher else "below"
            raise InvalidRequest(f"range_filter must be {closer} radius for this metric, got range_filter "
                                 f"{inner} and radius {radius}")
        return cls(float(radius), None if inner is None else float(inner), higher)

    def beyond(self, distance: float) -> bool:
        """Past the radius: every farther hit is out of range too."""
        return distance <= self.radius if self.higher else distance >= self.radius

    def holds(self, distance: float) -> bool:
        if self.higher:
            return distance > self.radius and (self.inner is None or distance <= self.inner)
        return distance < self.radius and (self.inner is None or distance >= self.inner)


def resolve_output_fields(
    schema: CollectionSchema, output_fields: Sequence[str] | None, *, include_pk: bool
) -> list[str]:
    """None: primary key (if `include_pk`), scalar and dynamic fields. "*": everything incl. the vector."""
    dyn = [DYNAMIC_FIELD] if schema.enable_dynamic_field else []
    pk = [schema.primary.name] if include_pk else []
    if output_fields is None:
        return pk + [f.name for f in schema.scalar_fields] + dyn
    if isinstance(output_fields, str):
        raise InvalidRequest("output_fields must be a list of field names")
    names: list[str] = list(pk)
    for name in output_fields:
        if name == "*":
            names += [f.name for f in schema.fields] + dyn
        elif schema.field(name) is not None or schema.enable_dynamic_field:
            names.append(name)
        else:
            raise InvalidRequest(f"unknown output field {name!r}")
    return list(dict.fromkeys(names))


@dataclass(slots=True)
class Merge:
    """One compaction output: `segment` holds `offsets[i]` rows of `sources[i]`, in order (None: no row
    survived)."""

    sources: list[SealedSegment]
    offsets: list[np.ndarray]
    segment: SealedSegment | None


class Collection(CollectionCore):
    """Live state of one collection; every public method is thread-safe."""

    def guarantee_ts(self, level: str | ConsistencyLevel, session_ts: int | None = None) -> int:
        """The timestamp a read at consistency `level` must wait for (see `streaming.consistency`)."""
        return guarantee_ts(
            level, self._tso, session_ts=session_ts, bounded_staleness_ms=self.options.bounded_staleness_ms
        )

    def wait_serviceable(self, ts: int, timeout_s: float | None = None) -> int:
        """Wait until every channel's serviceable timestamp is >= `ts`; return the timestamp to read at.

        Raises ConsistencyTimeout after `timeout_s` (default: the engine's read timeout).
        """
        deadline = time.monotonic() + (self.options.read_timeout_s if timeout_s is None else timeout_s)
        while True:
            if self.needs_recovery:
                self.recover()
            try:
                return min(ch.wait_serviceable(ts, deadline) for ch in self.channels)
            except StorageError:
                if not self.needs_recovery or time.monotonic() >= deadline:
                    raise
                # a write failed while this read waited for it: rebuild without it, then wait again

    def serviceable_ts(self) -> int:
        """The timestamp at which every channel's writes are applied and durable (no waiting)."""
        return min(ch.serviceable_ts for ch in self.channels)

    def read_ts(
        self,
        level: str | ConsistencyLevel = ConsistencyLevel.STRONG,
        session_ts: int | None = None,
        timeout_s: float | None = None,
    ) -> int:
        """The MVCC timestamp for a read at `level`: Eventually reads what is serviceable now."""
        if parse_level(level) is ConsistencyLevel.EVENTUALLY:
            return self.serviceable_ts()
        return self.wait_serviceable(self.guarantee_ts(level, session_ts), timeout_s)

    def search(
        self,
        queries: np.ndarray,
        limit: int,
        expr: Expr | None,
        output_fields: list[str],
        search_params: Mapping[str, Any] | None,
        *,
        read_ts: int | None = None,
        anns_field: str | None = None,
    ) -> list[list[Hit]]:
        """Top-`limit` hits per query at `read_ts` (default: a Strong read). A range search (`radius`,
        optionally `range_filter`, in the search params) keeps the hits within the range (see
        `DistanceRange`). `anns_field`: a vector field after the first, searched exactly."""
        column = anns_field if anns_field is not None and anns_field != self.meta.schema.vector.name else None
        index = self.meta.index_of(column)
        params = check_metric(index, search_params)
        metric = index.metric
        higher = higher_is_better(metric)
        within = DistanceRange.pop_from(params, higher)
        sealed_only = _pop_flag(params, ("ignore_growing", "ignoreGrowing"))
        q = prepare_queries(queries, metric)
        ts, views = self.snapshot(self.read_ts() if read_ts is None else read_ts)
        if sealed_only:  # Milvus's ignoreGrowing: rows not yet sealed into a segment are not searched
            views = [v for v in views if not isinstance(v.segment, GrowingSegment)]
        k = limit
        budget = FilterBudget()  # one for the whole request: every segment, every deeper round
        rows = sum(view.n for view in views)
        while True:
            budget.charge_rows(expr, rows)  # before any row is read: a filter too costly is refused at once
            per_segment = search_segments(views, ts, q, k, expr, metric, params, self._visibility, budget, column)
            hits = reduce_hits(per_segment, len(q), k, output_fields, higher)
            if within is None:
                return hits
            kept = [[h for h in found if within.holds(h.distance)][:limit] for found in hits]
            # Hits nearer than range_filter are dropped: look deeper while a query may still find more
            # (it came back full, and its farthest candidate is not beyond the radius yet).
            deeper = any(len(got) < limit and len(found) == k and not within.beyond(found[-1].distance)
                         for got, found in zip(kept, hits, strict=True))
            if not deeper or k >= RANGE_SEARCH_MAX_FETCH:
                return kept
            k = min(k * RANGE_SEARCH_FETCH, RANGE_SEARCH_MAX_FETCH)

    def query(
        self,
        expr: Expr | None,
        output_fields: list[str],
        limit: int | None,
        offset: int,
        *,
        read_ts: int | None = None,
    ) -> list[dict]:
        """Rows matching `expr` at `read_ts` (default: a Strong read)."""
        ts, views = self.snapshot(self.read_ts() if read_ts is None else read_ts)
        rows: list[dict[str, Any]] = []
        skip = offset
        budget = FilterBudget.for_rows(expr, sum(view.n for view in views))
        for view in views:
            for off in self._matching(view, ts, expr, budget).tolist():
                if skip:
                    skip -= 1
                    continue
                if limit is not None and len(rows) >= limit:
                    return rows
                rows.append(view.row(off, output_fields))
        return rows

    def get(self, pks: Sequence[Any], output_fields: list[str]) -> list[dict[str, Any]]:
        with self.lock:
            self._heal_locked()
            out = []
            for pk in pks:
                loc = self.pk_map.get(pk)
                if loc is not None:
                    seg = self.segments[loc[0]]
                    out.append(seg.row(loc[1], output_fields, seg.vectors))
            return out

    def count(self) -> int:
        with self.lock:
            self._heal_locked()
            return len(self.pk_map)

    # ---------------------------------------------------------------------------------------- flush

    def flush(self) -> None:
        """Seal the growing segment(s) to disk with their index, persist deletes, rotate the WAL."""
        with self.flush_lock:
            with self.lock:
                if self.wal is None:
                    raise CollectionNotFound(f"collection {self.name!r} was dropped or the engine closed")
                self._heal_locked()
                to_seal = [s for s in self.segments.values() if isinstance(s, GrowingSegment) and s.n]
                dirty = [
                    s
                    for s in self.segments.values()
                    if isinstance(s, SealedSegment) and s.delete_version != s.persisted_delete_version
                ]
                wal_empty = all(ch.writer is None or ch.writer.size_bytes == 0 for ch in self.channels)
                if not to_seal and not dirty and wal_empty:
                    return
                if self.growing.n:
                    self.growing.freeze()
                    self.growing = GrowingSegment(self._tso.next(), self.schema)
                    self.segments[self.growing.id] = self.growing
                new_gen = self._wal_gens()[-1] + 1
                # Every write logged so far is in the growing segments being sealed: the new
                # generation is the checkpoint recovery will replay from once the catalog has it.
                marker = WalRecord(Op.FLUSH.value, self._tso.next(), [], info={"checkpoint_gen": new_gen})
                # The deletes applied so far (all before the marker) are persisted with the segments;
                # later ones live in the new WAL generation until the next flush.
                cut_versions = {seg.id: seg.delete_version for seg in [*dirty, *to_seal]}
                for ch in self.channels:
                    ch.rotate(new_gen, marker)
                index_params = self.meta.index
                epoch = self.epoch
            # Slow part without the lock: writes after the rotation go to the new WAL generation.
            sealed = [SealedSegment.seal(g, self.segment_dir(g.id), index_params) for g in to_seal]  # type: ignore[arg-type]
            deletes_name = f"deletes-{new_gen}.npy"
            versions: dict[int, int] = {}
            for seg in [*dirty, *sealed]:
                if cut_versions[seg.id]:
                    versions[seg.id] = cut_versions[seg.id]
                    seg.write_deletes(deletes_name, up_to_ts=marker.ts)
            with self.lock:
                if self.epoch != epoch:
                    # A storage failure rebuilt memory meanwhile (the sealed rows were replayed
                    # from the WAL again): committing would list them twice. Retry the flush.
                    self._discard_flush(sealed, [*dirty, *sealed], deletes_name)
                    raise StorageError(f"flush of {self.name!r} was interrupted by a storage recovery; retry it")
                for growing, seg in zip(to_seal, sealed, strict=True):
                    # Deletes that landed on the growing segment after `seal` are in the shared
                    # delete_ts buffer but not in the sealed segment's version: count them, so the
                    # next flush persists them before it truncates the WAL that holds them.
                    seg.delete_version = max(seg.delete_version, growing.delete_version)
                    self.segments[seg.id] = seg  # same id and offsets: pk_map stays valid
                try:
                    old_files = self._commit_segments(new_gen, versions, deletes_name)
                except BaseException:
                    self._stale = True  # memory lists segments the catalog does not: rebuild from it
                    raise
                for seg_id, version in versions.items():
                    done = self.segments[seg_id]
                    assert isinstance(done, SealedSegment)
                    done.persisted_delete_version = version
            for p in old_files:
                p.unlink(missing_ok=True)

    def _discard_flush(
        self, sealed: Sequence[SealedSegment], written: Sequence[SealedSegment], deletes_name: str
    ) -> None:
        """Remove the files of a flush that will not commit (what remains is swept on the next open)."""
        for seg in written:
            (seg.directory / deletes_name).unlink(missing_ok=True)
        for seg in sealed:
            shutil.rmtree(seg.directory, ignore_errors=True)

    def _commit_segments(self, new_gen: int, versions: dict[int, int], deletes_name: str) -> list[Path]:
        """Record sealed segments and the new WAL generation in the catalog; return files now unused."""
        previous = {s.id: s for s in self.meta.segments}
        metas: list[SegmentMeta] = []
        old_files: list[Path] = []
        for seg in self.segments.values():
            if not isinstance(seg, SealedSegment):
                continue
            prev = previous.get(seg.id)
            deletes_file = prev.deletes_file if prev else None
            if seg.id in versions:
                if deletes_file:
                    old_files.append(self.segment_dir(seg.id) / deletes_file)
                deletes_file = deletes_name
            metas.append(SegmentMeta(seg.id, seg.n, deletes_file))
        meta = self.meta.with_changes(wal_gen=new_gen, segments=tuple(metas))
        self._catalog.put(meta)
        self.meta = meta
        # Truncation: WAL files wholly covered by the flushed checkpoint.
        old_files += [
            p for ch in self.channels for p in ch.directory.glob("*.log") if p.stem.isdigit() and int(p.stem) < new_gen
        ]
        return old_files

    def set_index(self, params: IndexParams, field_name: str | None = None) -> None:
        """Change the index definition and rebuild the index of every sealed segment. `field_name`, a
        vector field after the first: record its index (its metric; such fields are searched exactly)."""
        if field_name is not None and field_name != self.meta.schema.vector.name:
            self._set_extra_index(field_name, params)
            return
        with self.flush_lock:
            with self.lock:
                self.meta = self.meta.with_changes(index=params)
                self._catalog.put(self.meta)
                self.record_ddl("create_index", params.to_dict())
                sealed = [s for s in self.segments.values() if isinstance(s, SealedSegment)]
            for seg in sealed:
                seg.build_index(params)

    def _set_extra_index(self, field_name: str, params: IndexParams) -> None:
        if field_name not in {f.name for f in self.meta.schema.extra_vectors}:
            raise InvalidRequest(f"cannot index field {field_name!r}: it is not a vector field of {self.name!r}")
        with self.lock:
            indexes = {**dict(self.meta.vector_indexes), field_name: params}
            self.meta = self.meta.with_changes(vector_indexes=tuple(indexes.items()))
            self._catalog.put(self.meta)
            self.record_ddl("create_index", {**params.to_dict(), "field_name": field_name})

    # ------------------------------------------------------------------------------------ compaction

    def swap_segments(self, merges: Sequence[Merge], epoch: int) -> tuple[tuple[int, ...], tuple[int, ...], int]:
        """Replace compacted sources by their merged segments: carry late deletes over, record the new
        segments in the catalog (the commit point), then switch memory over. Call under `flush_lock`.
        Returns (removed ids, added ids, rows purged); StorageError if a recovery since `epoch` (the
        plan's) rebuilt memory."""
        with self.lock:
            if self.wal is None:
                raise CollectionNotFound(f"collection {self.name!r} was dropped or the engine closed")
            if self.epoch != epoch:  # memory was rebuilt from disk meanwhile: the plan may not hold
                raise StorageError(f"compaction of {self.name!r} was interrupted by a storage recovery; retry it")
            removed = {s.id for m in merges for s in m.sources}
            purged = 0
            for m in merges:
                purged += sum(s.n for s in m.sources) - sum(len(o) for o in m.offsets)
                if m.segment is not None:
                    late = np.concatenate([s.delete_ts[o] for s, o in zip(m.sources, m.offsets, strict=True)])
                    m.segment.delete_ts[:] = late
                    m.segment.delete_version = int(np.count_nonzero(late != np.iinfo(np.int64).max))
            added = [m.segment for m in merges if m.segment is not None]
            metas = [sm for sm in self.meta.segments if sm.id not in removed]
            metas += [SegmentMeta(s.id, s.n, None) for s in added]
            meta = self.meta.with_changes(segments=tuple(metas))
            self._catalog.put(meta)  # the commit point; nothing below can fail
            self.meta = meta
            for m in merges:
                self._remap_pks(m)
            for seg_id in removed:
                self.segments.pop(seg_id, None)
            for seg in added:
                self.segments[seg.id] = seg
        return tuple(sorted(removed)), tuple(s.id for s in added), purged

    def _remap_pks(self, m: Merge) -> None:
        if m.segment is None:
            return
        new_id, pos = m.segment.id, 0
        for src, offs in zip(m.sources, m.offsets, strict=True):
            for off in offs.tolist():
                pk = src.pks[off]
                if self.pk_map.get(pk) == (src.id, off):
                    self.pk_map[pk] = (new_id, pos)
                pos += 1
