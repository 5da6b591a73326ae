"""Streaming layer: framing and damage handling, fsync policies, interceptor order, scanners,
recovery from the flush checkpoint, transactions."""

from __future__ import annotations

import os
import threading

import pytest

from vectordb.collection import Collection
from vectordb.schema import validate_rows
from vectordb.streaming import (
    AppendContext,
    DeliverAfterTs,
    DeliverAll,
    DeliverFromId,
    DeliverLatest,
    compose,
)
from vectordb.wal import FsyncPolicy, Op, WalRecord, WalWriter, encode_record, frame, read_frames, read_wal

from .conftest import BareCollection, clustered, make_rows, make_schema


def _batch(n: int, start: int = 0):
    return validate_rows(make_schema(), make_rows(clustered(n, 16, seed=start), start))


# -------------------------------------------------------------------------------------- framing


def test_round_trip_of_every_message_type(tmp_path):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    b = _batch(3)
    recs = [
        WalRecord(Op.DDL.value, 1, [], info={"kind": "create_partition", "name": "p"}),
        WalRecord(Op.TXN_BEGIN.value, 2, [], txn_id=2),
        WalRecord(Op.INSERT.value, 2, b.pks, b, txn_id=2),
        WalRecord(Op.DELETE.value, 2, [7], txn_id=2),
        WalRecord(Op.TXN_COMMIT.value, 2, [], txn_id=2),
        WalRecord(Op.TXN_ROLLBACK.value, 3, [], txn_id=3),
        WalRecord(Op.TIME_TICK.value, 4, []),
        WalRecord(Op.FLUSH.value, 5, [], info={"checkpoint_gen": 1}),
    ]
    w.append_many(recs)
    w.close()
    back = list(read_wal(path))
    assert [(r.op, r.ts, r.txn_id, r.info) for r in back] == [(r.op, r.ts, r.txn_id, r.info) for r in recs]
    assert back[2].batch is not None and back[2].batch.pks == b.pks


def test_torn_tail_is_cut_without_a_side_file(tmp_path):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    for ts in range(3):
        w.append(WalRecord("delete", ts, [ts]))
    size = w.size_bytes
    w.close()
    with open(path, "ab") as f:
        f.write(frame(encode_record(WalRecord("delete", 9, [9])))[:-4])
    assert [r.ts for r in read_wal(path)] == [0, 1, 2]
    assert path.stat().st_size == size
    assert not path.with_name("w.log.corrupt").exists()


def test_corruption_in_the_middle_stops_and_keeps_the_rest_aside(tmp_path, caplog):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    offsets = []
    for ts in range(5):
        offsets.append(w.size_bytes)
        w.append(WalRecord("delete", ts, [ts]))
    w.close()
    data = bytearray(path.read_bytes())
    data[offsets[2] + 10] ^= 0xFF  # inside record 2's payload: its CRC fails, records 3-4 are intact
    path.write_bytes(bytes(data))
    assert [r.ts for r in read_wal(path)] == [0, 1]
    side = path.with_name("w.log.corrupt")
    assert side.read_bytes() == bytes(data[offsets[2] :])
    assert path.stat().st_size == offsets[2]
    assert any(r.levelname == "ERROR" and "middle" in r.message for r in caplog.records)


def test_corrupt_length_field_in_the_middle_is_not_taken_for_a_torn_tail(tmp_path):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    offsets = []
    for ts in range(4):
        offsets.append(w.size_bytes)
        w.append(WalRecord("delete", ts, [ts]))
    w.close()
    data = bytearray(path.read_bytes())
    data[offsets[1] + 3] = 0x7F  # the length now runs far past the end of the file
    path.write_bytes(bytes(data))
    assert [r.ts for r in read_wal(path)] == [0]
    assert path.with_name("w.log.corrupt").stat().st_size == len(data) - offsets[1]


# ------------------------------------------------------------------------------------- fsync


@pytest.fixture
def fsyncs(monkeypatch):
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_always_fsyncs_every_append(tmp_path, fsyncs):
    w = WalWriter(tmp_path / "w.log", policy=FsyncPolicy.ALWAYS)
    before = len(fsyncs)
    for ts in range(5):
        w.sync(w.append_many([WalRecord("delete", ts, [ts])]))
    assert len(fsyncs) - before == 5
    w.close()


