"""Chaos: documents through 3 real `docvec worker` processes (real model, real vector store server,
real redis-server with AOF) while a random worker is SIGKILLed every few seconds (and restarted under
a new consumer name) and the Redis server is crashed and restarted once. Then every document's chunk
set is checked against the database: nothing lost, nothing duplicated, nothing missing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import by_size, emit, machine_state, prose_document, size_flags, size_keys, summary
from bench.fleet import ProcessFleet
from common.runtime import Core

BENCH = "chaos"
WORKERS = 3
WORKER_SETTINGS = {
    "DOCVEC_WORKER__HEARTBEAT_INTERVAL_S": "0.5", "DOCVEC_WORKER__HEARTBEAT_TIMEOUT_S": "3.0",
    "DOCVEC_WORKER__BLOCK_MS": "200", "DOCVEC_WORKER__RETRY_BACKOFF_S": "0.2",
    "DOCVEC_WORKER__JANITOR_INTERVAL_S": "1.0", "DOCVEC_WORKER__ORPHAN_GRACE_S": "2.0",
    "DOCVEC_WORKER__ORPHAN_SCAN_INTERVAL_S": "5.0", "DOCVEC_WORKER__MAX_ATTEMPTS": "20",
    "DOCVEC_WORKER__MAX_CONCURRENT_TASKS": "2", "DOCVEC_EMBEDDING__TORCH_THREADS": "1",
    "DOCVEC_EMBEDDING__BATCH_SIZE": "16",
}


def _names() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"chaos-{n}-{uuid.uuid4().hex[:4]}"


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    import vectordb
    from common.redisconn import EmbeddedRedis
    from common.runtime import open_core
    from common.settings import Settings
    from lifecycle import documents as lifecycle

    rng = random.Random(args.seed)
    redis_dir = workdir / "redis"
    redis_server = EmbeddedRedis(redis_dir)
    redis_url = redis_server.start()
    redis_servers = [redis_server]
    prefix = f"chaos{uuid.uuid4().hex[:6]}"
    fleet = ProcessFleet(workdir=workdir, redis_url=redis_url, prefix=prefix, settings_env=WORKER_SETTINGS)
    names = _names()
    kills = redis_restarts = 0
    try:
        fleet.start_server()
        settings = Settings(data_dir=str(fleet.data_dir), redis={"url": redis_url, "prefix": prefix},
                            vectordb={"uri": fleet.vectordb_url})
        async with open_core(settings) as core:  # this process never embeds: no model is loaded
            kb = await asyncio.to_thread(core.repo.kbs.create, "chaos", tenant="default", chunk_tokens=256,
                                         overlap_tokens=32, embedding_model="all-MiniLM-L6-v2", dim=384)
            doc_rng = random.Random(args.seed + 1)
            task_ids = []
            for i in range(args.documents):
                text = prose_document(doc_rng, sections=doc_rng.randint(1, 2), paragraphs=2, sentences=5)
                submission = await lifecycle.submit(core, kb, f"doc{i}.md", text.encode())
                assert submission.task is not None  # every name is new
                task_ids.append(submission.task.id)
            emit(BENCH, "submitted", len(task_ids), "tasks")

            for _ in range(WORKERS):
                fleet.start_worker(next(names))
            started = time.monotonic()
            last_kill = started
            deadline = started + args.timeout_s
            next_kill = started + args.kill_every_s
            restart_at = started + args.kill_every_s * 1.5
            while time.monotonic() < deadline:
                counts = await asyncio.to_thread(core.repo.tasks.counts)
                finished = counts["done"] + counts["failed"] + counts["cancelled"]
                if finished >= len(task_ids):
                    break
                now = time.monotonic()
                if kills < args.kills and now >= next_kill:
                    victim = rng.choice(sorted(fleet.workers))
                    fleet.kill(victim)
                    fleet.start_worker(next(names))
                    kills += 1
                    last_kill = now
                    next_kill = now + args.kill_every_s * rng.uniform(0.6, 1.4)
                    emit(BENCH, "kill", victim, "consumer", done=counts["done"], t_s=round(now - started, 1))
                if redis_restarts == 0 and now >= restart_at:
                    os.kill(int(redis_server.pidfile.read_text().strip()), signal.SIGKILL)
                    await asyncio.to_thread(redis_server.stop)
                    await asyncio.sleep(0.5)
                    redis_server = EmbeddedRedis(redis_dir)
                    redis_servers.append(redis_server)
                    if await asyncio.to_thread(redis_server.start) != redis_url:
                        raise RuntimeError("restarted redis came back on another address")
                    redis_restarts += 1
                    emit(BENCH, "redis_restart", redis_restarts, "count", t_s=round(now - started, 1))
                for name, code in fleet.dead_workers().items():
                    raise RuntimeError(f"worker {name} died on its own ({code}):\n"
                                       + fleet.tail(f"worker-{name}.log"))
                await asyncio.sleep(0.25)
            finished_at = time.monotonic()

            client = vectordb.connect(fleet.vectordb_url)
            try:
                return await _audit(core, client, kb.collection, task_ids, kills, redis_restarts,
                                    recovery_s=finished_at - last_kill, elapsed_s=finished_at - started)
            finally:
                await client.close()
    finally:
        fleet.stop()
        for server in redis_servers:
            server.stop()


async def _audit(core: Core, client: Any, collection: str, task_ids: list[str], kills: int,
                 redis_restarts: int, *, recovery_s: float, elapsed_s: float) -> dict[str, object]:
    repo = core.repo
    done = failed = lost = duplicate = missing = 0
    for task_id in task_ids:
        task = await asyncio.to_thread(repo.tasks.get, task_id)
        if task.status == "failed":
            failed += 1
            continue
        if task.status != "done":
            lost += 1
            continue
        done += 1
        doc = await asyncio.to_thread(repo.documents.get, task.document_id)
        rows = await client.query(collection, filter=f'document_id == "{doc.id}"',
                                  output_fields=["ordinal", "parse_version"])
        ordinals = [int(r["ordinal"]) for r in rows if int(r["parse_version"]) == doc.parse_version]
        stale = len(rows) - len(ordinals)
        duplicate += stale + len(ordinals) - len(set(ordinals))
        missing += len(set(range(doc.chunk_count)) - set(ordinals))
    return {"submitted": len(task_ids), "done": done, "failed": failed, "lost": lost,
            "duplicate_chunks": duplicate, "missing_chunks": missing, "kills": kills,
            "redis_restarts": redis_restarts, "recovery_s": round(recovery_s, 2),
            "elapsed_s": round(elapsed_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    size_flags(parser, "fewer documents and kills, within 60 s")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    args.documents, args.kills, args.kill_every_s, args.timeout_s = by_size(
        args, full=(240, 12, 4.0, 900.0), quick=(80, 5, 3.0, 50.0), smoke=(6, 1, 2.0, 90.0)
    )
    emit(BENCH, "machine", machine_state(), "info")
    with tempfile.TemporaryDirectory(prefix="docvec-chaos-") as tmp:
        result = asyncio.run(_run(args, Path(tmp)))
    summary(BENCH, **result, workers=WORKERS, **size_keys(args))


if __name__ == "__main__":
    main()
