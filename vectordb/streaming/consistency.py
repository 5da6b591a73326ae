"""Consistency levels: which guarantee timestamp a read waits for before it runs.

- Strong: a fresh TSO timestamp: every write acknowledged before the read started is visible;
- Bounded: now minus a staleness bound (`bounded_staleness_ms`, default 5 s);
- Session: the latest write timestamp of the caller's `Session` (read-your-writes);
- Eventually: no wait; the read runs at whatever is serviceable now.

A read then runs at the channels' serviceable timestamp, which is >= the guarantee timestamp, and
sees rows with `insert_ts <= read_ts < delete_ts`.
"""

from __future__ import annotations

import enum
import threading
import time

from vectordb.errors import InvalidRequest
from vectordb.tso import TimestampOracle, compose_ts

DEFAULT_BOUNDED_STALENESS_MS = 5000
DEFAULT_READ_TIMEOUT_S = 10.0


class ConsistencyLevel(enum.StrEnum):
    STRONG = "Strong"
    BOUNDED = "Bounded"
    SESSION = "Session"
    EVENTUALLY = "Eventually"


def parse_level(level: str | ConsistencyLevel) -> ConsistencyLevel:
    try:
        return ConsistencyLevel(level)
    except ValueError:
        raise InvalidRequest(
            f"unknown consistency level {level!r}; use one of {[lv.value for lv in ConsistencyLevel]}"
        ) from None


class Session:
    """One client's write history: the largest timestamp of its acknowledged writes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_write_ts = 0

    @property
    def last_write_ts(self) -> int:
        return self._last_write_ts

    def observe(self, ts: int) -> None:
        with self._lock:
            self._last_write_ts = max(self._last_write_ts, ts)


def guarantee_ts(
    level: str | ConsistencyLevel,
    tso: TimestampOracle,
    *,
    session_ts: int | None,
    bounded_staleness_ms: int = DEFAULT_BOUNDED_STALENESS_MS,
) -> int:
    """The timestamp a read at `level` must wait for (0: no wait)."""
    lv = parse_level(level)
    if lv is ConsistencyLevel.STRONG:
        return tso.next()
    if lv is ConsistencyLevel.BOUNDED:
        return compose_ts(max(time.time_ns() // 1_000_000 - bounded_staleness_ms, 0), 0)
    if lv is ConsistencyLevel.SESSION:
        return session_ts or 0
    return 0