def test_batch_group_commit_shares_fsyncs_between_concurrent_writers(tmp_path, fsyncs, monkeypatch):
    env = BareCollection(tmp_path, policy=FsyncPolicy.BATCH)
    real = os.fsync

    def slow(fd):  # a disk that takes a while, so writers pile up behind one fsync
        fsyncs.append(fd)
        threading.Event().wait(0.02)
        real(fd)

    monkeypatch.setattr(os, "fsync", slow)
    writers = 16
    start = threading.Barrier(writers)
    before = len(fsyncs)

    def write(i: int) -> None:
        start.wait()
        env.coll.insert(_batch(2, 100 * i + 1000))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    used = len(fsyncs) - before
    assert env.coll.count() == 2 * writers
    assert used < writers / 2, f"{used} fsyncs for {writers} concurrent writers"
    # same durability as always: every acknowledged write is on disk after a crash (no close)
    meta = env.catalog.get("c")
    assert meta is not None
    again = Collection.open(meta, tmp_path / "c", env.tso, env.catalog, streaming=env.options)
    assert again.count() == 2 * writers
    again.close()
    env.coll.close()


def test_interval_policy_fsyncs_in_the_background(tmp_path, fsyncs):
    w = WalWriter(tmp_path / "w.log", policy=FsyncPolicy.INTERVAL, interval_ms=10)
    before = len(fsyncs)
    w.sync(w.append_many([WalRecord("delete", 1, [1])]))  # acknowledged without waiting
    assert w.is_durable(1)
    for _ in range(200):
        if len(fsyncs) > before:
            break
        threading.Event().wait(0.01)
    assert len(fsyncs) > before
    w.close()


def test_engine_open_accepts_policy_and_legacy_flag(tmp_path):
    from vectordb import Engine

    for kwargs, want in (
        ({"fsync": True}, FsyncPolicy.BATCH),
        ({"fsync": False}, FsyncPolicy.NONE),
        ({"fsync_policy": "always"}, FsyncPolicy.ALWAYS),
        ({"fsync_policy": "interval"}, FsyncPolicy.INTERVAL),
    ):
        with Engine.open(tmp_path / "db", **kwargs) as eng:
            eng.create_collection("c", make_schema(), if_not_exists=True)
            assert eng.ops.get("c").options.fsync_policy is want
    with pytest.raises(ValueError):
        Engine.open(tmp_path / "db", fsync_policy="sometimes")


# ------------------------------------------------------------------------------- interceptors


def test_interceptors_run_in_order_and_stamp_one_timestamp(tmp_path):
    env = BareCollection(tmp_path)
    seen: list[AppendContext] = []
    real = env.coll._append
    env.coll._append = lambda ctx: (real(ctx), seen.append(ctx))  # type: ignore[method-assign]
    env.coll.insert(_batch(3))
    env.coll.upsert(_batch(2))
    assert seen[0].trace == ["lock", "timetick", "segment", "txn"]
    assert seen[0].segment_id == env.coll.growing.id
    ups = seen[1].messages
    assert [m.op for m in ups] == ["txn_begin", "delete", "insert", "txn_commit"]
    assert len({m.ts for m in ups}) == 1 and all(m.txn_id == ups[0].ts for m in ups)
    assert seen[0].ts < seen[1].ts
    env.coll.close()


def test_compose_nests_in_list_order():
    order: list[str] = []

    class Tag:
        def __init__(self, name: str) -> None:
            self.name = name

        def intercept(self, ctx, call_next):
            order.append(self.name)
            call_next(ctx)
            order.append("/" + self.name)

    compose([Tag("a"), Tag("b")], lambda ctx: order.append("end"))(None)  # type: ignore[arg-type]
    assert order == ["a", "b", "end", "/b", "/a"]


def test_channel_writes_are_ordered_by_timestamp(tmp_path):
    env = BareCollection(tmp_path, shards_num=2)

    def write(i: int) -> None:
        for j in range(10):
            env.coll.insert(_batch(3, 1000 * i + 10 * j))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ch in range(2):
        ts = [rec.ts for _mid, rec in env.coll.scan(ch, DeliverAll()) if rec.op == "insert"]
        assert ts and ts == sorted(ts) and len(set(ts)) == len(ts)
    assert env.coll.count() == 120
    env.coll.close()


# ------------------------------------------------------------------------------------ scanners


