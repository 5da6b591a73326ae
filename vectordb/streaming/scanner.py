"""Scanners: read one channel's WAL from a position chosen by a deliver policy.

Used by recovery (replay from the flush checkpoint recorded in the catalog) and usable by a
replication consumer. A scanner reads the files present when it reaches them and stops at the
first torn or corrupt record (repairing it only when asked, i.e. during recovery).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vectordb.wal import MessageId, WalRecord, read_frames


@dataclass(frozen=True, slots=True)
class DeliverAll:
    """Every message still on disk."""


@dataclass(frozen=True, slots=True)
class DeliverFromId:
    """Messages at or after `message_id`."""

    message_id: MessageId


@dataclass(frozen=True, slots=True)
class DeliverAfterTs:
    """Messages with a timestamp strictly greater than `ts`."""

    ts: int


@dataclass(frozen=True, slots=True)
class DeliverLatest:
    """Only the last message of the channel (nothing if it is empty)."""


DeliverPolicy = DeliverAll | DeliverFromId | DeliverAfterTs | DeliverLatest


def wal_file(directory: Path, gen: int) -> Path:
    return directory / f"{gen:012d}.log"


def wal_gens(directory: Path) -> list[int]:
    """Generations of the WAL files in `directory`, oldest first."""
    return sorted(int(p.stem) for p in directory.glob("*.log") if p.stem.isdigit())


def scan(directory: Path, policy: DeliverPolicy, *, repair: bool = False) -> Iterator[tuple[MessageId, WalRecord]]:
    """Yield `(message id, message)` of the channel whose WAL files live in `directory`."""
    if isinstance(policy, DeliverLatest):
        last = None
        for item in scan(directory, DeliverAll(), repair=repair):
            last = item
        if last is not None:
            yield last
        return
    start = policy.message_id if isinstance(policy, DeliverFromId) else MessageId(-1, 0)
    for gen in wal_gens(directory):
        if gen < start.gen:
            continue
        for offset, rec in read_frames(wal_file(directory, gen), repair=repair):
            mid = MessageId(gen, offset)
            if mid < start or (isinstance(policy, DeliverAfterTs) and rec.ts <= policy.ts):
                continue
            yield mid, rec
