"""Write-ahead log files: CRC32-framed records, appended with a configurable fsync policy.

Frame: `<u32 payload length><u32 crc32(payload)><payload>`.
Payload: `<u32 header length><header JSON><float32 vector bytes>`; the header holds the message type,
timestamp, primary keys, transaction id, scalar columns or a DDL/flush description; insert records
carry the vectors after it.

Damage on read:
- a torn tail (short frame header, a record running past the end of the file, a bad last record, or
  any of these followed by nothing but zeros, e.g. a zero-filled tail after a crash) is an append
  that never completed: it is cut and never replayed;
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
    if length <= _HEADER_LEN.size:  # a record holds at least its header; all-zero bytes read as length 0
        return "empty frame", end
    if length > MAX_RECORD_BYTES or end > len(data):
        return "torn record", end
    if zlib.crc32(data[offset + _FRAME.size : end]) != crc:
        return "CRC mismatch", end
    return None, end


def _valid_frame_after(data: bytes, start: int) -> int | None:
    """Offset of the first CRC-valid frame at or after `start` (bounded scan), or None."""
    # A frame's length field is not zero, so no frame starts in a run of zeros at the end.
    stop = min(len(data) - _FRAME.size, start + _RESYNC_SCAN_BYTES, len(data.rstrip(b"\0")) - 1)
    for p in range(start, stop + 1):
        length, crc = _FRAME.unpack_from(data, p)
        end = p + _FRAME.size + length
        if _HEADER_LEN.size < length and end <= len(data) and zlib.crc32(data[p + _FRAME.size : end]) == crc:
            return p
    return None


def _is_torn_tail(data: bytes, offset: int, end: int) -> bool:
    """Whether the bad frame at `offset` is an append that never completed: no valid frame follows it,
    and after it (as far as its header declares) the file ends or holds only zeros, which is what a
    crash leaves when the file's size reached the disk before its data."""
    if end < len(data) and data[end:].strip(b"\0"):
        return False
    return _valid_frame_after(data, offset + 1) is None


