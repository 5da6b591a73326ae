"""A shard channel: its WAL generations, its writer, and its serviceable timestamp.

The serviceable timestamp is the largest `ts` such that every write to this channel with a
timestamp <= ts is applied and durable (under the fsync policy), so a read at it is repeatable.
It advances when a write becomes durable and on time ticks: a tick, taken under the write lock
with no write in flight, moves it to a fresh TSO timestamp (any later write gets a larger one).
Ticks are cheap and in memory; they happen when a reader needs one, on flush and on close (where
a time-tick message is also logged).

When the writer fails (an fsync failed: its unacknowledged appends were cut off the file and their
tickets will never become durable), the channel is `failed`: readers waiting on it are told so
instead of timing out, and the collection calls `reopen` once it has dropped those writes from
memory. `revoke` takes back the last append of a write that failed on another channel.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vectordb.errors import ConsistencyTimeout, StorageError
from vectordb.fsutil import fsync_path
from vectordb.streaming.scanner import DeliverPolicy, scan, wal_file, wal_gens
from vectordb.tso import TimestampOracle
from vectordb.wal import FsyncPolicy, MessageId, Op, WalRecord, WalWriter

log = logging.getLogger(__name__)

@dataclass(frozen=True, slots=True)
class AppendTicket:
    """What `Channel.append` hands back: wait on it with `Channel.wait_durable`."""

    writer: WalWriter
    seq: int
    ts: int
    first_id: MessageId


class Channel:
    """One shard channel. `append` must be called under the collection's write lock (`lock`)."""

    def __init__(
        self,
        index: int,
        directory: Path,
        tso: TimestampOracle,
        lock: threading.RLock,
        *,
        policy: FsyncPolicy,
        interval_ms: int,
    ) -> None:
        self.index = index
        self.name = f"ch{index}"
        self.directory = directory
        self._tso = tso
        self.lock = lock
        self._policy = policy
        self._interval_ms = interval_ms
        self._cond = threading.Condition()
        self._pending: deque[AppendTicket] = deque()
        self.serviceable_ts = 0
        self.last_write_ts = 0
        self.writer: WalWriter | None = None

    def open_writer(self, gen: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        new_dir = not any(self.directory.iterdir())
        self.writer = WalWriter(wal_file(self.directory, gen), policy=self._policy, interval_ms=self._interval_ms)
        if new_dir and self._policy is not FsyncPolicy.NONE:
            fsync_path(self.directory.parent)

    @property
    def failed(self) -> bool:
        """The writer failed: some appends were refused and memory must be rebuilt, then `reopen`."""
        return self.writer is not None and self.writer.failed

    @property
    def gen(self) -> int:
        assert self.writer is not None
        return int(self.writer.path.stem)

    def scan(self, policy: DeliverPolicy, *, repair: bool = False) -> Iterator[tuple[MessageId, WalRecord]]:
        return scan(self.directory, policy, repair=repair)

    # ------------------------------------------------------------------------------------ writing

    def append(self, recs: list[WalRecord], ts: int) -> AppendTicket:
        """Write `recs` (already stamped with `ts`) in one go; the caller holds `lock`."""
        assert self.writer is not None
        first = MessageId(self.gen, self.writer.size_bytes)
        seq = self.writer.append_many(recs)
        ticket = AppendTicket(self.writer, seq, ts, first)
        self.last_write_ts = ts
        with self._cond:
            self._pending.append(ticket)
        return ticket

    def wait_durable(self, ticket: AppendTicket) -> None:
        """Block until the write is durable under the policy, then publish it to readers."""
        ticket.writer.sync(ticket.seq)
        self._advance()

    def _advance(self) -> None:
        with self._cond:
            moved = False
            while self._pending and self._pending[0].writer.is_durable(self._pending[0].seq):
                self.serviceable_ts = max(self.serviceable_ts, self._pending.popleft().ts)
                moved = True
            if moved:
                self._cond.notify_all()

    def revoke(self, ticket: AppendTicket) -> None:
        """Take back the channel's last append (the caller holds `lock` since it made it): cut it off
        the file and forget its ticket. The caller must drop it from memory too."""
        ticket.writer.revoke_from(ticket.first_id.offset)
        with self._cond:
            if self._pending and self._pending[-1] is ticket:
                self._pending.pop()

    def reopen(self) -> None:
        """Replace a failed writer by a new one on the same file, once its refused bytes are cut.

        The failed writer's pending tickets are dropped (they were refused); raises StorageError if
        the file cannot be cut yet (the disk is still failing).
        """
        old = self.writer
        assert old is not None and old.failed
        old.settle()
        old.close()
        self._advance()  # appends it made durable before failing
        with self._cond:
            self._pending = deque(t for t in self._pending if t.writer is not old)
            self._cond.notify_all()
        self.writer = WalWriter(old.path, policy=self._policy, interval_ms=self._interval_ms)

    def rotate(self, new_gen: int, marker: WalRecord | None) -> None:
        """Append `marker` (a flush record) to the current file, close it durably, start `new_gen`.

        If the old file cannot be made durable, the channel keeps it (now failed) and StorageError
        is raised: the checkpoint must not cover writes that were refused.
        """
        assert self.writer is not None
        old = self.writer
        if marker is not None:
            old.append_many([marker])
        new = WalWriter(wal_file(self.directory, new_gen), policy=self._policy, interval_ms=self._interval_ms)
        old.close()  # fsyncs everything it holds: every pending write on it is durable now
        if old.failed:
            new.close()
            new.path.unlink(missing_ok=True)
            raise StorageError(f"channel {self.name}: cannot rotate the WAL, {old.path} was not made durable")
        self.writer = new
        self._advance()

    def truncate_before(self, gen: int) -> None:
        """Delete WAL files wholly covered by a flushed checkpoint (generations < gen)."""
        for g in wal_gens(self.directory):
            if g < gen:
                wal_file(self.directory, g).unlink(missing_ok=True)

    def close(self, *, tick: bool) -> None:
        """Log a final time tick (unless failed), close the writer durably. A failed writer's file is cut."""
        writer = self.writer
        if writer is None:
            return
        if writer.failed:
            try:
                writer.settle()
            except StorageError as e:
                log.error("channel %s: closing with refused writes still in %s: %s", self.name, writer.path, e)
        elif tick:
            try:
                writer.append_many([WalRecord(Op.TIME_TICK.value, self.tick(), [])])
            except StorageError as e:  # only a marker: recovery does not need it
                log.warning("channel %s: closing without a final time tick: %s", self.name, e)
        writer.close()
        self.writer = None
        self._advance()

    # ------------------------------------------------------------------------------------ reading

    def tick(self) -> int:
        """Advance the serviceable timestamp to a fresh TSO timestamp if no write is in flight."""
        with self.lock:
            self._advance()
            with self._cond:
                if not self._pending:
                    self.serviceable_ts = max(self.serviceable_ts, self._tso.next())
                    self._cond.notify_all()
                return self.serviceable_ts

    def wait_serviceable(self, ts: int, deadline: float) -> int:
        """Block until the serviceable timestamp reaches `ts`; raise ConsistencyTimeout at `deadline`."""
        while True:
            if self.serviceable_ts >= ts:
                return self.serviceable_ts
            if self.failed:
                raise StorageError(f"channel {self.name}: a write failed to become durable; recover, then read")
            if self.tick() >= ts:
                return self.serviceable_ts
            with self._cond:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConsistencyTimeout(
                        f"channel {self.name}: serviceable timestamp {self.serviceable_ts} did not reach the "
                        f"guarantee timestamp {ts} in time; retry, or read with a weaker consistency level"
                    )
                if self.serviceable_ts < ts:
                    self._cond.wait(min(remaining, 0.05))


def route(pk: Any, shards_num: int) -> int:
    """Stable channel of a primary key (the same in every process and run)."""
    if shards_num == 1:
        return 0
    return zlib.crc32(str(pk).encode()) % shards_num

