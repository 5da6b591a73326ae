"""Streaming: per-shard-channel WALs, the append interceptor chain, time ticks and consistency,
transactions, scanners with deliver policies, and recovery by replay from the flush checkpoint."""

from vectordb.streaming.channel import AppendTicket, Channel, route
from vectordb.streaming.consistency import ConsistencyLevel, Session, guarantee_ts
from vectordb.streaming.interceptors import (
    AppendContext,
    Interceptor,
    LockInterceptor,
    SegmentAssignInterceptor,
    TimeTickInterceptor,
    TxnInterceptor,
    compose,
)
from vectordb.streaming.options import StreamingOptions
from vectordb.streaming.scanner import DeliverAfterTs, DeliverAll, DeliverFromId, DeliverLatest, DeliverPolicy

__all__ = [
    "AppendContext",
    "AppendTicket",
    "Channel",
    "ConsistencyLevel",
    "DeliverAfterTs",
    "DeliverAll",
    "DeliverFromId",
    "DeliverLatest",
    "DeliverPolicy",
    "Interceptor",
    "LockInterceptor",
    "SegmentAssignInterceptor",
    "Session",
    "StreamingOptions",
    "TimeTickInterceptor",
    "TxnInterceptor",
    "compose",
    "guarantee_ts",
    "route",
]