def _cut(path: Path, data: bytes, offset: int, end: int, problem: str) -> None:
    """Cut the file at `offset`; keep the cut bytes in `.corrupt` unless they are only a torn tail."""
    if _is_torn_tail(data, offset, end):
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
    """Appends framed records to one WAL file through a raw (unbuffered) file descriptor.

    `append_many` is called under the channel's lock (so file order is timestamp order); it writes to
    the OS and returns a sequence number. `sync(seq)` is thread-safe and returns once that append is
    durable under the policy; callers acknowledge a write only after it.

    Failures never leave a refused byte behind (PostgreSQL's lesson from "fsyncgate": after a failed
    fsync the page cache cannot be trusted, so what was not acknowledged is cut, never retried):
    - a failed write is cut back at once to where it started; the writer stays usable;
    - a failed fsync cuts the file back to the last acknowledged byte (`acked_size`: covered by a
      successful fsync, or simply written under the interval/none policies), fails every append not
      yet acknowledged, and leaves the writer `failed`: its channel must reopen the file and rebuild
      its state from what is durable (`Collection` does that on its next request);
    - if even the cut fails, `settle()` retries it before the file may be reopened.
    """

    def __init__(self, path: Path, *, policy: FsyncPolicy = FsyncPolicy.ALWAYS, interval_ms: int = 100) -> None:
        self.path = path
        self.policy = policy
        existed = path.exists()
        try:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise StorageError(f"cannot open WAL {path}: {e}") from e
        self._size = os.fstat(self._fd).st_size
        self._acked_size = self._size  # what the file held when opened was replayed: it counts as acknowledged
        if not existed and policy is not FsyncPolicy.NONE:
            try:
                fsync_path(path.parent)
            except OSError as e:
                os.close(self._fd)
                raise StorageError(f"cannot make the new WAL {path} durable: {e}") from e
        self._cond = threading.Condition()
        self._written_seq = 0
        self._synced_seq = 0
        self._syncing = False
        self._cuts = 0  # bumped by `revoke_from`: an fsync that overlapped a cut proves nothing
        self._failed: StorageError | None = None
        self._unsafe_tail = False  # refused bytes may still be in the file: a cut failed
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

    @property
    def acked_size(self) -> int:
        """Bytes of the file that hold acknowledged (or acknowledgeable) appends only."""
        return self._acked_size

    @property
    def failed(self) -> bool:
        return self._failed is not None

    def append(self, rec: WalRecord) -> int:
        """Write and (by policy) fsync one record; see `append_many`."""
        seq = self.append_many([rec])
        self.sync(seq)
        return seq

    def append_many(self, recs: Sequence[WalRecord]) -> int:
        """Write the records in one go; return the sequence number to pass to `sync`.

        On a write failure (disk full, file size limit, I/O error) the file is cut back to its old
        size, so no part of the refused frames stays behind, and StorageError is raised.
        """
        data = b"".join(frame(encode_record(r)) for r in recs)
        with self._cond:
            self._raise_if_unusable()
            start = self._size
            try:
                _write_at(self._fd, data, start)
            except OSError as e:
                # Later appends overwrite these offsets, so the cut needs no fsync: a crash before
                # the new size is durable leaves at most a torn tail of refused bytes, which is cut.
                if not self._truncate_locked(start, sync=False):
                    self._fail_locked(f"cannot cut a failed write off WAL {self.path}")
                raise StorageError(f"cannot write WAL {self.path}: {e}") from e
            self._size = start + len(data)
            self._written_seq += 1
            if self.policy in (FsyncPolicy.INTERVAL, FsyncPolicy.NONE):
                self._acked_size = self._size
            return self._written_seq

    def sync(self, seq: int) -> None:
        """Return once append `seq` is durable under the policy (a no-op for interval/none).

        Raises StorageError when an fsync failed before covering it (the append was cut: refused).
        """
        if self.policy is FsyncPolicy.ALWAYS:
            with self._cond:
                if self._synced_seq < seq and self._failed is None:
                    self._fsync_locked()
                self._raise_unless_synced(seq)
        elif self.policy is FsyncPolicy.BATCH:
            self._group_sync(seq)

    def _group_sync(self, seq: int) -> None:
        with self._cond:
            while self._synced_seq < seq and self._failed is None:
                if self._syncing:
                    self._cond.wait()
                    continue
                # Leader: one fsync covers every append written so far, including other threads'.
                self._syncing = True
                target, target_size, cuts = self._written_seq, self._size, self._cuts
                self._cond.release()
                try:
                    error = self._do_fsync()
                finally:
                    self._cond.acquire()
                    self._syncing = False
                self._after_fsync(target, target_size, cuts, error)
            self._raise_unless_synced(seq)

    def _raise_unless_synced(self, seq: int) -> None:
        if self._synced_seq < seq:
            raise self._failed or StorageError(f"WAL {self.path}: append {seq} was not made durable")

    def _fsync_locked(self) -> None:
        self._after_fsync(self._written_seq, self._size, self._cuts, self._do_fsync())

    def _do_fsync(self) -> OSError | None:
        try:
            os.fsync(self._fd)
        except OSError as e:
            return e
        return None

    def _after_fsync(self, target: int, target_size: int, cuts: int, error: OSError | None) -> None:
        self.fsync_count += 1
        if error is not None:
            self._fail_locked(f"fsync of WAL {self.path} failed: {error}")
        elif cuts == self._cuts:
            self._synced_seq = max(self._synced_seq, target)
            self._acked_size = max(self._acked_size, target_size)
        self._cond.notify_all()

    def _fail_locked(self, reason: str) -> None:
        """Refuse every append not yet acknowledged: cut them off the file, fail their waiters."""
        if self._failed is None:
            self._failed = StorageError(f"{reason}; the writes not yet acknowledged were refused")
            log.error("%s", self._failed)
        self._truncate_locked(self._acked_size, sync=self.policy is not FsyncPolicy.NONE)
        self._cond.notify_all()

    def _truncate_locked(self, size: int, *, sync: bool) -> bool:
        """Cut the file to `size` (and fsync the cut); on failure mark the tail unsafe and the writer failed."""
        try:
            if self._closed:
                os.truncate(self.path, size)
                if sync:
                    fsync_path(self.path)
            else:
                os.ftruncate(self._fd, size)
                if sync:
                    os.fsync(self._fd)
        except OSError as e:
            self._unsafe_tail = True
            if self._failed is None:
                self._failed = StorageError(f"cannot cut refused bytes off WAL {self.path}: {e}")
            log.error("WAL %s: could not cut the file back to byte %d: %s", self.path, size, e)
            return False
        self._size = size
        self._unsafe_tail = False
        return True

    def revoke_from(self, offset: int) -> None:
        """Cut the file back to `offset`, the start of the last append, which its caller refused.

        For a write that spans channels and failed on a later one; the caller holds the channel's
        lock, so no append follows the revoked one.
        """
        with self._cond:
            self._cuts += 1
            self._acked_size = min(self._acked_size, offset)
            if not self._truncate_locked(offset, sync=self.policy is not FsyncPolicy.NONE):
                self._fail_locked(f"cannot revoke the last append to WAL {self.path}")
            self._cond.notify_all()

    def settle(self) -> None:
        """Before a failed writer's file is reopened: make sure its refused bytes are gone (retry the cut)."""
        with self._cond:
            if self._unsafe_tail and not self._truncate_locked(self._acked_size, sync=True):
                raise StorageError(f"WAL {self.path} still holds refused writes and cannot be cut; check the disk")

    def is_durable(self, seq: int) -> bool:
        """Whether append `seq` may be made visible: fsynced, or written when the policy never waits."""
        if self.policy in (FsyncPolicy.ALWAYS, FsyncPolicy.BATCH):
            return self._synced_seq >= seq
        return self._written_seq >= seq

    def _raise_if_unusable(self) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise StorageError(f"WAL {self.path} is closed")

    def _sync_every_interval(self) -> None:
        with self._cond:
            while not self._closed:
                self._cond.wait(self._interval_s)
                if not self._closed and self._synced_seq < self._written_seq and self._failed is None:
                    self._fsync_locked()

    def close(self) -> None:
        """Make everything written durable (unless the policy is none) and close the file. Idempotent.

        Does not raise: a final fsync that fails leaves the writer `failed` (see the class docstring).
        """
        with self._cond:
            if self._closed:
                return
            while self._syncing:  # a group-commit leader is fsyncing outside the lock
                self._cond.wait()
            if self.policy is not FsyncPolicy.NONE and self._synced_seq < self._written_seq and self._failed is None:
                self._fsync_locked()
            self._closed = True
            self._cond.notify_all()
        if self._ticker is not None:
            self._ticker.join()
        os.close(self._fd)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
