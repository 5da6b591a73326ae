from __future__ import annotations

import threading

import pytest

from vectordb.tso import LOGICAL_MASK, TimestampOracle, logical_of, physical_ms_of


def test_strictly_increasing_under_threads(tmp_path):
    tso = TimestampOracle(tmp_path / "tso.json")
    out: list[list[int]] = [[] for _ in range(4)]

    def grab(i: int) -> None:
        out[i] = [tso.next() for _ in range(2000)]

    threads = [threading.Thread(target=grab, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [ts for part in out for ts in part]
    assert len(set(every)) == len(every)
    for part in out:
        assert part == sorted(part)


def test_monotonic_across_restart_even_if_clock_goes_back(tmp_path):
    now = [1_000_000]
    tso = TimestampOracle(tmp_path / "tso.json", window_ms=100, clock_ms=lambda: now[0])
    last = max(tso.next() for _ in range(10))
    now[0] += 250  # crosses the reserved window: a new bound is persisted
    last = max(last, tso.next())
    now[0] = 5  # the clock jumps back before the restart
    again = TimestampOracle(tmp_path / "tso.json", window_ms=100, clock_ms=lambda: now[0])
    assert again.next() > last


def test_logical_overflow_advances_physical(tmp_path):
    tso = TimestampOracle(tmp_path / "tso.json", clock_ms=lambda: 42)
    first = tso.next()
    for _ in range(LOGICAL_MASK + 5):
        ts = tso.next()
    assert physical_ms_of(ts) == physical_ms_of(first) + 1
    assert logical_of(ts) < 10


def test_window_avoids_a_write_per_timestamp(tmp_path):
    path = tmp_path / "tso.json"
    tso = TimestampOracle(path, window_ms=10_000)
    before = path.stat().st_mtime_ns
    for _ in range(1000):
        tso.next()
    assert path.stat().st_mtime_ns == before


def test_blocks_never_overlap_single_timestamps_or_each_other_across_restarts(tmp_path):
    """autoID keys: a block of n consecutive timestamps, none handed out again (also spanning the
    logical overflow into the next millisecond, and after a restart with the clock gone back)."""
    now = [1_000]
    tso = TimestampOracle(tmp_path / "tso.json", window_ms=10, clock_ms=lambda: now[0])
    handed: list[int] = [tso.next()]
    first = tso.next_block(5)
    handed += range(first, first + 5)
    handed.append(tso.next())
    big = tso.next_block(LOGICAL_MASK + 10)  # spills into later milliseconds: the oracle moves past them
    handed += range(big, big + LOGICAL_MASK + 10)
    handed.append(tso.next())
    now[0] = 3
    again = TimestampOracle(tmp_path / "tso.json", window_ms=10, clock_ms=lambda: now[0])
    restarted = again.next_block(3)
    handed += range(restarted, restarted + 3)
    assert handed == sorted(handed) and len(set(handed)) == len(handed)
    with pytest.raises(ValueError, match="at least one"):
        tso.next_block(0)