def test_scanner_deliver_policies(tmp_path):
    env = BareCollection(tmp_path)
    for i in range(4):
        env.coll.insert(_batch(1, i))
    everything = list(env.coll.scan(0, DeliverAll()))
    inserts = [(mid, rec) for mid, rec in everything if rec.op == "insert"]
    assert [rec.pks for _m, rec in inserts] == [[0], [1], [2], [3]]
    assert everything[0][1].op == "ddl"
    mid2 = inserts[2][0]
    assert [rec.pks for _m, rec in env.coll.scan(0, DeliverFromId(mid2))] == [[2], [3]]
    assert [rec.pks for _m, rec in env.coll.scan(0, DeliverAfterTs(inserts[1][1].ts))] == [[2], [3]]
    assert [rec.pks for _m, rec in env.coll.scan(0, DeliverLatest())] == [[3]]
    env.coll.flush()
    env.coll.insert(_batch(1, 9))
    # WAL files covered by the flush are gone; what is left starts at the checkpoint
    assert [rec.pks for _m, rec in env.coll.scan(0, DeliverAll()) if rec.op == "insert"] == [[9]]
    env.coll.close()


# ------------------------------------------------------------------------------------ recovery


def test_recovery_from_checkpoint_after_flush_and_more_writes(tmp_path):
    env = BareCollection(tmp_path, shards_num=3)
    env.coll.insert(_batch(30))
    env.coll.delete_pks([1, 2])
    env.coll.flush()
    gen = env.catalog.get("c").wal_gen  # type: ignore[union-attr]
    assert gen >= 1
    env.coll.upsert(_batch(5, 3))  # replaces 3..7
    env.coll.delete_pks([10])
    env.coll.insert(_batch(4, 100))
    coll = env.reopen()
    assert coll.count() == 30 - 3 + 4
    assert {r["id"] for r in coll.get([1, 2, 10], ["id"])} == set()
    for ch in coll.channels:
        assert all(p.stem.isdigit() and int(p.stem) >= gen for p in ch.directory.glob("*.log"))
    coll.close()


def _append_raw(coll: Collection, recs: list[WalRecord]) -> None:
    writer = coll.channels[0].writer
    assert writer is not None
    writer.sync(writer.append_many(recs))


def test_txn_without_commit_is_not_applied(tmp_path):
    env = BareCollection(tmp_path)
    env.coll.insert(_batch(3))
    ts = env.tso.next()
    b = _batch(2, 50)
    _append_raw(
        env.coll,
        [
            WalRecord(Op.TXN_BEGIN.value, ts, [], txn_id=ts),
            WalRecord(Op.DELETE.value, ts, [0, 1], txn_id=ts),
            WalRecord(Op.INSERT.value, ts, b.pks, b, txn_id=ts),
        ],
    )
    coll = env.reopen()
    assert coll.count() == 3 and coll.get([50], ["id"]) == []
    coll.close()


def test_txn_rollback_drops_it_and_commit_applies_it(tmp_path):
    env = BareCollection(tmp_path)
    env.coll.insert(_batch(3))
    b = _batch(2, 50)
    t1, t2 = env.tso.next(), env.tso.next()
    _append_raw(
        env.coll,
        [
            WalRecord(Op.TXN_BEGIN.value, t1, [], txn_id=t1),
            WalRecord(Op.DELETE.value, t1, [0], txn_id=t1),
            WalRecord(Op.TXN_ROLLBACK.value, t1, [], txn_id=t1),
            WalRecord(Op.TXN_BEGIN.value, t2, [], txn_id=t2),
            WalRecord(Op.DELETE.value, t2, [1], txn_id=t2),
            WalRecord(Op.INSERT.value, t2, b.pks, b, txn_id=t2),
            WalRecord(Op.TXN_COMMIT.value, t2, [], txn_id=t2),
        ],
    )
    coll = env.reopen()
    assert sorted(r["id"] for r in coll.get([0, 1, 2, 50, 51], ["id"])) == [0, 2, 50, 51]
    coll.close()


def test_torn_upsert_transaction_is_all_or_nothing(tmp_path):
    env = BareCollection(tmp_path)
    env.coll.insert(_batch(4))
    path = env.coll.channels[0].writer.path  # type: ignore[union-attr]
    size = path.stat().st_size
    env.coll.upsert(_batch(4))  # begin, delete, insert, commit in one append
    env.coll.close()
    full = path.read_bytes()
    for cut in (size + 20, (size + len(full)) // 2, len(full) - 5):
        path.write_bytes(full[:cut])
        coll = env.reopen()
        rows = coll.get([0, 1, 2, 3], ["id"])
        assert len(rows) == 4  # the old versions survive: the delete was not applied alone
        coll.close()
        path.write_bytes(full)
    ops = [r.op for _o, r in read_frames(path, repair=False)]
    at = ops.index("txn_begin")
    assert ops[at : at + 4] == ["txn_begin", "delete", "insert", "txn_commit"]
