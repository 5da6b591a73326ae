"""The fleet snapshot (`common.fleet`) and `GET /api/v1/fleet`, against the real redis-server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from common.fleet import finished_per_minute, fleet_snapshot, redis_time_s
from common.runtime import Core
from lifecycle import documents as ingest
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status

API = "/api/v1"
TEXT = "# Notes\n\n" + " ".join(f"word{i}" for i in range(200)) + "\n"


async def _beat(core: Core, consumer: str, age_s: float, record: dict[str, Any] | None = None) -> None:
    """Register `consumer` as if its last heartbeat was `age_s` ago (Redis time), with a JSON record."""
    now = await redis_time_s(core.redis)
    await core.redis.zadd(core.keys.workers, {consumer: now - age_s})
    if record is not None:
        await core.redis.set(core.keys.worker(consumer), json.dumps(record), ex=60)


def _by_name(snapshot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["consumer"]: w for w in snapshot["workers"]}


def _codes(snapshot: dict[str, Any]) -> list[str]:
    return [w["code"] for w in snapshot["warnings"]]


async def _queued_tasks(core: Core, n: int) -> list[str]:
    kb = await ingest.create_kb(core, "docs", tenant="default")
    return [(await submit_document(core, kb, f"doc{i}.md", TEXT.encode()))[1].id for i in range(n)]


async def test_workers_are_alive_late_or_dead_by_heartbeat_age(core: Core) -> None:
    # Test settings: heartbeat every 0.5 s, timeout 5 s -> late after 1 s, dead after 5 s.
    record = {"host": "h1", "pid": 42, "version": "1.0", "started_at": 1000.0, "heartbeat_at": 1100.0, "slots": 4,
              "in_flight": [{"task_id": "t1", "stage": "embed", "progress": 0.5}], "done": 7, "failed": 1,
              "cancelled": 2, "retried": 0, "chunks_embedded": 500, "queue_lag_s": 1.5, "stopping": False}
    await _beat(core, "w-alive", 0.1, record)
    await _beat(core, "w-late", 2.5, {**record, "in_flight": []})
    await _beat(core, "w-dead", 30.0)  # its JSON record has expired: only the score is left

    snapshot = await fleet_snapshot(core)

    workers = _by_name(snapshot)
    assert {n: w["state"] for n, w in workers.items()} == {"w-alive": "alive", "w-late": "late", "w-dead": "dead"}
    assert snapshot["worker_states"] == {"alive": 1, "late": 1, "dead": 1}
    alive = workers["w-alive"]
    assert (alive["host"], alive["pid"], alive["done"], alive["failed"], alive["slots"]) == ("h1", 42, 7, 1, 4)
    assert alive["in_flight"] == [{"task_id": "t1", "stage": "embed", "progress": 0.5}]
    assert alive["uptime_s"] == 100.0 and alive["embed_chunks_per_s"] == 5.0 and alive["queue_lag_s"] == 1.5
    assert 0 <= alive["heartbeat_age_s"] < 1.0
    assert workers["w-dead"]["record_missing"] and workers["w-dead"]["host"] is None
    assert workers["w-dead"]["heartbeat_age_s"] >= 30.0
    assert snapshot["liveness"] == {"heartbeat_interval_s": 0.5, "late_after_s": 1.0, "dead_after_s": 5.0}
    codes = _codes(snapshot)
    assert "worker_late" in codes and "worker_dead" in codes
    assert "no_live_worker" not in codes  # nothing is queued


async def test_now_overrides_redis_time(core: Core) -> None:
    await core.redis.zadd(core.keys.workers, {"w1": 1000.0})
    assert _by_name(await fleet_snapshot(core, now=1000.5))["w1"]["state"] == "alive"
    assert _by_name(await fleet_snapshot(core, now=1003.0))["w1"]["state"] == "late"
    late = await fleet_snapshot(core, now=1010.0)
    assert _by_name(late)["w1"]["state"] == "dead"
    assert _by_name(late)["w1"]["heartbeat_age_s"] == 10.0


async def test_stream_numbers_follow_enqueue_delivery_and_ack(core: Core) -> None:
    queue = core.queue
    for i in range(3):
        await queue.enqueue(f"task-{i}", "normal")
    await queue.enqueue("urgent", "high")

    streams = {s["priority"]: s for s in (await fleet_snapshot(core))["streams"]}
    normal, high = streams["normal"], streams["high"]
    assert (normal["length"], normal["pending"], normal["lag"]) == (3, 0, 3)
    assert normal["oldest_pending_age_s"] is None and normal["oldest_queued_age_s"] is not None
    assert (high["length"], high["pending"], high["lag"]) == (1, 0, 1)

    delivered = await queue.read_new("c1", 3, block_ms=10)  # the high entry first, then two normal ones
    assert [m.task_id for m in delivered] == ["urgent", "task-0", "task-1"]
    streams = {s["priority"]: s for s in (await fleet_snapshot(core))["streams"]}
    assert (streams["normal"]["length"], streams["normal"]["pending"], streams["normal"]["lag"]) == (3, 2, 1)
    assert streams["normal"]["oldest_pending_age_s"] is not None and streams["normal"]["consumers"] == 1
    assert (streams["high"]["pending"], streams["high"]["lag"]) == (1, 0)

    await queue.ack(delivered[1])
    await queue.dead_letter(delivered[0], "gave up after 3 attempts")
    snapshot = await fleet_snapshot(core)
    streams = {s["priority"]: s for s in snapshot["streams"]}
    assert (streams["normal"]["length"], streams["normal"]["pending"], streams["normal"]["lag"]) == (2, 1, 1)
    assert (streams["high"]["length"], streams["high"]["pending"]) == (0, 0)
    assert snapshot["dead_letter"] == {"name": core.keys.dead_letter, "length": 1}
    dead = [w for w in snapshot["warnings"] if w["code"] == "dead_letter"]
    assert len(dead) == 1 and "1 entry" in dead[0]["message"]


async def test_queued_tasks_without_a_live_worker_raise_the_critical_warning(core: Core) -> None:
    await _queued_tasks(core, 2)
    snapshot = await fleet_snapshot(core)
    assert snapshot["tasks"]["queued"] == 2
    (warning,) = [w for w in snapshot["warnings"] if w["code"] == "no_live_worker"]
    assert warning["level"] == "critical" and warning["message"].startswith("2 tasks queued but no worker is alive")

    await _beat(core, "w-dead", 30.0)  # a dead worker does not count
    assert "no_live_worker" in _codes(await fleet_snapshot(core))
    await _beat(core, "w-live", 0.0, {"host": "h"})
    assert "no_live_worker" not in _codes(await fleet_snapshot(core))


async def test_a_real_worker_shows_up_and_its_finished_tasks_count_as_throughput(core: Core, vectors: Any) -> None:
    task_ids = await _queued_tasks(core, 3)
    async with running_worker(core, vectors, consumer="w-real") as worker:
        for task_id in task_ids:
            assert (await wait_for_status(core, task_id, timeout_s=60)).status == "done"
        await asyncio.sleep(0)  # let the consumer loop record its stats
        snapshot = await fleet_snapshot(core)
        (seen,) = snapshot["workers"]
        assert seen["consumer"] == worker.consumer and seen["state"] == "alive"
        assert seen["pid"] is not None and not seen["record_missing"]

    assert snapshot["tasks"]["done"] == 3 and snapshot["tasks"]["queued"] == 0
    throughput = snapshot["throughput"]
    assert len(throughput["done"]) == 60 and sum(throughput["done"]) == 3 and sum(throughput["failed"]) == 0
    assert throughput["done"][-1] + throughput["done"][-2] == 3  # finished within the last minute or two
    assert throughput["done_per_min"] == 0.05
    # Seen from two minutes later, the same tasks sit two buckets further back; from two hours later, nowhere.
    later = await asyncio.to_thread(finished_per_minute, core.repo, snapshot["now"] + 120)
    assert sum(later["done"][-5:-1]) == 3 and later["done"][-1] == 0
    gone = await asyncio.to_thread(finished_per_minute, core.repo, snapshot["now"] + 7200)
    assert sum(gone["done"]) == 0


async def test_fleet_route_is_admin_only(admin_client: httpx.AsyncClient, client: httpx.AsyncClient,
                                         anon_client: httpx.AsyncClient, core: Core) -> None:
    await _queued_tasks(core, 1)
    await _beat(core, "w-late", 2.5, {"host": "h", "pid": 1, "in_flight": [], "done": 3})

    response = await admin_client.get(f"{API}/fleet")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tasks"]["queued"] == 1
    assert [(w["consumer"], w["state"], w["done"]) for w in body["workers"]] == [("w-late", "late", 3)]
    assert {s["priority"] for s in body["streams"]} == {"high", "normal"}
    assert {w["code"] for w in body["warnings"]} == {"worker_late"}  # a late worker still counts as present
    assert (await client.get(f"{API}/fleet")).status_code == 403
    assert (await anon_client.get(f"{API}/fleet")).status_code == 401


async def test_dependencies_live_workers_report_down_and_garbage_show_in_the_snapshot(
        core: Core, admin_client: httpx.AsyncClient) -> None:
    since = await redis_time_s(core.redis) - 42
    down = {"vector_store": {"since": since, "error": "connection refused", "probes": 3}}
    await _beat(core, "w-a", 0.1, {"dependencies_down": down})
    await _beat(core, "w-b", 0.1, {"dependencies_down": {"vector_store": {"since": since + 5, "error": "timeout"}}})
    await _beat(core, "w-dead", 30.0, {"dependencies_down": {"database": {"since": since, "error": "gone"}}})
    kb = await ingest.create_kb(core, "docs", tenant="default")
    _, task = await submit_document(core, kb, "d.md", TEXT.encode())
    await ingest.cancel(core, task.id)  # its (empty) chunk set is garbage until the janitor confirms

    snapshot = await fleet_snapshot(core)

    outage = snapshot["dependencies"]["vector_store"]
    assert outage["since"] == since and sorted(outage["workers"]) == ["w-a", "w-b"] and outage["down_for_s"] >= 42
    assert "database" not in snapshot["dependencies"], "a dead worker's report is not evidence"
    warning = next(w for w in snapshot["warnings"] if w["code"] == "dependency_down")
    assert warning["level"] == "critical" and "vector store is unavailable" in warning["message"]
    assert snapshot["garbage"]["count"] == 1 and snapshot["garbage"]["oldest_age_s"] >= 0
    body = (await admin_client.get(f"{API}/fleet")).json()
    assert body["dependencies"]["vector_store"]["workers"] == outage["workers"]
    assert body["garbage"]["count"] == 1
