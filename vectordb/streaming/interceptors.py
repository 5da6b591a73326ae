"""The interceptor chain every append goes through, in this order:

lock -> time tick (MVCC timestamp) -> segment assignment -> transaction -> append + apply.

Each interceptor is a small object with one method, `intercept(ctx, call_next)`; `compose` nests
them around the terminal step. Because the timestamp is taken under the lock and the append and
apply happen under it too, a channel's writes are totally ordered by timestamp, in the file and in
memory alike.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from vectordb.streaming.channel import AppendTicket, Channel
from vectordb.tso import TimestampOracle
from vectordb.wal import Op, WalRecord


@dataclass(slots=True)
class AppendContext:
    """One write on its way into a channel: messages to log, then filled in by the interceptors."""

    channel: Channel
    messages: list[WalRecord]
    ts: int = 0
    segment_id: int | None = None
    ticket: AppendTicket | None = None
    trace: list[str] = field(default_factory=list)  # interceptor names, in the order they ran


Next = Callable[[AppendContext], None]


class Interceptor(Protocol):
    def intercept(self, ctx: AppendContext, call_next: Next) -> None: ...


def compose(interceptors: Sequence[Interceptor], terminal: Next) -> Next:
    """`interceptors[0]` runs first and wraps everything after it."""
    call = terminal
    for icpt in reversed(interceptors):
        call = _bind(icpt, call)
    return call


def _bind(icpt: Interceptor, call_next: Next) -> Next:
    return lambda ctx: icpt.intercept(ctx, call_next)


class LockInterceptor:
    """Serialises appends (and the in-memory apply) under the collection's write lock."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock

    def intercept(self, ctx: AppendContext, call_next: Next) -> None:
        ctx.trace.append("lock")
        with self._lock:
            call_next(ctx)


class TimeTickInterceptor:
    """Stamps every message of the write with one fresh TSO timestamp (its MVCC version)."""

    def __init__(self, tso: TimestampOracle) -> None:
        self._tso = tso

    def intercept(self, ctx: AppendContext, call_next: Next) -> None:
        ctx.trace.append("timetick")
        ctx.ts = self._tso.next()
        ctx.messages = [dataclasses.replace(m, ts=ctx.ts) for m in ctx.messages]
        call_next(ctx)


class SegmentAssignInterceptor:
    """Picks the growing segment that receives the write's inserted rows."""

    def __init__(self, growing_segment_id: Callable[[], int]) -> None:
        self._growing_segment_id = growing_segment_id

    def intercept(self, ctx: AppendContext, call_next: Next) -> None:
        ctx.trace.append("segment")
        if any(m.op == Op.INSERT.value for m in ctx.messages):
            ctx.segment_id = self._growing_segment_id()
        call_next(ctx)


class TxnInterceptor:
    """Wraps a multi-message write in txn begin / ops / commit, so recovery applies all or none."""

    def intercept(self, ctx: AppendContext, call_next: Next) -> None:
        ctx.trace.append("txn")
        if len(ctx.messages) > 1:
            txn_id = ctx.ts  # unique: one timestamp per write
            ops = [dataclasses.replace(m, txn_id=txn_id) for m in ctx.messages]
            ctx.messages = [
                WalRecord(Op.TXN_BEGIN.value, ctx.ts, [], txn_id=txn_id),
                *ops,
                WalRecord(Op.TXN_COMMIT.value, ctx.ts, [], txn_id=txn_id),
            ]
        call_next(ctx)
