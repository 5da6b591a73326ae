"""The store's own disk failing under it: a full disk for one write (RLIMIT_FSIZE on a `docvec vectordb`
child process), a write or fsync that fails once, a zero-filled WAL tail after a crash.

The promise checked: what was acknowledged is there after a crash, what was refused never comes back,
and the collection serves again by itself once the disk is healthy (no restart)."""

from __future__ import annotations

import collections
import errno
import logging
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

import vectordb
from vectordb.catalog import Catalog, SegmentMeta
from vectordb.collection import Collection
from vectordb.errors import StorageError
from vectordb.schema import IndexParams, validate_rows
from vectordb.segment import SealedSegment
from vectordb.tso import compose_ts
from vectordb.wal import FsyncPolicy, Op, WalRecord, WalWriter, read_wal

from .conftest import BareCollection, clustered, make_rows, make_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "disk-fault-token"
DIM = 8


# ------------------------------------------------------------------ a `docvec vectordb` child process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """`docvec vectordb` on 127.0.0.1 over one data directory; restartable, SIGKILLable."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout_s: float = 60.0) -> None:
        self.port = _free_port()
        cmd = [sys.executable, "-m", "docvec_cli", "vectordb", "--host", "127.0.0.1", "--port", str(self.port),
               "--data", str(self.data), "--token", TOKEN]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.call("collections/list")["code"] == 0:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"docvec vectordb exited with {self.proc.returncode}: {err[-2000:]}")
            assert time.monotonic() < deadline, "docvec vectordb did not start"
            time.sleep(0.1)

    def call(self, endpoint: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = httpx.post(f"http://127.0.0.1:{self.port}/v2/vectordb/{endpoint}", json=body or {},
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

    def ok(self, endpoint: str, body: dict[str, Any]) -> Any:
        reply = self.call(endpoint, body)
        assert reply["code"] == 0, reply
        return reply.get("data")

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self._close_pipes()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "vectors")
    try:
        yield srv
    finally:
        srv.stop()


def _rows(ids: range) -> list[dict[str, Any]]:
    vecs = clustered(len(ids), DIM, seed=ids.start)
    return [{"id": i, "vector": v.tolist()} for i, v in zip(ids, vecs, strict=True)]


def _ids(srv: ServerProcess) -> collections.Counter[int]:
    rows = srv.ok("entities/query", {"collectionName": "c", "filter": "id >= 0", "outputFields": ["id"],
                                     "limit": 16384})
    return collections.Counter(int(r["id"]) for r in rows)


def _wal_bytes(data: Path) -> int:
    return sum(p.stat().st_size for p in data.glob("collections/*/wal/ch*/*.log"))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_full_disk_refuses_one_insert_and_the_retry_leaves_one_row_per_key(server: ServerProcess) -> None:
    server.start()
    server.ok("collections/create", {"collectionName": "c", "dimension": DIM, "metricType": "COSINE"})
    server.ok("entities/insert", {"collectionName": "c", "data": _rows(range(0, 10))})

    # The disk is full for the next write: no file of the server may grow past its current size.
    assert server.proc is not None
    pid = server.proc.pid
    full_at = max(p.stat().st_size for p in server.data.glob("collections/*/wal/ch*/*.log"))
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (full_at, resource.RLIM_INFINITY))
    try:
        refused = server.call("entities/insert", {"collectionName": "c", "data": _rows(range(10, 20))})
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert refused["code"] != 0, refused
    assert "WAL" in refused["message"] or "storage" in refused["message"].lower(), refused

    # Space is back: the client retries the same rows, as an upsert.
    server.ok("entities/upsert", {"collectionName": "c", "data": _rows(range(10, 20))})
    assert _ids(server) == collections.Counter(range(20))

    server.sigkill()
    server.start()
    assert _ids(server) == collections.Counter(range(20)), "a refused write came back after the restart"

    server.ok("entities/delete", {"collectionName": "c", "filter": "id >= 10"})
    server.sigkill()
    server.start()
    assert _ids(server) == collections.Counter(range(10)), "an acknowledged delete did not survive"
    assert server.ok("entities/get", {"collectionName": "c", "id": list(range(10, 20)), "outputFields": ["id"]}) == []


