"""A collection's live state and its write path: segments, primary-key map, shard channels, recovery.

`vectordb.collection.Collection` is the class the engine uses; it adds reads, flush, index rebuilds
and the compaction swap to what this module keeps.

Writes: rows are routed to `shards_num` channels by a stable hash of the primary key; each channel
has its own WAL (`wal/ch<k>/<gen>.log`). A write goes through the interceptor chain (lock -> MVCC
timestamp -> segment assignment -> txn) and is applied in memory under `lock`; the caller waits
for durability (fsync policy) outside the lock, so concurrent writers can share one fsync; only
then does the channel's serviceable timestamp cover it. An upsert that replaces rows is one
transaction per channel (delete old versions + insert new ones).

Recovery replays each channel from the catalog's checkpoint (`wal_gen`), applying transactions only
if their commit record is present; replay is idempotent (a primary key logged twice is one row, the
later one).

Storage failures: a write is applied in memory before it is durable, so when its WAL append is
refused after the fact (an fsync failed, or a write spanning channels failed on a later one), memory
holds writes the log does not. The channel's writer has already cut them off the file; the next
request (or the engine's maintenance loop) then rebuilds the collection in place from what is
durable: sealed segments with their persisted deletes, plus a replay of the WAL from the
checkpoint, and reopens the failed channels. No restart is needed once the disk works again.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from vectordb.catalog import Catalog, CollectionMeta
from vectordb.errors import CollectionNotFound, DuplicatePrimaryKey, InvalidRequest, StorageError
from vectordb.evaluation import FilterBudget, evaluate
from vectordb.expr import Expr
from vectordb.fsutil import atomic_write_bytes
from vectordb.schema import CollectionSchema, RowBatch
from vectordb.search import VisibilityCache
from vectordb.segment import GrowingSegment, SealedSegment, Segment, SegmentView
from vectordb.streaming.channel import AppendTicket, Channel, route
from vectordb.streaming.consistency import Session
from vectordb.streaming.interceptors import (
    AppendContext,
    LockInterceptor,
    SegmentAssignInterceptor,
    TimeTickInterceptor,
    TxnInterceptor,
    compose,
)
from vectordb.streaming.options import StreamingOptions
from vectordb.streaming.recovery import replay
from vectordb.streaming.scanner import DeliverPolicy, wal_gens
from vectordb.tso import MAX_TIMESTAMP, TimestampOracle
from vectordb.wal import MessageId, Op, WalRecord, WalWriter, resolve_fsync_policy

log = logging.getLogger(__name__)

_STREAMING_FILE = "streaming.json"


def _migrate_single_wal(wal_dir: Path) -> None:
    """Move WAL files of the one-log-per-collection layout (`wal/<gen>.log`) to channel 0."""
    legacy = [p for p in wal_dir.glob("*.log") if p.stem.isdigit()]
    if legacy:
        (wal_dir / "ch0").mkdir(exist_ok=True)
        for p in legacy:
            p.rename(wal_dir / "ch0" / p.name)


class CollectionCore:
    """Live state of one collection, its WAL channels, writes and recovery; thread-safe. Use `Collection`."""

    def __init__(
        self,
        meta: CollectionMeta,
        directory: Path,
        tso: TimestampOracle,
        catalog: Catalog,
        *,
        fsync: bool = True,
        streaming: StreamingOptions | None = None,
        shards_num: int = 1,
    ) -> None:
        if shards_num < 1:
            raise InvalidRequest("shards_num must be at least 1")
        self.meta = meta
        self.directory = directory
        self._tso = tso
        self._catalog = catalog
        self.options = streaming or StreamingOptions(
            fsync_policy=resolve_fsync_policy(None, fsync)
        )
        self.lock = threading.RLock()
        self.flush_lock = threading.Lock()
        self._visibility = VisibilityCache()  # per-segment visibility summaries for searches
        self.segments: dict[int, Segment] = {}
        self.pk_map: dict[Any, tuple[int, int]] = {}
        self.growing = GrowingSegment(tso.next(), meta.schema)
        self.shards_num = shards_num
        self.channels = [
            Channel(
                i,
                directory / "wal" / f"ch{i}",
                tso,
                self.lock,
                policy=self.options.fsync_policy,
                interval_ms=self.options.fsync_interval_ms,
            )
            for i in range(shards_num)
        ]
        self._append = compose(
            [
                LockInterceptor(self.lock),
                TimeTickInterceptor(tso),
                SegmentAssignInterceptor(lambda: self.growing.id),
                TxnInterceptor(),
            ],
            self._append_and_apply,
        )
        self._closed = True
        self._stale = False  # memory holds a write that was revoked from the WAL: rebuild before use
        self._epoch = 0  # bumped by every rebuild: a flush that straddles one must not commit

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def schema(self) -> CollectionSchema:
        return self.meta.schema

    @property
    def name(self) -> str:
        return self.meta.name

    @property
    def wal(self) -> WalWriter | None:
        """Channel 0's current WAL writer; None once the collection is closed or dropped."""
        return None if self._closed else self.channels[0].writer

    def segment_dir(self, seg_id: int) -> Path:
        """Where segment `seg_id`'s files live."""
        return self.directory / "segments" / str(seg_id)

    @classmethod
    def create(
        cls,
        meta: CollectionMeta,
        directory: Path,
        tso: TimestampOracle,
        catalog: Catalog,
        *,
        fsync: bool = True,
        streaming: StreamingOptions | None = None,
        shards_num: int = 1,
    ) -> Self:
        (directory / "wal").mkdir(parents=True, exist_ok=True)
        (directory / "segments").mkdir(exist_ok=True)
        coll = cls(meta, directory, tso, catalog, fsync=fsync, streaming=streaming, shards_num=shards_num)
        atomic_write_bytes(directory / _STREAMING_FILE, json.dumps({"shards_num": shards_num}).encode())
        coll.segments[coll.growing.id] = coll.growing
        for ch in coll.channels:
            ch.open_writer(meta.wal_gen)
            ch.tick()
        coll._closed = False
        coll.record_ddl("create_collection", {"name": meta.name, "shards_num": shards_num})
        return coll

    @classmethod
    def open(
        cls,
        meta: CollectionMeta,
        directory: Path,
        tso: TimestampOracle,
        catalog: Catalog,
        *,
        fsync: bool = True,
        streaming: StreamingOptions | None = None,
    ) -> Self:
        """Load sealed segments, remove leftovers of interrupted flushes, replay every channel's WAL."""
        (directory / "wal").mkdir(parents=True, exist_ok=True)
        (directory / "segments").mkdir(exist_ok=True)
        _migrate_single_wal(directory / "wal")
        shards_file = directory / _STREAMING_FILE
        shards_num = int(json.loads(shards_file.read_text())["shards_num"]) if shards_file.exists() else 1
        coll = cls(meta, directory, tso, catalog, fsync=fsync, streaming=streaming, shards_num=shards_num)
        coll._remove_garbage()
        sealed = [
            SealedSegment.load(sm.id, meta.schema, coll.segment_dir(sm.id), meta.index, sm.deletes_file)
            for sm in meta.segments
        ]
        replayed = coll._restore(sealed, repair=True)
        if replayed:
            log.info("collection %s: replayed %d WAL messages", meta.name, replayed)
        gen = max([meta.wal_gen, *coll._wal_gens()])
        for ch in coll.channels:
            ch.open_writer(gen)
            ch.tick()
        coll._closed = False
        return coll

    def _restore(self, sealed: Sequence[SealedSegment], *, repair: bool) -> int:
        """Memory from what is durable: `sealed` (with their persisted deletes), a new growing
        segment, and the WAL replayed from the checkpoint. Returns the number of messages replayed.

        A primary key alive in two sealed segments (written by versions that did not collapse
        replayed duplicates) keeps its newest row; the older one is deleted (persisted by the next flush).
        """
        self.segments = {}
        self.pk_map = {}
        for seg in sorted(sealed, key=lambda s: s.id):
            seg.persisted_delete_version = seg.delete_version
            self.segments[seg.id] = seg
            for off in np.flatnonzero(seg.delete_ts[: seg.n] == MAX_TIMESTAMP).tolist():
                self._track(seg.pks[off], seg, off)
        self.growing = GrowingSegment(self._tso.next(), self.schema)
        self.segments[self.growing.id] = self.growing
        replayed = 0
        for rec in replay(self.channels, self.meta.wal_gen, repair=repair):
            self._apply(rec, None)
            replayed += 1
        return replayed

    def _track(self, pk: Any, seg: Segment, off: int) -> None:
        """Map `pk` to (seg, off); if it is mapped already, the older of the two rows is deleted."""
        loc = self.pk_map.get(pk)
        rows = [(seg, off)]
        if loc is not None:
            rows.append((self.segments[loc[0]], loc[1]))
            rows.sort(key=lambda row: int(row[0].insert_ts[row[1]]))
            (old_seg, old_off), (seg, off) = rows
            old_seg.mark_deleted(old_off, int(seg.insert_ts[off]))
        self.pk_map[pk] = (seg.id, off)

    # ----------------------------------------------------------------------------- storage failures

    @property
    def epoch(self) -> int:
        """Bumped by every rebuild after a storage failure: slow work begun before one must not commit."""
        return self._epoch

    @property
    def needs_recovery(self) -> bool:
        """Memory may hold writes the WAL refused: the next request rebuilds it (see `recover`)."""
        return self._stale or any(ch.failed for ch in self.channels)

    def recover(self) -> None:
        """Rebuild from what is durable if a storage failure left memory ahead of the log.

        Raises StorageError while the disk still refuses the cut of refused writes.
        """
        with self.lock:
            self._heal_locked()

    def _heal_locked(self) -> None:
        if self._closed or not self.needs_recovery:
            return
        for ch in self.channels:
            if ch.failed:
                ch.reopen()
        persisted = {sm.id: sm.deletes_file for sm in self.meta.segments}
        sealed = [s for s in self.segments.values() if isinstance(s, SealedSegment) and s.id in persisted]
        for seg in sealed:
            seg.reload_deletes(persisted[seg.id])
        try:
            replayed = self._restore(sealed, repair=False)
        except OSError as e:
            raise StorageError(f"collection {self.name!r}: cannot read its WAL to recover: {e}") from e
        self._stale = False
        self._epoch += 1
        for ch in self.channels:
            ch.tick()
        log.warning(
            "collection %s: recovered from a storage failure; rebuilt from %d sealed segments and %d WAL messages",
            self.name, len(sealed), replayed,
        )

    def _wal_gens(self) -> list[int]:
        """WAL generations on disk in any channel, oldest first."""
        return sorted({g for ch in self.channels for g in wal_gens(ch.directory)})

    def _remove_garbage(self) -> None:
        keep_segments = {str(s.id): s for s in self.meta.segments}
        for p in (self.directory / "segments").iterdir():
            sm = keep_segments.get(p.name)
            if sm is None:
                shutil.rmtree(p)
                continue
            for f in p.glob("deletes-*.npy"):
                if f.name != sm.deletes_file:
                    f.unlink()
        # WAL generations below the catalog's checkpoint are flushed (a crash after the commit).
        for ch in self.channels:
            ch.truncate_before(self.meta.wal_gen)

    def close(self) -> None:
        """Log a final time tick, make every channel's WAL durable and close it. Idempotent."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            for ch in self.channels:
                ch.close(tick=True)

    def scan(self, channel: int, policy: DeliverPolicy) -> Iterator[tuple[MessageId, WalRecord]]:
        """Messages of shard channel `channel` still on disk, from where `policy` says (read-only)."""
        if not 0 <= channel < self.shards_num:
            raise InvalidRequest(f"channel must be in [0, {self.shards_num}), got {channel}")
        return self.channels[channel].scan(policy)

    def record_ddl(self, kind: str, info: Mapping[str, Any] | None = None) -> None:
        """Log a DDL fact (create collection/partition/index...) on channel 0; replay ignores it."""
        msg = WalRecord(Op.DDL.value, 0, [], info={"kind": kind, **(info or {})})
        self._await(self._append_parts({0: [msg]}), None)

    # ---------------------------------------------------------------------------------------- writes

    def insert(self, batch: RowBatch, *, session: Session | None = None) -> list[Any]:
        """Insert rows whose primary keys must all be new; return once durable (fsync policy)."""
        seen: set[Any] = set()
        for pk in batch.pks:
            if pk in seen:
                raise DuplicatePrimaryKey(f"primary key {pk!r} appears twice in one insert")
            seen.add(pk)
        with self.lock:
            taken = [pk for pk in batch.pks if pk in self.pk_map]
            if taken:
                raise DuplicatePrimaryKey(
                    f"primary key(s) {taken[:5]!r} already exist in {self.name!r}; use upsert to replace rows"
                )
            tickets = self._append_parts(
                {ch: [WalRecord(Op.INSERT.value, 0, part.pks, part)] for ch, part in self._split(batch).items()}
            )
        self._await(tickets, session)
        return list(batch.pks)

    def upsert(self, batch: RowBatch, *, session: Session | None = None) -> list[Any]:
        """Insert rows, replacing any live row with the same primary key (last one in the batch wins).

        Per channel, replacing rows is one transaction: delete of the old versions + insert.
        """
        last = {pk: i for i, pk in enumerate(batch.pks)}
        if len(last) < len(batch):
            batch = batch.select(sorted(last.values()))
        with self.lock:
            parts: dict[int, list[WalRecord]] = {}
            for ch, part in self._split(batch).items():
                old = [pk for pk in part.pks if pk in self.pk_map]
                msgs = [WalRecord(Op.DELETE.value, 0, old)] if old else []
                parts[ch] = [*msgs, WalRecord(Op.INSERT.value, 0, part.pks, part)]
            tickets = self._append_parts(parts)
        self._await(tickets, session)
        return list(batch.pks)

    def delete_pks(self, pks: Sequence[Any], *, session: Session | None = None) -> int:
        with self.lock:
            present = [pk for pk in dict.fromkeys(pks) if pk in self.pk_map]
            by_channel: dict[int, list[Any]] = {}
            for pk in present:
                by_channel.setdefault(route(pk, self.shards_num), []).append(pk)
            tickets = self._append_parts(
                {ch: [WalRecord(Op.DELETE.value, 0, part)] for ch, part in by_channel.items()}
            )
        self._await(tickets, session)
        return len(present)

    def delete_where(self, expr: Expr, *, session: Session | None = None) -> int:
        with self.lock:  # re-entrant: match and delete see one state
            ts, views = self.snapshot()
            budget = FilterBudget.for_rows(expr, sum(view.n for view in views))
            pks = [view.segment.pks[off] for view in views for off in self._matching(view, ts, expr, budget)]
            return self.delete_pks(pks, session=session)

    def _split(self, batch: RowBatch) -> dict[int, RowBatch]:
        if self.shards_num == 1:
            return {0: batch}
        positions: dict[int, list[int]] = {}
        for i, pk in enumerate(batch.pks):
            positions.setdefault(route(pk, self.shards_num), []).append(i)
        return {ch: batch.select(pos) for ch, pos in sorted(positions.items())}

    def _append_parts(self, parts: Mapping[int, list[WalRecord]]) -> list[tuple[Channel, AppendTicket]]:
        """Run each channel's messages through the interceptor chain (logged and applied, not yet durable)."""
        tickets: list[tuple[Channel, AppendTicket]] = []
        with self.lock:
            if self._closed:
                raise CollectionNotFound(f"collection {self.name!r} was dropped or the engine closed")
            self._heal_locked()
            for ch, messages in parts.items():
                ctx = AppendContext(self.channels[ch], messages)
                try:
                    self._append(ctx)
                except BaseException:
                    if ctx.ticket is not None:  # logged, then applying it failed
                        tickets.append((ctx.channel, ctx.ticket))
                    self._revoke(tickets)
                    raise
                assert ctx.ticket is not None
                tickets.append((ctx.channel, ctx.ticket))
        return tickets

    def _revoke(self, tickets: list[tuple[Channel, AppendTicket]]) -> None:
        """A write failed part-way: take back what it logged on other channels; memory is rebuilt."""
        for channel, ticket in tickets:
            channel.revoke(ticket)
        if tickets:
            self._stale = True

    def _append_and_apply(self, ctx: AppendContext) -> None:
        """The chain's last step, under the lock: one write to the channel's WAL, then apply."""
        ctx.ticket = ctx.channel.append(ctx.messages, ctx.ts)
        for rec in ctx.messages:
            self._apply(rec, ctx.segment_id)

    def _await(self, tickets: list[tuple[Channel, AppendTicket]], session: Session | None) -> None:
        """Wait (outside the lock) until the writes are durable; then they count as acknowledged."""
        for channel, ticket in tickets:
            channel.wait_durable(ticket)
            if session is not None:
                session.observe(ticket.ts)

    def _apply(self, rec: WalRecord, segment_id: int | None) -> None:
        if rec.op in (Op.DELETE.value, Op.UPSERT.value):
            for pk in rec.pks:
                loc = self.pk_map.pop(pk, None)
                if loc is not None:
                    self.segments[loc[0]].mark_deleted(loc[1], rec.ts)
        if rec.op in (Op.INSERT.value, Op.UPSERT.value):
            assert rec.batch is not None
            target = self.segments[segment_id] if segment_id is not None else self.growing
            assert isinstance(target, GrowingSegment)
            start = target.append(rec.batch, rec.ts)
            for i, pk in enumerate(rec.batch.pks):
                # Live inserts never find their key taken (insert refuses, upsert logs the delete);
                # replay can (a write logged twice): the later row wins, so a key is one row.
                old = self.pk_map.get(pk)
                if old is not None:
                    self.segments[old[0]].mark_deleted(old[1], rec.ts)
                self.pk_map[pk] = (target.id, start + i)

    # ----------------------------------------------------------------------------------------- reads

    def snapshot(self, read_ts: int | None = None) -> tuple[int, list[SegmentView]]:
        """Views of every segment and the timestamp to read them at.

        Without `read_ts`, a fresh timestamp that sees every applied write, durable or not: for
        writers (delete by filter) only; readers pass the timestamp `read_ts()` gave them.
        """
        with self.lock:
            self._heal_locked()
            ts = self._tso.next() if read_ts is None else read_ts
            return ts, [s.view() for s in self.segments.values() if s.n]

    @staticmethod
    def _matching(view: SegmentView, ts: int, expr: Expr | None, budget: FilterBudget) -> np.ndarray:
        mask = view.visible(ts)
        if expr is not None and mask.any():
            mask &= evaluate(expr, view, budget)
        return np.flatnonzero(mask)
