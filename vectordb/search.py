"""The per-query search path over segment views: MVCC visibility, per-segment search, top-k reduce.

Hot-path rules (a single-vector HNSW search costs ~0.2-0.3 ms, so per-query overhead matters):
- Visibility is summarised once per segment state, not recomputed per query: when every row of a
  view is visible at the read timestamp (the common case: no deletes, no time travel) the segment
  is searched with no selector at all; when the only invisible rows are deleted ones, a cached live
  mask is reused. Only reads at an old timestamp build a mask per query.
- Sealed segments whose index covers every row are searched directly; short answers, filters and
  growing segments fall back to `SegmentView.search` (selector or exact scoring).
- The reduce merges per-segment candidates with numpy and builds `Hit`s only for the winners.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vectordb import index as idx
from vectordb.evaluation import FilterBudget, evaluate
from vectordb.expr import Expr
from vectordb.results import Hit
from vectordb.schema import MetricType
from vectordb.segment import Candidates, Segment, SegmentView
from vectordb.tso import MAX_TIMESTAMP


@dataclass(frozen=True, slots=True)
class _Visibility:
    """Summary of one segment state: its first `n` rows at `delete_version`."""

    n: int
    delete_version: int
    max_insert_ts: int
    min_delete_ts: int  # MAX_TIMESTAMP when no row is deleted
    max_delete_ts: int  # the latest delete among the rows (0 when none)
    live: np.ndarray | None  # rows not deleted, only when some are


class VisibilityCache:
    """Visibility summaries per segment, recomputed when its row count or delete version moves.

    Relies on `Segment.mark_deleted` bumping `delete_version` on every delete of that segment object.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: weakref.WeakKeyDictionary[Segment, _Visibility] = weakref.WeakKeyDictionary()

    def summary(self, view: SegmentView) -> _Visibility:
        seg = view.segment
        version = seg.delete_version
        with self._lock:
            entry = self._entries.get(seg)
        if entry is not None and entry.n == view.n and entry.delete_version == version:
            return entry
        n = view.n
        delete_ts = view.delete_ts[:n]
        deleted = delete_ts != MAX_TIMESTAMP
        any_deleted = bool(deleted.any())
        entry = _Visibility(
            n=n,
            delete_version=version,
            max_insert_ts=int(view.insert_ts[:n].max()) if n else 0,
            min_delete_ts=int(delete_ts.min()) if any_deleted else MAX_TIMESTAMP,
            max_delete_ts=int(delete_ts[deleted].max()) if any_deleted else 0,
            live=~deleted if any_deleted else None,
        )
        if seg.delete_version == version:  # a delete raced the summary: do not keep it
            with self._lock:
                self._entries[seg] = entry
        return entry

    def allowed(self, view: SegmentView, ts: int) -> np.ndarray | None:
        """Rows visible at `ts`: None when all are, else a bool mask (possibly all False)."""
        s = self.summary(view)
        if s.max_insert_ts <= ts:
            if s.min_delete_ts > ts:
                return None
            if s.live is not None and s.max_delete_ts <= ts:
                return s.live
        return view.visible(ts)


def search_segments(
    views: Sequence[SegmentView],
    ts: int,
    queries: np.ndarray,
    limit: int,
    expr: Expr | None,
    metric: MetricType,
    params: Mapping[str, Any],
    visibility: VisibilityCache,
    budget: FilterBudget,
    column: str | None = None,
) -> list[Candidates]:
    """Candidates of every segment with a visible (and, with `expr`, matching) row; the filter's work is
    charged to the request's `budget`. `column`: a vector field kept as a column (after the first),
    searched exactly."""
    out: list[Candidates] = []
    for view in views:
        if not view.n:
            continue
        allowed = visibility.allowed(view, ts)
        if expr is not None:
            allowed = view.visible(ts) if allowed is None else allowed.copy()
            if allowed.any():
                allowed &= evaluate(expr, view, budget)
        if column is not None:
            rows = np.arange(view.n) if allowed is None else np.flatnonzero(allowed)
            out.append(view.search_column(column, queries, limit, rows, metric))
            continue
        if allowed is None:
            found = _search_all_rows(view, queries, limit, params)
            if found is not None:
                out.append(found)
                continue
            allowed = np.ones(view.n, dtype=bool)
        if allowed.any():
            out.append(view.search(queries, limit, allowed, metric, params))
    return out


def _search_all_rows(view: SegmentView, queries: np.ndarray, k: int, params: Mapping[str, Any]) -> Candidates | None:
    """Index search with no selector when the index covers every row; None if it cannot answer fully."""
    index = getattr(view.segment, "index", None)
    if index is None or index.ntotal != view.n:
        return None
    kk = min(k, view.n)
    dist, labels = idx.index_search(index, queries, kk, None, params)
    last = labels[:, kk - 1]
    if (last[0] < 0) if len(last) == 1 else (last < 0).any():  # an ANN search came back short: answer exactly
        return None
    return Candidates(view, list(dist), list(labels))


def reduce_hits(
    per_segment: Sequence[Candidates], nq: int, limit: int, fields: Sequence[str], higher: bool
) -> list[list[Hit]]:
    """Merge per-segment candidates into the best `limit` hits per query (one per primary key)."""
    return [_reduce_one(qi, per_segment, limit, fields, higher) for qi in range(nq)]


def _reduce_one(
    qi: int, per_segment: Sequence[Candidates], limit: int, fields: Sequence[str], higher: bool
) -> list[Hit]:
    if not per_segment:
        return []
    if len(per_segment) == 1:  # one segment's candidates come best first already
        c = per_segment[0]
        scores, offsets = c.scores[qi], c.offsets[qi]
        seg_of: list[int] = [0] * len(offsets)
    else:
        scores = np.concatenate([c.scores[qi] for c in per_segment])
        offsets = np.concatenate([c.offsets[qi] for c in per_segment])
        segs = np.repeat(np.arange(len(per_segment)), [len(c.offsets[qi]) for c in per_segment])
        # Stable, like the sort it replaces: ties keep segment order, then rank within the segment.
        order = np.argsort(-scores if higher else scores, kind="stable")
        scores, offsets, seg_of = scores[order], offsets[order], segs[order].tolist()
    hits: list[Hit] = []
    seen: set[Any] = set()
    for score, off, si in zip(scores.tolist(), offsets.tolist(), seg_of, strict=True):
        view = per_segment[si].view
        pk = view.segment.pks[off]
        if pk in seen:  # MVCC makes one version visible; this guards the invariant anyway
            continue
        seen.add(pk)
        hits.append(Hit(pk, float(score), view.row(off, fields) if fields else {}))
        if len(hits) == limit:
            break
    return hits