# ------------------------------------------------------------------------------ in-process fault injection


def _path_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class DiskFaults:
    """Makes the next `count` WAL fsyncs or writes fail (other files are left alone)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fsync_failures = 0
        self.write_failures = 0
        self.fsyncs = 0
        self.writes = 0
        self.fail_fsync_at: int | None = None  # fail the WAL fsync with this 1-based number
        self.only_in = ""  # write failures only for WAL files whose path contains this
        real_fsync, real_pwrite = os.fsync, os.pwrite

        def fsync(fd: int) -> None:
            if _path_of(fd).endswith(".log"):
                self.fsyncs += 1
                if self.fsync_failures or self.fail_fsync_at == self.fsyncs:
                    self.fsync_failures = max(0, self.fsync_failures - 1)
                    raise OSError(errno.EIO, "Input/output error (injected)")
            real_fsync(fd)

        def pwrite(fd: int, data: Any, offset: int) -> int:
            path = _path_of(fd)
            if path.endswith(".log") and self.only_in in path:
                self.writes += 1
                if self.write_failures:
                    self.write_failures -= 1
                    half = bytes(data)[: max(1, len(data) // 2)]
                    real_pwrite(fd, half, offset)  # part of the frame reaches the file, then the disk is full
                    raise OSError(errno.ENOSPC, "No space left on device (injected)")
            return real_pwrite(fd, data, offset)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "pwrite", pwrite)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> DiskFaults:
    return DiskFaults(monkeypatch)


def _batch(ids: range):
    return validate_rows(make_schema(), make_rows(clustered(len(ids), 16, seed=ids.start), ids.start))


def _alive(coll: Collection) -> list[int]:
    return sorted(int(r["id"]) for r in coll.query(None, ["id"], None, 0))


def _wal_files(root: Path) -> list[Path]:
    return sorted(root.glob("**/wal/ch*/*.log"))


def test_one_failed_fsync_is_refused_and_the_engine_serves_again_without_a_restart(tmp_path, faults):
    with vectordb.open_engine(tmp_path / "db", fsync_policy="batch") as eng:
        eng.create_collection("c", make_schema(), IndexParams("FLAT", "L2"))
        eng.insert("c", make_rows(clustered(10, 16), 0))
        faults.fsync_failures = 1
        with pytest.raises(StorageError, match="fsync"):
            eng.insert("c", make_rows(clustered(10, 16, seed=1), 10))
        # The disk is healthy again: the next write goes through, on the same engine.
        eng.insert("c", make_rows(clustered(10, 16, seed=2), 20))
        expected = [*range(10), *range(20, 30)]
        assert sorted(r["id"] for r in eng.query("c", filter="id >= 0", output_fields=["id"])) == expected
        assert eng.count("c") == 20
        assert eng.get("c", [10, 15]) == []
        hits = eng.search("c", clustered(1, 16, seed=1), limit=30, output_fields=["id"])  # Strong: no timeout
        assert sorted(h.id for h in hits[0]) == expected
    for reopen in range(2):
        with vectordb.open_engine(tmp_path / "db") as eng:
            assert sorted(r["id"] for r in eng.query("c", filter="id >= 0", output_fields=["id"])) == expected
            if reopen == 0:
                eng.flush("c")  # and once more from sealed segments


def test_concurrent_writers_sharing_a_failed_fsync_are_all_refused_and_nothing_else(tmp_path, faults):
    env = BareCollection(tmp_path, policy=FsyncPolicy.BATCH)
    acked: list[int] = []
    refused: list[int] = []
    lock = threading.Lock()
    writers, rounds = 8, 6
    start = threading.Barrier(writers)
    faults.fail_fsync_at = 4

    def write(w: int) -> None:
        start.wait()
        for r in range(rounds):
            first = 1000 * w + 10 * r
            try:
                env.coll.insert(_batch(range(first, first + 3)))
            except StorageError:
                with lock:
                    refused.extend(range(first, first + 3))
            else:
                with lock:
                    acked.extend(range(first, first + 3))

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert refused, "the injected fsync failure hit no writer"
    assert len(acked) + len(refused) == writers * rounds * 3
    assert _alive(env.coll) == sorted(acked)
    env.coll.insert(_batch(range(90_000, 90_003)))  # serving again, no restart
    assert _alive(env.crash_reopen()) == sorted([*acked, *range(90_000, 90_003)])


@pytest.mark.parametrize("policy", [FsyncPolicy.BATCH, FsyncPolicy.NONE])
def test_a_failed_write_leaves_no_bytes_behind(tmp_path, faults, policy):
    env = BareCollection(tmp_path, policy=policy)
    env.coll.insert(_batch(range(0, 5)))
    (wal,) = _wal_files(tmp_path)
    size = wal.stat().st_size
    faults.write_failures = 1
    with pytest.raises(StorageError, match="No space left"):
        env.coll.insert(_batch(range(5, 10)))
    assert wal.stat().st_size == size, "half a refused frame stayed in the WAL"
    env.coll.upsert(_batch(range(5, 10)))  # the client's retry
    assert _alive(env.coll) == list(range(10))
    assert [r.op for r in read_wal(wal, repair=False) if r.op in (Op.INSERT, Op.DELETE)] == ["insert", "insert"]
    assert _alive(env.crash_reopen()) == list(range(10))


def test_a_write_spanning_channels_that_fails_on_one_is_taken_back_from_all(tmp_path, faults):
    env = BareCollection(tmp_path, shards_num=2, policy=FsyncPolicy.BATCH)
    env.coll.insert(_batch(range(0, 4)))
    sizes = [p.stat().st_size for p in _wal_files(tmp_path)]
    batch = _batch(range(100, 140))
    assert len(env.coll._split(batch)) == 2, "the batch must span both channels"
    faults.write_failures, faults.only_in = 1, "/ch1/"  # channel 0 logs its part, channel 1 refuses its own
    with pytest.raises(StorageError):
        env.coll.upsert(batch)
    assert [p.stat().st_size for p in _wal_files(tmp_path)] == sizes
    assert _alive(env.coll) == list(range(4))
    assert _alive(env.crash_reopen()) == list(range(4))
    env.coll.upsert(batch)
    assert _alive(env.coll) == [*range(4), *range(100, 140)]
    assert _alive(env.crash_reopen()) == [*range(4), *range(100, 140)]


def test_a_failed_fsync_while_a_flush_rotates_the_wal_keeps_every_acknowledged_row(tmp_path, faults):
    with vectordb.open_engine(tmp_path / "db", fsync_policy="batch") as eng:
        eng.create_collection("c", make_schema(), IndexParams("FLAT", "L2"))
        eng.insert("c", make_rows(clustered(10, 16), 0))
        faults.fsync_failures = 1  # the flush's close of the old generation
        with pytest.raises(StorageError):
            eng.flush("c")
        eng.insert("c", make_rows(clustered(10, 16, seed=1), 10))
        eng.delete("c", ids=[0, 1])
        eng.flush("c")
        eng.insert("c", make_rows(clustered(3, 16, seed=2), 20))
        expected = [*range(2, 20), *range(20, 23)]
        assert sorted(r["id"] for r in eng.query("c", filter="id >= 0", output_fields=["id"])) == expected
    with vectordb.open_engine(tmp_path / "db") as eng:
        assert sorted(r["id"] for r in eng.query("c", filter="id >= 0", output_fields=["id"])) == expected


# ------------------------------------------------------------------------------------ reading the log


def test_a_zero_filled_tail_is_cut_quietly_and_writing_goes_on(tmp_path, caplog):
    env = BareCollection(tmp_path)
    env.coll.insert(_batch(range(0, 5)))
    env.coll.close()
    (wal,) = _wal_files(tmp_path)
    good = wal.stat().st_size
    with open(wal, "ab") as f:  # the file's size reached the disk, its last blocks did not
        f.write(b"\0" * 4096)
    with caplog.at_level(logging.INFO, logger="vectordb"):
        coll = env.crash_reopen()
    assert _alive(coll) == list(range(5))
    assert wal.stat().st_size == good
    assert not list(tmp_path.glob("**/*.corrupt"))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.message for r in caplog.records]
    coll.insert(_batch(range(5, 8)))  # appended where the zeros were, not after them
    assert _alive(env.reopen()) == list(range(8))
    assert not list(tmp_path.glob("**/*.corrupt"))


def test_a_torn_frame_followed_by_zeros_is_a_torn_tail_too(tmp_path):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    for ts in range(3):
        w.append(WalRecord("delete", ts, [ts]))
    size = w.size_bytes
    w.append(WalRecord("delete", 3, list(range(500))))
    w.close()
    data = path.read_bytes()
    path.write_bytes(data[: size + 40] + b"\0" * (len(data) - size))  # the frame's tail and beyond: zeros
    assert [r.ts for r in read_wal(path)] == [0, 1, 2]
    assert path.stat().st_size == size
    assert not path.with_name("w.log.corrupt").exists()


def test_zeros_in_the_middle_of_the_log_are_still_corruption(tmp_path, caplog):
    path = tmp_path / "w.log"
    w = WalWriter(path)
    offsets = []
    for ts in range(4):
        offsets.append(w.size_bytes)
        w.append(WalRecord("delete", ts, [ts]))
    w.close()
    data = bytearray(path.read_bytes())
    data[offsets[1] : offsets[2]] = bytes(offsets[2] - offsets[1])  # record 1 zeroed, 2 and 3 intact
    path.write_bytes(bytes(data))
    assert [r.ts for r in read_wal(path)] == [0]
    assert path.with_name("w.log.corrupt").read_bytes() == bytes(data[offsets[1] :])
    assert any(r.levelname == "ERROR" and "middle" in r.message for r in caplog.records)


# ------------------------------------------------------------------------------------ idempotent replay


def test_replaying_a_key_twice_keeps_one_row_the_later_one(tmp_path):
    env = BareCollection(tmp_path)
    env.coll.insert(_batch(range(0, 3)))
    env.coll.close()
    (wal,) = _wal_files(tmp_path)
    again = _batch(range(1, 2))
    again.columns["title"] = ["the later write"]
    w = WalWriter(wal, policy=FsyncPolicy.NONE)  # what an old version left: a second insert of key 1
    w.append(WalRecord(Op.INSERT.value, env.tso.next(), again.pks, again))
    w.close()
    coll = env.crash_reopen()
    rows = coll.query(None, ["id", "title"], None, 0)
    assert sorted(r["id"] for r in rows) == [0, 1, 2]
    assert [r["title"] for r in rows if r["id"] == 1] == ["the later write"]
    coll.delete_pks([1])
    assert _alive(env.crash_reopen()) == [0, 2]
    env.coll.flush()
    assert _alive(env.reopen()) == [0, 2]


def test_a_key_alive_in_two_sealed_segments_keeps_the_newest_row(tmp_path):
    with vectordb.open_engine(tmp_path / "db", fsync=False) as eng:
        eng.create_collection("c", make_schema(), IndexParams("FLAT", "L2"))
        eng.insert("c", make_rows(clustered(4, 16), 0))
        eng.flush("c")
    # A data directory written before replay collapsed duplicates: key 2 sealed twice.
    catalog = Catalog(tmp_path / "db" / "catalog.json")
    meta = catalog.get("c")
    assert meta is not None
    newer = _batch(range(2, 3))
    seg_id = meta.segments[-1].id + 1
    seg_dir = tmp_path / "db" / "collections" / str(meta.id) / "segments" / str(seg_id)
    SealedSegment.create(
        seg_id, meta.schema, seg_dir, meta.index, pks=newer.pks, columns={**newer.columns, "$partition": [0]},
        dynamic=None, vectors=newer.vectors, norms=np.linalg.norm(newer.vectors, axis=1).astype(np.float32),
        insert_ts=np.array([compose_ts(time.time_ns() // 1_000_000, 0)], dtype=np.int64),
    )
    catalog.put(meta.with_changes(segments=(*meta.segments, SegmentMeta(seg_id, 1, None))))
    with vectordb.open_engine(tmp_path / "db", fsync=False) as eng:
        assert sorted(r["id"] for r in eng.query("c", filter="id >= 0", output_fields=["id"])) == [0, 1, 2, 3]
        (hit,) = eng.get("c", [2], output_fields=["id", "title"])
        assert hit["title"] == newer.columns["title"][0]
        eng.delete("c", ids=[2])
        eng.flush("c")
    with vectordb.open_engine(tmp_path / "db", fsync=False) as eng:
        assert sorted(r["id"] for r in eng.query("c", filter="id >= 0", output_fields=["id"])) == [0, 1, 3]


def test_a_recovery_while_a_flush_seals_makes_the_flush_retry_not_duplicate(tmp_path, faults, monkeypatch):
    env = BareCollection(tmp_path, policy=FsyncPolicy.BATCH)
    env.coll.insert(_batch(range(0, 20)))
    real_seal = SealedSegment.seal

    def seal_during_a_failure(growing, directory, index_params):  # type: ignore[no-untyped-def]
        faults.fsync_failures = 1
        with pytest.raises(StorageError):
            env.coll.insert(_batch(range(20, 25)))  # refused: the channel fails while the flush seals
        assert env.coll.count() == 20  # this read rebuilds memory from the WAL, sealed rows included
        return real_seal(growing, directory, index_params)

    monkeypatch.setattr(SealedSegment, "seal", seal_during_a_failure)
    with pytest.raises(StorageError, match="interrupted by a storage recovery"):
        env.coll.flush()
    monkeypatch.setattr(SealedSegment, "seal", real_seal)
    assert not list((tmp_path / "c" / "segments").iterdir())  # the abandoned flush left no segment behind
    assert _alive(env.coll) == list(range(20))
    env.coll.flush()
    env.coll.insert(_batch(range(30, 33)))
    assert _alive(env.coll) == [*range(20), *range(30, 33)]
    assert _alive(env.crash_reopen()) == [*range(20), *range(30, 33)]


def test_a_delete_refused_while_a_flush_seals_is_not_persisted_with_the_segment(tmp_path, faults, monkeypatch):
    env = BareCollection(tmp_path, policy=FsyncPolicy.BATCH)
    env.coll.insert(_batch(range(0, 10)))
    real_seal = SealedSegment.seal

    def seal_during_a_failed_delete(growing, directory, index_params):  # type: ignore[no-untyped-def]
        faults.fsync_failures = 1
        with pytest.raises(StorageError):
            env.coll.delete_pks([3])  # logged after the checkpoint, applied in memory, then refused
        return real_seal(growing, directory, index_params)

    monkeypatch.setattr(SealedSegment, "seal", seal_during_a_failed_delete)
    env.coll.flush()
    assert _alive(env.coll) == list(range(10))
    assert _alive(env.crash_reopen()) == list(range(10)), "a refused delete was persisted by the flush"


def test_under_the_interval_policy_a_failed_background_fsync_keeps_what_was_acknowledged(tmp_path, faults):
    env = BareCollection(tmp_path, policy=FsyncPolicy.INTERVAL)
    faults.fsync_failures = 1
    env.coll.insert(_batch(range(0, 6)))  # acknowledged once written, before any fsync
    for _ in range(500):
        if env.coll.needs_recovery:
            break
        threading.Event().wait(0.01)
    assert env.coll.needs_recovery, "the background fsync never ran"
    env.coll.insert(_batch(range(6, 9)))  # recovers first, then writes
    assert not env.coll.needs_recovery
    assert _alive(env.coll) == list(range(9))
    assert _alive(env.crash_reopen()) == list(range(9))
