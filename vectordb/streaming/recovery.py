"""Recovery: replay every channel from the flush checkpoint, applying only committed transactions."""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterable, Iterator, Sequence

from vectordb.streaming.channel import Channel
from vectordb.streaming.scanner import DeliverFromId
from vectordb.wal import MessageId, Op, WalRecord

log = logging.getLogger(__name__)


def committed(messages: Iterable[tuple[MessageId, WalRecord]]) -> Iterator[WalRecord]:
    """The messages that take effect: plain ones as they come, a transaction's ops at its commit.

    A transaction rolled back, or without a commit record (a crash mid-append), yields nothing.
    """
    open_txns: dict[int, list[WalRecord]] = {}
    for mid, rec in messages:
        if rec.op == Op.TXN_BEGIN.value:
            open_txns[rec.txn_id] = []
        elif rec.op == Op.TXN_COMMIT.value:
            yield from open_txns.pop(rec.txn_id, [])
        elif rec.op == Op.TXN_ROLLBACK.value:
            open_txns.pop(rec.txn_id, None)
            log.info("WAL message %s: transaction %d rolled back", mid, rec.txn_id)
        elif rec.txn_id:
            open_txns.setdefault(rec.txn_id, []).append(rec)
        else:
            yield rec
    for txn_id, ops in open_txns.items():
        log.warning(
            "dropping transaction %d (%d ops) without a commit record: it was never acknowledged", txn_id, len(ops)
        )


def replay(channels: Sequence[Channel], checkpoint_gen: int, *, repair: bool = True) -> Iterator[WalRecord]:
    """Committed messages of every channel after the checkpoint, merged in timestamp order.

    With `repair` (opening a collection), reading repairs damage: it cuts torn tails and moves
    mid-file corruption to `.corrupt`; without it (rebuilding a live collection) it only reads.
    """
    start = DeliverFromId(MessageId(checkpoint_gen, 0))
    streams = [committed(ch.scan(start, repair=repair)) for ch in channels]
    return heapq.merge(*streams, key=lambda rec: rec.ts)
