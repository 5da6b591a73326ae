"""Per-collection rate limits for the proxy: token buckets for DML rows and DQL requests.

Like Milvus's proxy, a request over the limit is refused at once with `RateLimited` (a transient
error: retry later) instead of queueing without bound.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from common.errors import TransientError


class RateLimited(TransientError):
    code = "rate_limited"
    http_status = 429


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by (kind, collection). A rate of 0 means unlimited; the burst is one
    second's worth of tokens."""

    def __init__(self, rates_per_s: dict[str, float]) -> None:
        self._rates = {kind: rate for kind, rate in rates_per_s.items() if rate > 0}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, kind: str, collection: str, cost: float) -> None:
        rate = self._rates.get(kind)
        if rate is None:
            return
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.setdefault((kind, collection), _Bucket(tokens=rate, updated=now))
            bucket.tokens = min(rate, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if cost > bucket.tokens and bucket.tokens < rate:  # a request larger than the burst waits for a full bucket
                raise RateLimited(
                    f"collection {collection!r}: {kind} rate limit of {rate:g}/s exceeded; retry later"
                )
            bucket.tokens -= cost
