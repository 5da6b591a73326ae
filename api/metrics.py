"""Prometheus metrics: the API's own (requests, latency) and the fleet's (workers, streams, tasks).

`ApiMetrics` holds one `CollectorRegistry` per app (built in `create_app`, kept on `app.state`), fed by
`MetricsMiddleware`. Worker metrics live in the workers (`worker/metrics.py`) and reach the API in their
heartbeat records; `render()` reads those records, the task streams and the task counts at scrape
time and exposes them through a one-off collector, so every scrape shows the fleet as it is now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import peewee
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from redis import exceptions as redis_errors
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.runtime import Core

log = logging.getLogger(__name__)

REQUEST_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED_ROUTE = "unmatched"
MAX_WORKERS_SCRAPED = 10_000
REDIS_ERRORS = (redis_errors.RedisError, OSError)


class ApiMetrics:
    """Request counters and a latency histogram of one app, in their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("docvec_api_requests", "HTTP requests handled, by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("docvec_api_request_duration_seconds",
                                 "Time from request to the start of the response, by route template",
                                 ["method", "route"], buckets=REQUEST_BUCKETS_S, registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


class MetricsMiddleware:
    """Counts every HTTP request by method, route template (never the raw path: bounded label values)
    and status; latency runs to the start of the response, so a long event stream counts as fast."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        first_byte_s: float | None = None

        async def send_wrapper(message: Message) -> None:
            nonlocal status, first_byte_s
            if message["type"] == "http.response.start":
                status = int(message["status"])
                first_byte_s = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            template = route_template(scope)
            elapsed_s = first_byte_s if first_byte_s is not None else time.perf_counter() - started
            self.metrics.observe(scope.get("method", "GET"), template, status, elapsed_s)


def route_template(scope: Scope) -> str:
    """The matched route's full path template (`/api/v1/kbs/{kb}`), or `unmatched`.

    The route object knows its template without the prefix of the router that included it; the prefix is
    what the request path has in front of the route's own path filled with the request's parameters.
    """
    route = scope.get("route")
    own = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(own, str):
        return UNMATCHED_ROUTE
    try:
        concrete = own.format_map({k: str(v) for k, v in (scope.get("path_params") or {}).items()})
    except (KeyError, ValueError, IndexError):
        return own
    path = str(scope.get("path", ""))
    return path[: len(path) - len(concrete)] + own if path.endswith(concrete) else own


# --------------------------------------------------------------------------------------------- fleet


@dataclass(frozen=True, slots=True)
class StreamInfo:
    name: str
    length: int
    pending: int
    lag: int | None


@dataclass(frozen=True, slots=True)
class FleetReading:
    """What one scrape read: worker heartbeat records, streams and task counts (each may be missing
    when its source is down; the scrape still succeeds)."""

    workers: dict[str, tuple[float, dict[str, Any]]]
    streams: list[StreamInfo]
    dead_letter_length: int | None
    task_counts: dict[str, int]
    now_s: float


async def read_fleet(core: Core) -> FleetReading:
    workers: dict[str, tuple[float, dict[str, Any]]] = {}
    streams: list[StreamInfo] = []
    dead: int | None = None
    counts: dict[str, int] = {}
    now_s = time.time()
    redis, keys = core.redis, core.keys
    try:
        seconds, micros = await redis.time()
        now_s = float(seconds) + float(micros) / 1e6  # the clock heartbeats are scored with
        beats = cast(list[tuple[str, float]], await redis.zrange(
            keys.workers, 0, MAX_WORKERS_SCRAPED - 1, desc=True, withscores=True))
        if beats:
            raws = cast(list[str | None], await redis.mget([keys.worker(str(name)) for name, _ in beats]))
            for (name, score), raw in zip(beats, raws, strict=True):
                workers[str(name)] = (float(score), _record(raw))
        for stream in keys.streams:
            streams.append(await _stream_info(core, stream))
        dead = int(await redis.xlen(keys.dead_letter))
    except REDIS_ERRORS as exc:
        log.warning("metrics: Redis unavailable, fleet series left out: %r", exc)
    try:
        counts = await asyncio.to_thread(core.repo.tasks.counts)
    except peewee.PeeweeException as exc:
        log.warning("metrics: database unavailable, task counts left out: %r", exc)
    return FleetReading(workers=workers, streams=streams, dead_letter_length=dead, task_counts=counts, now_s=now_s)


def _record(raw: str | None) -> dict[str, Any]:
    if raw is None:
        return {}
    try:
        record = json.loads(raw)
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


async def _stream_info(core: Core, stream: str) -> StreamInfo:
    length = int(await core.redis.xlen(stream))
    pending, lag = 0, None
    try:
        groups = await core.redis.xinfo_groups(stream)
    except redis_errors.ResponseError:  # no such stream yet
        groups = []
    for group in groups:
        if str(group.get("name")) == core.keys.group:
            pending = int(group.get("pending") or 0)
            lag = int(group["lag"]) if isinstance(group.get("lag"), int) else None
    return StreamInfo(name=stream, length=length, pending=pending, lag=lag)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _histogram(family: HistogramMetricFamily, labels: list[str], data: Any) -> None:
    """Add a worker-side histogram (`worker.metrics.Histogram.to_dict()`) to `family`."""
    if not isinstance(data, dict):
        return
    bounds, counts = data.get("bounds"), data.get("counts")
    if not isinstance(bounds, list) or not isinstance(counts, list) or len(counts) != len(bounds) + 1:
        return
    cumulative, buckets = 0.0, []
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        cumulative += _num(count) or 0.0
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), cumulative))
    family.add_metric(labels, buckets, _num(data.get("sum")) or 0.0)


class FleetCollector(Collector):
    """Renders one `FleetReading` (worker series carry a `worker` label)."""

    def __init__(self, reading: FleetReading) -> None:
        self._reading = reading

    def collect(self) -> Iterable[Metric]:
        yield from self._workers()
        yield from self._streams()
        tasks = GaugeMetricFamily("docvec_tasks", "Tasks by state (database)", labels=["state"])
        for state, n in sorted(self._reading.task_counts.items()):
            tasks.add_metric([state], n)
        yield tasks

    def _streams(self) -> Iterator[Metric]:
        length = GaugeMetricFamily("docvec_stream_length", "Entries in a task stream (tasks not finished)",
                                   labels=["stream"])
        pending = GaugeMetricFamily("docvec_stream_pending", "Entries delivered to a worker and not acked",
                                    labels=["stream"])
        lag = GaugeMetricFamily("docvec_stream_lag", "Entries not yet delivered to any worker", labels=["stream"])
        for s in self._reading.streams:
            length.add_metric([s.name], s.length)
            pending.add_metric([s.name], s.pending)
            if s.lag is not None:
                lag.add_metric([s.name], s.lag)
        yield from (length, pending, lag)
        if self._reading.dead_letter_length is not None:
            yield GaugeMetricFamily("docvec_dead_letter_length", "Entries in the dead-letter stream",
                                    value=self._reading.dead_letter_length)

    def _workers(self) -> Iterator[Metric]:
        w = ["worker"]
        age = GaugeMetricFamily("docvec_worker_heartbeat_age_seconds", "Seconds since the worker's last heartbeat",
                                labels=w)
        slots = GaugeMetricFamily("docvec_worker_slots", "Task slots of the worker", labels=w)
        in_flight = GaugeMetricFamily("docvec_worker_in_flight_tasks", "Tasks the worker is running", labels=w)
        outcomes = CounterMetricFamily("docvec_worker_tasks", "Task deliveries settled by the worker, by outcome",
                                       labels=[*w, "outcome"])
        stages = HistogramMetricFamily("docvec_worker_stage_duration_seconds", "Pipeline stage latency",
                                       labels=[*w, "stage"])
        lag = HistogramMetricFamily("docvec_worker_queue_lag_seconds",
                                    "Time new stream entries waited before the worker read them", labels=w)
        last_lag = GaugeMetricFamily("docvec_worker_last_queue_lag_seconds",
                                     "Queue lag of the last entry the worker read", labels=w)
        embedded = CounterMetricFamily("docvec_worker_embedded_chunks", "Chunks embedded by the worker", labels=w)
        embed_s = CounterMetricFamily("docvec_worker_embed_seconds", "Time spent in the embed stage", labels=w)
        rate = GaugeMetricFamily("docvec_worker_embed_chunks_per_second",
                                 "Embedding throughput over the worker's recent embed stages", labels=w)
        for name, (beat_s, record) in sorted(self._reading.workers.items()):
            labels = [name]
            age.add_metric(labels, max(self._reading.now_s - beat_s, 0.0))
            if (n := _num(record.get("slots"))) is not None:
                slots.add_metric(labels, n)
            in_flight.add_metric(labels, len(record.get("in_flight") or []))
            data = record.get("metrics")
            if not isinstance(data, dict):
                continue
            for outcome, count in sorted((data.get("outcomes") or {}).items()):
                if (n := _num(count)) is not None:
                    outcomes.add_metric([name, str(outcome)], n)
            for stage, hist in sorted((data.get("stages") or {}).items()):
                _histogram(stages, [name, str(stage)], hist)
            _histogram(lag, labels, data.get("queue_lag"))
            for family, key in ((last_lag, "last_queue_lag_s"), (embedded, "chunks_embedded"),
                                (embed_s, "embed_seconds"), (rate, "embed_chunks_per_s")):
                if (n := _num(data.get(key))) is not None:
                    family.add_metric(labels, n)
        yield from (age, slots, in_flight, outcomes, stages, lag, last_lag, embedded, embed_s, rate)


async def render(metrics: ApiMetrics, core: Core) -> bytes:
    """The Prometheus text exposition: the API's registry, then the fleet read just now."""
    fleet = CollectorRegistry(auto_describe=False)
    fleet.register(FleetCollector(await read_fleet(core)))
    return generate_latest(metrics.registry) + generate_latest(fleet)
