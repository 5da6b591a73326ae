"""Settings of the streaming layer, fixed when the engine opens."""

from __future__ import annotations

from dataclasses import dataclass

from vectordb.streaming.consistency import DEFAULT_BOUNDED_STALENESS_MS, DEFAULT_READ_TIMEOUT_S
from vectordb.wal import FsyncPolicy


@dataclass(frozen=True, slots=True)
class StreamingOptions:
    """`fsync_policy`: see `vectordb.wal`; `fsync_interval_ms`: period of the `interval` policy;
    `bounded_staleness_ms`: how stale a Bounded read may be; `read_timeout_s`: how long a read waits
    for the serviceable timestamp before ConsistencyTimeout."""

    fsync_policy: FsyncPolicy = FsyncPolicy.BATCH
    fsync_interval_ms: int = 100
    bounded_staleness_ms: int = DEFAULT_BOUNDED_STALENESS_MS
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.fsync_interval_ms < 1:
            raise ValueError("fsync_interval_ms must be positive")
        if self.bounded_staleness_ms < 0:
            raise ValueError("bounded_staleness_ms must not be negative")
        if self.read_timeout_s <= 0:
            raise ValueError("read_timeout_s must be positive")
