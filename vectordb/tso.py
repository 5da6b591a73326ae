"""Hybrid timestamp oracle: `ts = physical_ms << 18 | logical`, strictly increasing across restarts.

Like Milvus's TSO, it persists a reserved upper bound of the physical part (a window ahead of now)
instead of every timestamp: after a restart, physical time restarts above the saved bound, so no
timestamp is ever handed out twice even if the wall clock went backwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from vectordb.fsutil import atomic_write_bytes

LOGICAL_BITS = 18
LOGICAL_MASK = (1 << LOGICAL_BITS) - 1
MAX_TIMESTAMP = (1 << 63) - 1


def compose_ts(physical_ms: int, logical: int) -> int:
    return (physical_ms << LOGICAL_BITS) | logical


def physical_ms_of(ts: int) -> int:
    return ts >> LOGICAL_BITS


def logical_of(ts: int) -> int:
    return ts & LOGICAL_MASK


class TimestampOracle:
    """Thread-safe source of unique, strictly increasing hybrid timestamps."""

    def __init__(
        self,
        state_path: Path,
        *,
        window_ms: int = 3000,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self._path = state_path
        self._window_ms = window_ms
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        saved = self._load_reserved()
        # Everything below the saved bound may have been handed out before a crash.
        self._physical = max(self._clock_ms(), saved + 1 if saved else 0)
        self._logical = -1
        self._reserved = 0
        self._reserve(self._physical)

    def _load_reserved(self) -> int:
        if not self._path.exists():
            return 0
        return int(json.loads(self._path.read_text())["reserved_physical_ms"])

    def _reserve(self, physical: int) -> None:
        reserved = physical + self._window_ms
        atomic_write_bytes(self._path, json.dumps({"reserved_physical_ms": reserved}).encode())
        self._reserved = reserved  # only once durable: a failed write must not hand out unreserved time

    def next(self) -> int:
        """Return a timestamp larger than every one returned before, in this and earlier runs."""
        return self.next_block(1)

    def next_block(self, n: int) -> int:
        """The first of `n` consecutive timestamps, all larger than every one returned before and none
        returned again (autoID primary keys are drawn from here, as Milvus draws them from its TSO)."""
        if n < 1:
            raise ValueError(f"a block needs at least one timestamp, got {n}")
        with self._lock:
            now = self._clock_ms()
            if now > self._physical:
                self._physical, self._logical = now, -1
            # A logical part past LOGICAL_MASK carries into the physical one: the next millisecond.
            first = compose_ts(self._physical, self._logical + 1)
            last = first + n - 1
            self._physical, self._logical = physical_ms_of(last), logical_of(last)
            if self._physical >= self._reserved:
                self._reserve(self._physical)
            return first

    @property
    def reserved_physical_ms(self) -> int:
        return self._reserved
