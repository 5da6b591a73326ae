"""Proxy: per-collection rate limits and per-phase latency metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vectordb.engine import Engine
from vectordb.proxy import ProxyLimits
from vectordb.ratelimit import RateLimited, RateLimiter

from .conftest import make_rows, make_schema


def test_dml_rows_and_dql_requests_are_limited_per_collection(tmp_path: Path) -> None:
    limits = ProxyLimits(dml_rows_per_s=20, dql_requests_per_s=3)
    with Engine.open(tmp_path / "v", fsync=False, limits=limits) as engine:
        for name in ("a", "b"):
            engine.create_collection(name, make_schema(4))
        engine.insert("a", make_rows(np.ones((15, 4)), start=0))
        with pytest.raises(RateLimited, match="'a': dml rate limit of 20/s"):
            engine.insert("a", make_rows(np.ones((15, 4)), start=100))
        engine.insert("b", make_rows(np.ones((15, 4)), start=0))  # another collection has its own bucket
        for _ in range(3):
            engine.search("a", [[1.0] * 4], limit=1)
        with pytest.raises(RateLimited) as info:
            engine.search("a", [[1.0] * 4], limit=1)
        assert info.value.http_status == 429 and info.value.code == "rate_limited"


def test_rate_limiter_refills_and_admits_one_oversized_request() -> None:
    limiter = RateLimiter({"dml": 10})
    limiter.acquire("dml", "c", 50)  # larger than the burst: admitted on a full bucket, then in debt
    with pytest.raises(RateLimited):
        limiter.acquire("dml", "c", 1)
    RateLimiter({"dml": 0}).acquire("dml", "c", 10**9)  # 0 = unlimited


def test_metrics_record_every_phase_per_task_type(tmp_path: Path) -> None:
    with Engine.open(tmp_path / "v", fsync=False) as engine:
        engine.create_collection("c", make_schema(4))
        engine.insert("c", make_rows(np.eye(4), start=0))
        engine.search("c", [[1.0, 0, 0, 0]], limit=2)
        engine.search("c", [[0, 1.0, 0, 0]], limit=2)
        metrics = engine.metrics()
    search = metrics["SearchTask"] if "SearchTask" in metrics else metrics["PartitionedSearchTask"]
    assert set(search) == {"queue", "pre_execute", "execute", "post_execute", "total"}
    assert search["execute"]["count"] == 2
    assert search["total"]["max_s"] >= search["execute"]["max_s"] > 0
    assert metrics["InsertTask"]["total"]["count"] == 1
