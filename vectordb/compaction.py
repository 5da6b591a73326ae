"""Compaction: merge small sealed segments into one and purge deleted rows, then swap atomically.

MVCC: the compaction timestamp `ts` is taken under the collection lock. A row deleted at or before
`ts` is invisible to every reader that can see the new segment (readers take their timestamp and
their segment views together under the same lock, after the swap, so their timestamp is > `ts`);
readers that started earlier hold views of the old segments, which stay intact in memory (their
directories are removed after the swap; the vectors are memory-mapped, which survives the unlink).
Rows deleted after `ts` (while the merge runs) are carried over to the new segment at the swap, and
their WAL records are still in the log, so a crash replays them.

Crash safety: the new segment is written (meta.json last) before the catalog names it; the catalog
swap is one atomic write; leftovers of either side are removed by the collection's garbage sweep on
open.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vectordb.collection import Collection, Merge
from vectordb.errors import CollectionNotFound
from vectordb.segment import SealedSegment
from vectordb.tso import TimestampOracle

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompactionPolicy:
    """When segments are compacted.

    small_segment_rows: sealed segments with fewer live rows are merged together;
    max_segment_rows: a merged segment is closed once it holds this many rows;
    auto: compact in the background when more than `auto_min_small_segments` sealed segments are
    small, or when some segment has at least `auto_deleted_ratio` of its rows deleted.
    """

    small_segment_rows: int = 8192
    max_segment_rows: int = 131072
    auto: bool = True
    auto_min_small_segments: int = 4
    auto_deleted_ratio: float = 0.3

    def __post_init__(self) -> None:
        if self.small_segment_rows < 1 or self.max_segment_rows < self.small_segment_rows:
            raise ValueError("need 1 <= small_segment_rows <= max_segment_rows")
        if self.auto_min_small_segments < 1 or not 0.0 < self.auto_deleted_ratio <= 1.0:
            raise ValueError("need auto_min_small_segments >= 1 and 0 < auto_deleted_ratio <= 1")


@dataclass(frozen=True, slots=True)
class CompactionResult:
    """What one compaction did: segments replaced, segments written, deleted rows dropped."""

    removed: tuple[int, ...] = ()
    added: tuple[int, ...] = ()
    purged_rows: int = 0


def _live_rows(seg: SealedSegment, ts: int) -> int:
    return int(np.count_nonzero(seg.delete_ts[: seg.n] > ts))


def plan(segments: Sequence[SealedSegment], policy: CompactionPolicy, ts: int) -> list[list[SealedSegment]]:
    """Groups of segments to merge: small ones and ones with rows deleted by `ts`, by id order,
    each group up to `max_segment_rows` live rows. A lone segment with nothing to purge is skipped."""
    live = {s.id: _live_rows(s, ts) for s in segments}
    candidates = [
        s for s in sorted(segments, key=lambda s: s.id) if live[s.id] < policy.small_segment_rows or live[s.id] < s.n
    ]
    groups: list[list[SealedSegment]] = []
    current: list[SealedSegment] = []
    rows = 0
    for seg in candidates:
        if current and rows + live[seg.id] > policy.max_segment_rows:
            groups.append(current)
            current, rows = [], 0
        current.append(seg)
        rows += live[seg.id]
    if current:
        groups.append(current)
    return [g for g in groups if len(g) > 1 or live[g[0].id] < g[0].n]


def needs_compaction(segments: Sequence[SealedSegment], policy: CompactionPolicy) -> bool:
    """The background trigger: too many small segments or a segment with too many deleted rows."""
    small = sum(1 for s in segments if s.n - s.deleted_count < policy.small_segment_rows)
    if small > policy.auto_min_small_segments:
        return True
    return any(s.n and s.deleted_count / s.n >= policy.auto_deleted_ratio for s in segments)


def _merge(group: list[SealedSegment], ts: int, seg_id: int, directory: Path, coll: Collection) -> Merge:
    offsets = [np.flatnonzero(s.delete_ts[: s.n] > ts) for s in group]
    if not sum(len(o) for o in offsets):
        return Merge(group, offsets, None)
    keys = list(dict.fromkeys(k for s in group for k in s.columns))
    columns: dict[str, list[Any]] = {k: [] for k in keys}
    pks: list[Any] = []
    dynamic: list[dict[str, Any]] | None = None if group[0].dynamic is None else []
    for s, offs in zip(group, offsets, strict=True):
        rows = offs.tolist()
        pks += [s.pks[i] for i in rows]
        for k in keys:
            col = s.columns.get(k)
            columns[k] += [col[i] for i in rows] if col is not None else [0] * len(rows)
        if dynamic is not None:
            dynamic += [s.dynamic[i] for i in rows] if s.dynamic is not None else [{}] * len(rows)
    segment = SealedSegment.create(
        seg_id,
        coll.schema,
        directory,
        coll.meta.index,
        pks=pks,
        columns=columns,
        dynamic=dynamic,
        vectors=np.concatenate([np.asarray(s.vectors[o]) for s, o in zip(group, offsets, strict=True)]),
        norms=np.concatenate([s.norms[o] for s, o in zip(group, offsets, strict=True)]),
        insert_ts=np.concatenate([s.insert_ts[o] for s, o in zip(group, offsets, strict=True)]),
    )
    return Merge(group, offsets, segment)


def compact(
    coll: Collection,
    tso: TimestampOracle,
    policy: CompactionPolicy,
    *,
    on_swap: Callable[[tuple[int, ...], tuple[SealedSegment, ...]], None] | None = None,
) -> CompactionResult:
    """Compact `coll`'s sealed segments (serialised with flush and index rebuilds by `flush_lock`).

    `on_swap(removed_ids, added_segments)` runs after the catalog swap, before old files go.
    """
    with coll.flush_lock:
        with coll.lock:
            if coll.wal is None:
                raise CollectionNotFound(f"collection {coll.name!r} was dropped or the engine closed")
            # Purge only deletes every reader already sees: reads run at the serviceable timestamp,
            # which may trail the newest timestamp while writes are still being made durable.
            ts = min(tso.next(), coll.serviceable_ts())
            sealed = [s for s in coll.segments.values() if isinstance(s, SealedSegment)]
            epoch = coll.epoch
        merged: list[Merge] = []
        try:
            for group in plan(sealed, policy, ts):
                seg_id = tso.next()
                merged.append(_merge(group, ts, seg_id, coll.segment_dir(seg_id), coll))
            result = CompactionResult(*coll.swap_segments(merged, epoch)) if merged else CompactionResult()
        except BaseException:
            for m in merged:
                if m.segment is not None:
                    shutil.rmtree(m.segment.directory, ignore_errors=True)
            raise
    if on_swap is not None and result.removed:
        on_swap(result.removed, tuple(m.segment for m in merged if m.segment is not None))
    for m in merged:
        for old in m.sources:
            shutil.rmtree(old.directory, ignore_errors=True)
    if result.removed:
        log.info(
            "collection %s: compacted %s into %s, purged %d rows",
            coll.name,
            result.removed,
            result.added,
            result.purged_rows,
        )
    return result
