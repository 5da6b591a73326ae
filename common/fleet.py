"""The fleet at a glance: workers, task streams, task counts, throughput and warnings.

`fleet_snapshot(core)` gathers what the operator dashboard (`GET /api/v1/fleet`) and `docvec status`
show. Ages are measured against Redis server time (`TIME`), the clock heartbeats are scored with, so a
reader on a host with a skewed clock still classifies workers correctly.

Worker states, by heartbeat age (the `docvec:workers` score):
- `alive`: the last heartbeat is at most `late_after_s` old (two heartbeat intervals: one missed beat
  plus scheduling jitter is still normal);
- `late`: older than that, but within `worker.heartbeat_timeout_s`: the worker is slow or stuck and
  its tasks are not reclaimed yet;
- `dead`: older than `worker.heartbeat_timeout_s`: the janitor removes it and reclaims its tasks.

Throughput is derived from the database: tasks whose `finished_at` lies in the last hour, bucketed per
minute. The database is the one record every worker writes anyway, so no extra Redis series is needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, cast

from common.db import Repository, TaskStatus
from common.keys import Keys
from common.redisconn import RedisClient
from common.runtime import Core

log = logging.getLogger(__name__)

THROUGHPUT_WINDOW_S = 3600
THROUGHPUT_BUCKET_S = 60
# Upper bound on finished-task rows read per snapshot (about 1,600 tasks/s sustained over an hour).
THROUGHPUT_MAX_ROWS = 100_000
# Two intervals: one missed heartbeat plus scheduling jitter still counts as alive.
LATE_AFTER_INTERVALS = 2.0

# Garbage older than this is worth a warning (it is normally removed within a janitor round or two).
GARBAGE_WARN_AGE_S = 600.0

ALIVE, LATE, DEAD = "alive", "late", "dead"
CRITICAL, WARNING = "critical", "warning"


@dataclass(frozen=True, slots=True)
class Liveness:
    """Thresholds that classify a heartbeat age (seconds) as alive, late or dead."""

    late_after_s: float
    dead_after_s: float

    @classmethod
    def from_settings(cls, heartbeat_interval_s: float, heartbeat_timeout_s: float) -> Liveness:
        return cls(late_after_s=min(heartbeat_interval_s * LATE_AFTER_INTERVALS, heartbeat_timeout_s),
                   dead_after_s=heartbeat_timeout_s)

    def state(self, age_s: float) -> str:
        if age_s > self.dead_after_s:
            return DEAD
        if age_s > self.late_after_s:
            return LATE
        return ALIVE


async def fleet_snapshot(core: Core, *, now: float | None = None) -> dict[str, Any]:
    """Everything an operator needs to see, as a JSON-ready dict.

    `now` (unix seconds) replaces Redis server time as the reference for ages (tests, replays).
    Keys: `now`, `liveness`, `workers`, `worker_states`, `streams`, `dead_letter`, `tasks`,
    `throughput`, `garbage` (count, oldest_age_s), `dependencies` (down, per dependency), `warnings`.
    """
    redis, keys = core.redis, core.keys
    if now is None:
        now = await redis_time_s(redis)
    w = core.settings.worker
    liveness = Liveness.from_settings(w.heartbeat_interval_s, w.heartbeat_timeout_s)
    counts = await asyncio.to_thread(core.repo.tasks.counts)
    workers = await _workers(redis, keys, liveness, now)
    streams = [await _stream(redis, keys, name, priority, now)
               for name, priority in zip(keys.streams, ("high", "normal"), strict=True)]
    dead_letter = {"name": keys.dead_letter, "length": int(await redis.xlen(keys.dead_letter))}
    throughput = await asyncio.to_thread(finished_per_minute, core.repo, now)
    garbage_rows, oldest_garbage = await asyncio.to_thread(core.repo.garbage.stats)
    states = {s: sum(1 for x in workers if x["state"] == s) for s in (ALIVE, LATE, DEAD)}
    snapshot: dict[str, Any] = {
        "now": now,
        "liveness": {"heartbeat_interval_s": w.heartbeat_interval_s, "late_after_s": liveness.late_after_s,
                     "dead_after_s": liveness.dead_after_s},
        "workers": workers,
        "worker_states": states,
        "streams": streams,
        "dead_letter": dead_letter,
        "tasks": counts,
        "throughput": throughput,
        "garbage": {"count": garbage_rows,
                    "oldest_age_s": None if oldest_garbage is None else round(max(now - oldest_garbage, 0.0), 3)},
        "dependencies": dependencies_down(workers, now),
    }
    snapshot["warnings"] = fleet_warnings(snapshot)
    return snapshot


async def redis_time_s(redis: RedisClient) -> float:
    """Redis server time in unix seconds."""
    seconds, micros = await redis.time()
    return float(seconds) + float(micros) / 1_000_000


# --------------------------------------------------------------------------------------------- workers


async def _workers(redis: RedisClient, keys: Keys, liveness: Liveness, now: float) -> list[dict[str, Any]]:
    """Every registered worker, most recent heartbeat first."""
    beats = cast(list[tuple[str, float]], await redis.zrange(keys.workers, 0, -1, desc=True, withscores=True))
    if not beats:
        return []
    # One MGET: with Redis Cluster the deployment's keys share a slot (redis.hash_tag is required there).
    records = cast(list[str | None], await redis.mget([keys.worker(str(name)) for name, _ in beats]))
    return [_worker(str(name), float(score), raw, liveness, now)
            for (name, score), raw in zip(beats, records, strict=True)]


def _worker(consumer: str, beat_s: float, raw: str | None, liveness: Liveness, now: float) -> dict[str, Any]:
    record = _parse_record(consumer, raw)
    age_s = max(now - beat_s, 0.0)
    started_at = _float_or_none(record.get("started_at"))
    heartbeat_at = _float_or_none(record.get("heartbeat_at"))
    uptime_s = heartbeat_at - started_at if started_at is not None and heartbeat_at is not None else None
    return {
        "consumer": consumer,
        "state": liveness.state(age_s),
        "heartbeat_age_s": round(age_s, 3),
        "record_missing": raw is None,
        "host": record.get("host"),
        "pid": record.get("pid"),
        "version": record.get("version"),
        "started_at": started_at,
        "uptime_s": uptime_s,
        "slots": record.get("slots"),
        "stopping": bool(record.get("stopping", False)),
        "in_flight": [_in_flight(t) for t in record.get("in_flight") or [] if isinstance(t, dict)],
        "done": int(record.get("done") or 0),
        "failed": int(record.get("failed") or 0),
        "cancelled": int(record.get("cancelled") or 0),
        "retried": int(record.get("retried") or 0),
        "embed_chunks_per_s": _embed_rate(record, uptime_s),
        "queue_lag_s": _float_or_none(record.get("queue_lag_s")),
        "dependencies_down": _outages(record.get("dependencies_down")),
    }


def _outages(raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict):
        return {}
    return {str(name): {"since": _float_or_none(o.get("since")), "error": str(o.get("error") or "")}
            for name, o in raw.items() if isinstance(o, dict)}


def dependencies_down(workers: list[dict[str, Any]], now: float) -> dict[str, dict[str, Any]]:
    """Dependencies that live workers report down: since the earliest report, by whom, the last error."""
    down: dict[str, dict[str, Any]] = {}
    for worker in workers:
        if worker["state"] == DEAD:
            continue
        for name, outage in worker["dependencies_down"].items():
            entry = down.setdefault(name, {"since": outage["since"], "workers": [], "error": outage["error"]})
            if outage["since"] is not None and (entry["since"] is None or outage["since"] < entry["since"]):
                entry["since"] = outage["since"]
            entry["workers"].append(worker["consumer"])
    for entry in down.values():
        entry["down_for_s"] = None if entry["since"] is None else round(max(now - entry["since"], 0.0), 1)
    return down


def _parse_record(consumer: str, raw: str | None) -> dict[str, Any]:
    """The worker's JSON heartbeat record; an expired (None) or unreadable one reads as empty."""
    if raw is None:
        return {}
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        log.warning("worker %s has an unreadable heartbeat record: %s", consumer, exc)
        return {}
    return record if isinstance(record, dict) else {}


