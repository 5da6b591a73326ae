"""Write-ahead log files: CRC32-framed records, appended with a configurable fsync policy.

Frame: `<u32 payload length><u32 crc32(payload)><payload>`.
Payload: `<u32 header length><header JSON><float32 vector bytes>`; the header holds the message type,
timestamp, primary keys, transaction id, scalar columns or a DDL/flush description; insert records
carry the vectors after it.

Damage on read:
- a torn tail (short frame header, a record running past the end of the file, or a bad last record)
  is an append that never completed: it is cut and never replayed;
- a bad record with data after it is corruption in the middle: reading stops there, the error is
  logged loudly, and everything from that record on is moved to `<file>.corrupt` for inspection
  rather than silently dropped.

Fsync policies (`FsyncPolicy`):
- `always`: every append is fsynced before it is acknowledged;
- `batch`: group commit: concurrent appenders wait for one shared fsync that covers all of them;
  same durability as `always` for acknowledged writes, far fewer fsyncs under concurrency;
- `interval`: a background thread fsyncs every `interval_ms`; writes are in the OS page cache
  before they are acknowledged, so a process crash loses nothing, but a power loss can lose the
  writes acknowledged within the last interval;
- `none`: never fsync (tests, benchmarks); like `interval` without the bound.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vectordb.errors import StorageError
from vectordb.fsutil import fsync_path
from vectordb.schema import RowBatch

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")
_HEADER_LEN = struct.Struct("<I")
MAX_RECORD_BYTES = 1 << 31
# How far past a record whose length runs off the end we look for a valid frame (corruption check).
_RESYNC_SCAN_BYTES = 4 << 20


class Op(enum.StrEnum):
    """Message types. `upsert` is only read (logs written before upserts became transactions)."""

    INSERT = "insert"
    DELETE = "delete"
    UPSERT = "upsert"
    DDL = "ddl"
    FLUSH = "flush"
    TIME_TICK = "timetick"
    TXN_BEGIN = "txn_begin"
    TXN_COMMIT = "txn_commit"
    TXN_ROLLBACK = "txn_rollback"


DATA_OPS = frozenset({Op.INSERT, Op.DELETE, Op.UPSERT})


@dataclass(frozen=True, slots=True)
class WalRecord:
    """One logged message. Deletes carry only `pks`; DDL and flush describe themselves in `info`;
    messages of a transaction carry its `txn_id` (0: not in a transaction)."""

    op: str
    ts: int
    pks: list[Any]
    batch: RowBatch | None = None
    txn_id: int = 0
    info: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True, order=True)
class MessageId:
    """Position of a message in its channel: WAL generation and byte offset in that file."""

    gen: int
    offset: int


def encode_record(rec: WalRecord) -> bytes:
    header: dict[str, Any] = {"op": str(Op(rec.op).value), "ts": rec.ts, "pks": rec.pks}
    if rec.txn_id:
        header["txn"] = rec.txn_id
    if rec.info is not None:
        header["info"] = rec.info
    body = b""
    if rec.batch is not None:
        header["cols"] = rec.batch.columns
        header["dyn"] = rec.batch.dynamic
        header["dim"] = int(rec.batch.vectors.shape[1])
        body = np.ascontiguousarray(rec.batch.vectors, dtype="<f4").tobytes()
    hjson = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER_LEN.pack(len(hjson)) + hjson + body


def decode_record(payload: bytes) -> WalRecord:
    (hlen,) = _HEADER_LEN.unpack_from(payload, 0)
    header = json.loads(payload[4 : 4 + hlen])
    batch = None
    if "dim" in header:
        vecs = np.frombuffer(payload, dtype="<f4", offset=4 + hlen).reshape(-1, header["dim"])
        if vecs.shape[0] != len(header["pks"]):
            raise ValueError("vector count does not match primary keys")
        batch = RowBatch(header["pks"], vecs.astype(np.float32), header["cols"], header["dyn"])
    op = Op(header["op"]).value
    return WalRecord(op, int(header["ts"]), header["pks"], batch, int(header.get("txn", 0)), header.get("info"))


def frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


# ------------------------------------------------------------------------------------------ reading


def read_frames(path: Path, *, repair: bool = True) -> Iterator[tuple[int, WalRecord]]:
    """Yield `(offset, record)` for the valid records of `path`, in order.

    With `repair`, a torn tail is cut off the file and mid-file corruption is moved to
    `<path>.corrupt`; without it (a live scanner) reading just stops at the first bad record.
    """
    if not path.exists():
        return
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        bad, end = _check_frame(data, offset)
        if bad is None:
            payload = data[offset + _FRAME.size : end]
            try:
                rec = decode_record(payload)
            except (ValueError, KeyError, TypeError, struct.error) as e:
                bad = f"undecodable payload ({e})"
            else:
                yield offset, rec
                offset = end
                continue
        if repair:
            _cut(path, data, offset, end, bad)
        return


def read_wal(path: Path, *, repair: bool = True) -> Iterator[WalRecord]:
    """Yield the valid records of `path` in order (see `read_frames`)."""
    for _offset, rec in read_frames(path, repair=repair):
        yield rec


def _check_frame(data: bytes, offset: int) -> tuple[str | None, int]:
    """(problem or None, end offset of the frame as declared by its header)."""
    if len(data) - offset < _FRAME.size:
        return "torn frame header", len(data)
    length, crc = _FRAME.unpack_from(data, offset)
    end = offset + _FRAME.size + length
    if length > MAX_RECORD_BYTES or end > len(data):
        return "torn record", end
    if zlib.crc32(data[offset + _FRAME.size : end]) != crc:
        return "CRC mismatch", end
    return None, end


def _valid_frame_after(data: bytes, start: int) -> int | None:
    """Offset of the first CRC-valid frame at or after `start` (bounded scan), or None."""
    stop = min(len(data) - _FRAME.size, start + _RESYNC_SCAN_BYTES)
    for p in range(start, stop + 1):
        length, crc = _FRAME.unpack_from(data, p)
        end = p + _FRAME.size + length
        if _HEADER_LEN.size < length and end <= len(data) and zlib.crc32(data[p + _FRAME.size : end]) == crc:
            return p
    return None


def _cut(path: Path, data: bytes, offset: int, end: int, problem: str) -> None:
    """Cut the file at `offset`; keep the cut bytes in `.corrupt` unless they are only a torn tail."""
    torn_tail = end >= len(data) and _valid_frame_after(data, offset + 1) is None
    if torn_tail:
        log.warning("WAL %s: %s at byte %d; cutting a torn tail of %d bytes", path, problem, offset, len(data) - offset)
    else:
        side = path.with_name(path.name + ".corrupt")
        log.error(
            "WAL %s: %s at byte %d in the middle of the log; recovery stops there and the %d bytes from it "
            "on are kept in %s for inspection",
            path,
            problem,
            offset,
            len(data) - offset,
            side,
        )
        with open(side, "ab") as f:
            f.write(data[offset:])
            f.flush()
            os.fsync(f.fileno())
    with open(path, "r+b") as f:
        f.truncate(offset)
        f.flush()
        os.fsync(f.fileno())


# ------------------------------------------------------------------------------------------ writing


class FsyncPolicy(enum.StrEnum):
    ALWAYS = "always"
    BATCH = "batch"
    INTERVAL = "interval"
    NONE = "none"


def resolve_fsync_policy(fsync_policy: str | FsyncPolicy | None, fsync: bool | None) -> FsyncPolicy:
    """The policy from the new `fsync_policy` setting or the legacy `fsync` flag (True -> batch)."""
    if fsync_policy is not None:
        try:
            policy = FsyncPolicy(fsync_policy)
        except ValueError:
            choices = [p.value for p in FsyncPolicy]
            raise ValueError(f"fsync_policy must be one of {choices}, got {fsync_policy!r}") from None
        if fsync is False and policy is not FsyncPolicy.NONE:
            raise ValueError(f"fsync=False contradicts fsync_policy={policy.value!r}")
        return policy
    return FsyncPolicy.NONE if fsync is False else FsyncPolicy.BATCH


class WalWriter:
    """Appends framed records to one WAL file.

    `append` is not thread-safe (the channel's lock serialises appends, so file order is timestamp
    order); it writes to the OS and returns a sequence number. `sync(seq)` is thread-safe and returns
    once that append is durable under the policy; callers acknowledge a write only after it.
    """

    def __init__(self, path: Path, *, policy: FsyncPolicy = FsyncPolicy.ALWAYS, interval_ms: int = 100) -> None:
        self.path = path
        self.policy = policy
        existed = path.exists()
        self._f = open(path, "ab")  # noqa: SIM115 - lives as long as the writer
        self._size = self._f.tell()
        if not existed and policy is not FsyncPolicy.NONE:
            fsync_path(path.parent)
        self._cond = threading.Condition()
        self._written_seq = 0
        self._synced_seq = 0
        self._syncing = False
        self._failed: BaseException | None = None
        self._closed = False
        self.fsync_count = 0
        self._ticker: threading.Thread | None = None
        if policy is FsyncPolicy.INTERVAL:
            self._interval_s = max(interval_ms, 1) / 1000
            self._ticker = threading.Thread(target=self._sync_every_interval, name=f"wal-sync-{path.name}", daemon=True)
            self._ticker.start()

    @property
    def size_bytes(self) -> int:
        return self._size

    def append(self, rec: WalRecord) -> int:
        """Write and (by policy) fsync one record; see `append_many`."""
        seq = self.append_many([rec])
        if self.policy in (FsyncPolicy.ALWAYS, FsyncPolicy.BATCH):
            self.sync(seq)
        return seq

    def append_many(self, recs: Sequence[WalRecord]) -> int:
        """Write the records in one `write`; return the sequence number to pass to `sync`.

        On a write failure the file is cut back to its old size, so no half frame stays behind.
        """
        data = b"".join(frame(encode_record(r)) for r in recs)
        self._raise_if_failed()
        try:
            self._f.write(data)
            self._f.flush()
        except OSError as e:
            self._rollback()
            raise StorageError(f"cannot write WAL {self.path}: {e}") from e
        self._size += len(data)
        with self._cond:
            self._written_seq += 1
            return self._written_seq

    def sync(self, seq: int) -> None:
        """Return once append `seq` is durable under the policy (a no-op for interval/none)."""
        if self.policy is FsyncPolicy.ALWAYS:
            with self._cond:
                if self._synced_seq < seq:
                    self._fsync_locked(self._written_seq)
                self._raise_if_failed()
        elif self.policy is FsyncPolicy.BATCH:
            self._group_sync(seq)

    def _group_sync(self, seq: int) -> None:
        with self._cond:
            while self._synced_seq < seq:
                self._raise_if_failed()
                if self._syncing:
                    self._cond.wait()
                    continue
                # Leader: one fsync covers every append written so far, including other threads'.
                self._syncing = True
                target = self._written_seq
                self._cond.release()
                try:
                    error = self._do_fsync()
                finally:
                    self._cond.acquire()
                    self._syncing = False
                self._after_fsync(target, error)
            self._raise_if_failed()

    def _fsync_locked(self, target: int) -> None:
        self._after_fsync(target, self._do_fsync())

    def _do_fsync(self) -> OSError | None:
        try:
            os.fsync(self._f.fileno())
        except OSError as e:
            return e
        return None

    def _after_fsync(self, target: int, error: OSError | None) -> None:
        self.fsync_count += 1
        if error is not None:
            # The page cache state after a failed fsync is unknown: refuse further writes (like
            # PostgreSQL), the channel must be reopened, which replays what really is on disk.
            self._failed = StorageError(f"fsync of WAL {self.path} failed: {error}")
            log.error("%s", self._failed)
        else:
            self._synced_seq = max(self._synced_seq, target)
        self._cond.notify_all()

    def is_durable(self, seq: int) -> bool:
        """Whether append `seq` may be made visible: fsynced, or written when the policy never waits."""
        if self.policy in (FsyncPolicy.ALWAYS, FsyncPolicy.BATCH):
            return self._synced_seq >= seq
        return self._written_seq >= seq

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def _sync_every_interval(self) -> None:
        with self._cond:
            while not self._closed:
                self._cond.wait(self._interval_s)
                if not self._closed and self._synced_seq < self._written_seq and self._failed is None:
                    self._fsync_locked(self._written_seq)

    def _rollback(self) -> None:
        # A half-written frame followed by later good ones would make recovery drop acknowledged writes.
        try:
            self._f.truncate(self._size)
            self._f.seek(self._size)
        except OSError as e:
            log.error("WAL %s: could not cut back a failed append: %s", self.path, e)

    def close(self) -> None:
        """Make everything written durable (unless the policy is none) and close the file."""
        with self._cond:
            if self._closed:
                return
            while self._syncing:  # a group-commit leader is fsyncing outside the lock
                self._cond.wait()
            if self.policy is not FsyncPolicy.NONE and self._synced_seq < self._written_seq and self._failed is None:
                self._fsync_locked(self._written_seq)
            self._closed = True
            self._cond.notify_all()
        if self._ticker is not None:
            self._ticker.join()
        self._f.close()
