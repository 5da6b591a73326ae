"""One worker's metrics: task outcomes, stage latencies, queue lag and embedding throughput.

Plain counters and fixed-bucket histograms, owned by one `Worker` (no registry, nothing global). The
worker puts `snapshot()` in its heartbeat record (`docvec:worker:{consumer}`); the API's `/metrics`
renders every live worker's snapshot as Prometheus series labelled `worker`. Counters start at zero
when the process starts, which Prometheus treats as an ordinary counter reset.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

STAGE_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
QUEUE_LAG_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
THROUGHPUT_WINDOW = 32
"""Embed-stage observations the recent throughput figure is computed over."""
EMBED_STAGE = "embed"


@dataclass(slots=True)
class Histogram:
    """Observations counted into upper-bounded buckets (`counts[i]`: values <= `bounds[i]` and above the
    previous bound; the last count is the +Inf overflow)."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        return {"bounds": list(self.bounds), "counts": list(self.counts), "sum": round(self.sum, 6),
                "count": self.count}


def _entry_time_s(entry_id: str) -> float | None:
    """The time a stream entry was added (its id is `<unix ms>-<seq>`)."""
    millis, _, _ = entry_id.partition("-")
    return int(millis) / 1000 if millis.isdigit() else None


class WorkerMetrics:
    """Counters and histograms of one worker process; its methods never block and never fail."""

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.stages: dict[str, Histogram] = {}
        self.queue_lag = Histogram(QUEUE_LAG_BUCKETS_S)
        self.last_queue_lag_s: float | None = None
        self.chunks_embedded = 0
        self.embed_seconds = 0.0
        self._recent_embeds: deque[tuple[int, float]] = deque(maxlen=THROUGHPUT_WINDOW)

    def task_finished(self, outcome: str) -> None:
        """Count one delivery's outcome (done, failed, cancelled, retry, skipped)."""
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def observe_stage(self, stage: str, seconds: float, *, chunks: int = 0) -> None:
        """Record one completed pipeline stage; for the embed stage, `chunks` is what it embedded."""
        histogram = self.stages.get(stage)
        if histogram is None:
            histogram = self.stages[stage] = Histogram(STAGE_BUCKETS_S)
        histogram.observe(seconds)
        if stage == EMBED_STAGE and chunks > 0:
            self.chunks_embedded += chunks
            self.embed_seconds += seconds
            self._recent_embeds.append((chunks, seconds))

    def observe_queue_lag(self, entry_id: str, now_s: float | None = None) -> None:
        """Record how long a newly read stream entry waited in its stream."""
        added_s = _entry_time_s(entry_id)
        if added_s is None:
            return
        lag_s = max((time.time() if now_s is None else now_s) - added_s, 0.0)
        self.queue_lag.observe(lag_s)
        self.last_queue_lag_s = lag_s

    @property
    def embed_chunks_per_s(self) -> float | None:
        """Chunks per second of embed-stage time over the recent embed stages (None before any)."""
        chunks = sum(c for c, _ in self._recent_embeds)
        seconds = sum(s for _, s in self._recent_embeds)
        return round(chunks / seconds, 3) if seconds > 0 else None

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy for the heartbeat record."""
        return {
            "outcomes": dict(self.outcomes),
            "stages": {name: h.to_dict() for name, h in self.stages.items()},
            "queue_lag": self.queue_lag.to_dict(),
            "last_queue_lag_s": None if self.last_queue_lag_s is None else round(self.last_queue_lag_s, 3),
            "chunks_embedded": self.chunks_embedded,
            "embed_seconds": round(self.embed_seconds, 6),
            "embed_chunks_per_s": self.embed_chunks_per_s,
        }