def _in_flight(task: dict[str, Any]) -> dict[str, Any]:
    return {"task_id": str(task.get("task_id", "")), "stage": task.get("stage"),
            "progress": min(max(float(task.get("progress") or 0.0), 0.0), 1.0)}


def _embed_rate(record: dict[str, Any], uptime_s: float | None) -> float | None:
    """Chunks embedded per second: the worker's own figure when it reports one, else its lifetime
    average from a `chunks_embedded` counter, else unknown (None)."""
    rate = _float_or_none(record.get("embed_chunks_per_s"))
    if rate is not None:
        return rate
    embedded = _float_or_none(record.get("chunks_embedded"))
    if embedded is None or not uptime_s or uptime_s <= 0:
        return None
    return round(embedded / uptime_s, 3)


def _float_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --------------------------------------------------------------------------------------------- streams


async def _stream(redis: RedisClient, keys: Keys, name: str, priority: str, now: float) -> dict[str, Any]:
    """Length, pending, lag and ages of one task stream for the worker group.

    `lag` (entries never delivered to the group) comes from XINFO GROUPS on Redis >= 7; on older
    servers it is `length - pending`, exact here because an entry is deleted when it is acked.
    """
    length = int(await redis.xlen(name))
    group = await _group_info(redis, name, keys.group)
    pending = int(group.get("pending", 0)) if group else 0
    lag = group.get("lag") if group else length
    if not isinstance(lag, int):
        lag = max(length - pending, 0)
    oldest_pending_age_s = None
    if pending:
        summary = await redis.xpending(name, keys.group)
        oldest_pending_age_s = _id_age_s(summary.get("min"), now)
    last_delivered = str(group.get("last-delivered-id", "0-0")) if group else "0-0"
    undelivered = await redis.xrange(name, f"({last_delivered}", "+", count=1) if lag else []
    return {
        "name": name,
        "priority": priority,
        "length": length,
        "pending": pending,
        "lag": lag,
        "consumers": int(group.get("consumers", 0)) if group else 0,
        "oldest_pending_age_s": oldest_pending_age_s,
        "oldest_queued_age_s": _id_age_s(undelivered[0][0], now) if undelivered else None,
    }


