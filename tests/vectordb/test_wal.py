from __future__ import annotations

import numpy as np

import vectordb
from vectordb.schema import IndexParams, validate_rows
from vectordb.wal import WalRecord, WalWriter, read_wal

from .conftest import clustered, make_rows, make_schema


def _batch(n: int, start: int = 0):
    return validate_rows(make_schema(), make_rows(clustered(n, 16, seed=start), start))


def test_round_trip(tmp_path):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    b = _batch(5)
    w.append(WalRecord("insert", 10, b.pks, b))
    w.append(WalRecord("delete", 11, [1, 2]))
    w.close()
    recs = list(read_wal(path))
    assert [r.op for r in recs] == ["insert", "delete"]
    assert recs[0].batch is not None and np.array_equal(recs[0].batch.vectors, b.vectors)
    assert recs[0].batch.columns == b.columns and recs[1].pks == [1, 2]


def test_torn_tail_is_truncated_not_replayed(tmp_path):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    b = _batch(3)
    w.append(WalRecord("insert", 1, b.pks, b))
    good_size = w.size_bytes
    w.append(WalRecord("delete", 2, [0]))
    w.close()
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3)  # crash in the middle of the last record
    assert [r.op for r in read_wal(path)] == ["insert"]
    assert path.stat().st_size == good_size


def test_corrupt_crc_ends_the_log(tmp_path):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    for ts in range(3):
        w.append(WalRecord("delete", ts, [ts]))
    w.close()
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert [r.ts for r in read_wal(path)] == [0, 1]


def test_engine_recovers_acknowledged_rows_and_drops_torn_tail(tmp_path):
    eng = vectordb.open_engine(tmp_path / "db")
    eng.create_collection("c", make_schema(), IndexParams("FLAT", "L2"))
    eng.insert("c", make_rows(clustered(20, 16), 0))
    eng.insert("c", make_rows(clustered(5, 16, seed=3), 20))
    coll_dir = next((tmp_path / "db" / "collections").iterdir())
    eng.close()
    wal = next((coll_dir / "wal" / "ch0").glob("*.log"))
    with open(wal, "ab") as f:
        f.write(b"\x40\x00\x00\x00garbage")  # a torn frame after the last good record
    eng = vectordb.open_engine(tmp_path / "db")
    try:
        assert eng.count("c") == 25
        eng.insert("c", make_rows(clustered(1, 16, seed=9), 100))
    finally:
        eng.close()
    eng = vectordb.open_engine(tmp_path / "db")
    try:
        assert eng.count("c") == 26
    finally:
        eng.close()
