"""Consistency levels: guarantee timestamps, waiting for the serviceable time tick, MVCC reads."""

from __future__ import annotations

import time

import pytest

import vectordb
from vectordb.errors import ConsistencyTimeout
from vectordb.schema import IndexParams
from vectordb.streaming import Session, StreamingOptions
from vectordb.tso import physical_ms_of
from vectordb.wal import FsyncPolicy, Op, WalRecord

from .conftest import BareCollection, clustered, make_rows, make_schema
from .test_streaming import _batch


def _pending_insert(env: BareCollection, start: int):
    """Log and apply an insert whose fsync has not happened yet (batch policy, not awaited)."""
    b = _batch(1, start)
    return env.coll._append_parts({0: [WalRecord(Op.INSERT.value, 0, b.pks, b)]})


def test_strong_waits_for_in_flight_writes_and_eventually_does_not(tmp_path):
    env = BareCollection(tmp_path, policy=FsyncPolicy.BATCH)
    env.coll.insert(_batch(2))
    tickets = _pending_insert(env, 100)
    started = time.monotonic()
    ts = env.coll.read_ts("Eventually")
    assert time.monotonic() - started < 0.1
    assert ts < tickets[0][1].ts
    assert len(env.coll.query(None, ["id"], None, 0, read_ts=ts)) == 2  # not durable: not visible
    with pytest.raises(ConsistencyTimeout):
        env.coll.read_ts("Strong", timeout_s=0.2)
    env.coll._await(tickets, None)
    assert len(env.coll.query(None, ["id"], None, 0, read_ts=env.coll.read_ts("Strong"))) == 3
    env.coll.close()


def test_session_waits_only_for_its_own_writes(tmp_path):
    env = BareCollection(tmp_path, policy=FsyncPolicy.BATCH)
    session = Session()
    env.coll.insert(_batch(2), session=session)
    mine = session.last_write_ts
    assert mine > 0
    tickets = _pending_insert(env, 100)  # someone else's write, still in flight
    assert env.coll.read_ts("Session", session_ts=mine, timeout_s=0.2) >= mine
    with pytest.raises(ConsistencyTimeout):
        env.coll.read_ts("Session", session_ts=tickets[0][1].ts, timeout_s=0.2)
    env.coll._await(tickets, None)
    env.coll.close()


def test_bounded_guarantee_respects_the_staleness_bound(tmp_path):
    env = BareCollection(tmp_path, policy=FsyncPolicy.BATCH)
    now_ms = time.time_ns() // 1_000_000
    g = env.coll.guarantee_ts("Bounded")
    assert abs(physical_ms_of(g) - (now_ms - 5000)) < 200
    tickets = _pending_insert(env, 100)  # an in-flight write does not block a bounded read
    ts = env.coll.read_ts("Bounded", timeout_s=0.2)
    assert ts >= g
    env.coll._await(tickets, None)
    env.coll.close()
    (tmp_path / "strict").mkdir()
    strict = BareCollection(tmp_path / "strict", policy=FsyncPolicy.BATCH)
    strict.coll.options = StreamingOptions(fsync_policy=FsyncPolicy.BATCH, bounded_staleness_ms=0)
    tickets = _pending_insert(strict, 100)
    time.sleep(0.01)
    with pytest.raises(ConsistencyTimeout):  # a zero bound behaves like Strong
        strict.coll.read_ts("Bounded", timeout_s=0.2)
    strict.coll._await(tickets, None)
    strict.coll.close()


def test_serviceable_ts_advances_on_idle_ticks(tmp_path):
    env = BareCollection(tmp_path)
    before = env.coll.serviceable_ts()
    time.sleep(0.005)
    assert env.coll.read_ts("Strong") > before
    env.coll.close()


async def test_client_strong_and_session_see_acknowledged_writes(tmp_path):
    client = vectordb.connect(str(tmp_path / "db"), fsync_policy="batch")
    try:
        await client.create_collection("c", make_schema(), index=IndexParams("FLAT", "L2"))
        for i in range(5):
            await client.insert("c", make_rows(clustered(3, 16, seed=i), 10 * i))
            for level in ("Strong", "Session"):
                rows = await client.query("c", filter="id >= 0", consistency_level=level)
                assert len(rows) == 3 * (i + 1)
        await client.delete("c", ids=[0])
        hits = await client.search("c", clustered(1, 16), limit=100, consistency_level="Session")
        assert 0 not in {h.id for h in hits[0]}
        assert len(await client.query("c", filter="id >= 0", consistency_level="Eventually")) == 14
    finally:
        await client.close()