async def _group_info(redis: RedisClient, stream: str, group: str) -> dict[str, Any] | None:
    if not await redis.exists(stream):  # not created yet: nothing queued (XINFO would fail)
        return None
    groups = await redis.xinfo_groups(stream)
    return next((g for g in groups if str(g.get("name")) == group), None)


def _id_age_s(entry_id: Any, now: float) -> float | None:
    """Seconds since a stream entry was added (its id starts with the server's millisecond time)."""
    if not entry_id:
        return None
    millis = str(entry_id).split("-", 1)[0]
    if not millis.isdigit():
        return None
    return round(max(now - int(millis) / 1000, 0.0), 3)


# --------------------------------------------------------------------------------------------- throughput


def finished_per_minute(repo: Repository, now: float, *, window_s: int = THROUGHPUT_WINDOW_S,
                        bucket_s: int = THROUGHPUT_BUCKET_S) -> dict[str, Any]:
    """Tasks that finished (done / failed) per bucket over the last `window_s`, oldest bucket first.

    Synchronous (a DB read): call it in a thread. Bucket `i` covers `[now - window_s + i * bucket_s,
    ... + bucket_s)`.
    """
    buckets = window_s // bucket_s
    since = now - buckets * bucket_s
    terminal = (TaskStatus.DONE.value, TaskStatus.FAILED.value)
    series = {status: [0] * buckets for status in terminal}
    # Up to one bucket past `now`: a worker clock slightly ahead of Redis still counts (last bucket).
    rows = repo.tasks.finished_since(since, now + bucket_s, limit=THROUGHPUT_MAX_ROWS)
    for status, finished_at in rows:
        index = min(int((finished_at - since) // bucket_s), buckets - 1)
        series[status][index] += 1
    done, failed = series[TaskStatus.DONE.value], series[TaskStatus.FAILED.value]
    minutes = window_s / 60
    return {
        "window_s": window_s,
        "bucket_s": bucket_s,
        "start": since,
        "done": done,
        "failed": failed,
        "done_per_min": round(sum(done) / minutes, 3),
        "failed_per_min": round(sum(failed) / minutes, 3),
        "truncated": len(rows) >= THROUGHPUT_MAX_ROWS,
    }


# --------------------------------------------------------------------------------------------- warnings


def fleet_warnings(snapshot: dict[str, Any]) -> list[dict[str, str]]:
    """Operator-facing problems in a snapshot, most severe first: `{code, level, message}`."""
    warnings: list[dict[str, str]] = []
    states = snapshot["worker_states"]
    queued = int(snapshot["tasks"].get(TaskStatus.QUEUED.value, 0))
    backlog = sum(int(s["lag"]) for s in snapshot["streams"])
    waiting = max(queued, backlog)
    if waiting and not states[ALIVE] and not states[LATE]:
        warnings.append({
            "code": "no_live_worker", "level": CRITICAL,
            "message": f"{waiting} task{'s' if waiting != 1 else ''} queued but no worker is alive: "
                       "start one with `docvec worker` (or check why the workers stopped).",
        })
    for name, outage in snapshot.get("dependencies", {}).items():
        seen = len(outage["workers"])
        since = f" for {outage['down_for_s']:.0f}s" if outage["down_for_s"] is not None else ""
        by = f"{seen} worker{'s' if seen != 1 else ''}"
        warnings.append({
            "code": "dependency_down", "level": CRITICAL,
            "message": f"{name.replace('_', ' ')} is unavailable{since} (seen by {by}): tasks wait for it without "
                       f"spending attempts and no new work starts; last error: {outage['error'][:200]}",
        })
    dead_letter = snapshot["dead_letter"]["length"]
    if dead_letter:
        warnings.append({
            "code": "dead_letter", "level": WARNING,
            "message": f"{dead_letter} entr{'ies' if dead_letter != 1 else 'y'} in the dead-letter stream "
                       f"{snapshot['dead_letter']['name']}: tasks that gave up after the attempt limit; "
                       "read their errors in the tasks table and retry them with `docvec tasks retry ID`.",
        })
    garbage = snapshot.get("garbage", {})
    if garbage.get("oldest_age_s") is not None and garbage["oldest_age_s"] > GARBAGE_WARN_AGE_S:
        warnings.append({
            "code": "garbage_backlog", "level": WARNING,
            "message": f"{garbage['count']} garbage item{'s' if garbage['count'] != 1 else ''} not removed yet, the "
                       f"oldest {garbage['oldest_age_s'] / 60:.0f} min old (old versions, chunks of failed, cancelled "
                       "or deleted documents, files): is a worker running, and the vector store reachable? "
                       "Search never shows them meanwhile.",
        })
    for worker in snapshot["workers"]:
        age = worker["heartbeat_age_s"]
        if worker["state"] == LATE:
            warnings.append({
                "code": "worker_late", "level": WARNING,
                "message": f"worker {worker['consumer']} is late: last heartbeat {age:.1f}s ago; its tasks "
                           f"are reclaimed if it stays silent past {snapshot['liveness']['dead_after_s']:g}s.",
            })
        elif worker["state"] == DEAD:
            warnings.append({
                "code": "worker_dead", "level": WARNING,
                "message": f"worker {worker['consumer']} is dead: last heartbeat {age:.1f}s ago; the janitor "
                           "of a live worker will reclaim its tasks and remove it.",
            })
    return warnings
