"""Per-phase latency metrics of proxy tasks: queue wait, pre_execute, execute, post_execute, total."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(slots=True)
class PhaseStats:
    count: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total_s += seconds
        self.max_s = max(self.max_s, seconds)


class ProxyMetrics:
    """Thread-safe accumulators keyed by (task type, phase)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[tuple[str, str], PhaseStats] = {}

    def record(self, task_type: str, phases_s: dict[str, float]) -> None:
        with self._lock:
            for phase, seconds in phases_s.items():
                self._stats.setdefault((task_type, phase), PhaseStats()).add(seconds)

    def snapshot(self) -> dict[str, dict[str, dict[str, float]]]:
        """{task type: {phase: {count, total_s, mean_s, max_s}}}"""
        out: dict[str, dict[str, dict[str, float]]] = {}
        with self._lock:
            for (task_type, phase), s in sorted(self._stats.items()):
                out.setdefault(task_type, {})[phase] = {
                    "count": s.count, "total_s": s.total_s, "mean_s": s.total_s / s.count, "max_s": s.max_s,
                }
        return out
