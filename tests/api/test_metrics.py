"""`GET /metrics`: Prometheus series of the API and of every live worker (from its heartbeat)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from common.runtime import Core
from tests.worker.helpers import running_worker, wait_for_status
from worker.metrics import Histogram, WorkerMetrics

API = "/api/v1"
TEXT = "# Bees\n\n" + "Bees dance to tell the hive where the flowers are. " * 30 + "\n"
SCRAPE_TIMEOUT_S = 30.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def _find(samples: Samples, name: str, **labels: str) -> list[float]:
    wanted = set(labels.items())
    return [v for (n, ls), v in samples.items() if n == name and wanted <= ls]


async def test_metrics_have_api_and_worker_series_after_a_task(client: httpx.AsyncClient,
                                                               anon_client: httpx.AsyncClient,
                                                               core: Core, vectors: Any) -> None:
    assert (await client.post(f"{API}/kbs", json={"name": "docs"})).status_code == 201
    upload = await client.post(f"{API}/kbs/docs/documents", files=[("files", ("bees.md", TEXT.encode()))])
    task_id = upload.json()["documents"][0]["task_id"]
    async with running_worker(core, vectors) as worker:
        assert (await wait_for_status(core, task_id, timeout_s=30)).status == "done"
        async with asyncio.timeout(SCRAPE_TIMEOUT_S):  # until the next heartbeat carries the outcome
            while True:
                response = await anon_client.get("/metrics")  # no key needed
                assert response.status_code == 200
                samples = _samples(response.text)
                if _find(samples, "docvec_worker_tasks_total", worker=worker.consumer, outcome="done"):
                    break
                await asyncio.sleep(0.1)

    assert response.headers["content-type"].startswith("text/plain")
    w = worker.consumer
    assert _find(samples, "docvec_worker_tasks_total", worker=w, outcome="done") == [1.0]
    for stage in ("fetch", "parse", "chunk", "embed", "index"):
        assert _find(samples, "docvec_worker_stage_duration_seconds_count", worker=w, stage=stage) == [1.0], stage
        assert _find(samples, "docvec_worker_stage_duration_seconds_bucket", worker=w, stage=stage, le="+Inf") == [1.0]
    assert _find(samples, "docvec_worker_queue_lag_seconds_count", worker=w) == [1.0]
    assert _find(samples, "docvec_worker_embedded_chunks_total", worker=w)[0] > 0
    assert _find(samples, "docvec_worker_embed_chunks_per_second", worker=w)[0] > 0
    assert _find(samples, "docvec_worker_slots", worker=w) == [float(core.settings.worker.max_concurrent_tasks)]

    assert _find(samples, "docvec_api_requests_total", method="POST", route="/api/v1/kbs", status="201") == [1.0]
    assert _find(samples, "docvec_api_requests_total", method="POST", route="/api/v1/kbs/{kb}/documents",
                 status="202") == [1.0]
    assert _find(samples, "docvec_api_request_duration_seconds_count", method="POST", route="/api/v1/kbs") == [1.0]
    assert _find(samples, "docvec_tasks", state="done") == [1.0]
    assert _find(samples, "docvec_stream_length", stream=core.keys.stream_normal) == [0.0]


async def test_unknown_paths_share_one_label(anon_client: httpx.AsyncClient) -> None:
    for n in range(3):
        assert (await anon_client.get(f"/no/such/path/{n}")).status_code == 404
    samples = _samples((await anon_client.get("/metrics")).text)
    assert _find(samples, "docvec_api_requests_total", route="unmatched", status="404") == [3.0]
    assert not [ls for (n, ls) in samples if n == "docvec_api_requests_total" and ("route", "/no/such/path/0") in ls]


async def test_stopped_workers_leave_the_metrics(client: httpx.AsyncClient, core: Core, vectors: Any) -> None:
    async with running_worker(core, vectors) as worker:
        async with asyncio.timeout(10):  # a running worker shows up once its first heartbeat is in
            while not _find(during := _samples((await client.get("/metrics")).text),
                            "docvec_worker_heartbeat_age_seconds", worker=worker.consumer):
                await asyncio.sleep(0.02)
    after = _samples((await client.get("/metrics")).text)
    assert _find(during, "docvec_worker_heartbeat_age_seconds", worker=worker.consumer)
    assert not _find(after, "docvec_worker_heartbeat_age_seconds", worker=worker.consumer)


def test_worker_histogram_buckets_are_upper_bounds() -> None:
    histogram = Histogram((1.0, 2.0))
    for value in (0.5, 1.0, 1.5, 3.0):
        histogram.observe(value)
    assert histogram.counts == [2, 1, 1] and histogram.count == 4 and histogram.sum == 6.0


def test_worker_queue_lag_comes_from_the_entry_id() -> None:
    metrics = WorkerMetrics()
    metrics.observe_queue_lag("1000000-0", now_s=1002.5)
    metrics.observe_queue_lag("not-an-id", now_s=1002.5)
    assert metrics.last_queue_lag_s == 2.5 and metrics.queue_lag.count == 1
