"""Scaling out: end-to-end throughput with 1 and 2 worker processes, and worker memory over many documents.

The real path (blob store -> DB rows -> XADD -> `docvec worker` processes -> fetch, parse, chunk, embed
with all-MiniLM-L6-v2, index through a `docvec vectordb` server -> done) on one embedded redis-server.
Each worker process gets one torch thread (`embedding.torch_threads: 1`), as a one-CPU container would,
so the ratio shows what adding a worker buys. Workers are warmed first (model loaded, one document
done) and throughput counts the corpus only: its chunks over the time from its first task's start to
its last task's end (DB timestamps). The 1-worker run samples the worker's RSS after its first corpus
document, after every tenth of the corpus and at the end: a flat line means no per-task leak.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import by_size, emit, machine_state, prose_document, size_flags, size_keys, summary
from bench.fleet import ProcessFleet

BENCH = "scale"
WORKER_ENV = {
    "DOCVEC_EMBEDDING__TORCH_THREADS": "1", "DOCVEC_WORKER__MAX_CONCURRENT_TASKS": "4",
    "DOCVEC_WORKER__HEARTBEAT_INTERVAL_S": "0.5", "DOCVEC_WORKER__HEARTBEAT_TIMEOUT_S": "10.0",
    "DOCVEC_WORKER__BLOCK_MS": "200",
}
READY_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 1800.0
WARMUP_ROUNDS = 10
POLL_S = 0.1
MIB = 1024 * 1024


@dataclass
class RssSampler:
    """RSS of one process at named moments."""

    pid: int
    samples_mb: dict[str, float] = field(default_factory=dict)

    def sample(self, moment: str) -> None:
        import psutil  # type: ignore[import-untyped]

        self.samples_mb[moment] = round(psutil.Process(self.pid).memory_info().rss / MIB, 1)


def _corpus(count: int, seed: int) -> list[str]:
    """`count` documents of generated prose. Each run gets its own (a seed per run): docvec reuses the stored
    vector of a chunk it has embedded before, so a run on the same text would embed nothing."""
    rng = random.Random(seed)
    return [prose_document(rng, sections=rng.randint(1, 2), paragraphs=2, sentences=5) for _ in range(count)]


def _task_id(submission: Any) -> str:
    assert submission.task is not None  # every name is new
    return str(submission.task.id)


async def _worker_records(core: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    records = {}
    for name in names:
        raw = await core.redis.get(core.keys.worker(name))
        if raw:
            records[name] = json.loads(raw)
    return records


async def _wait(predicate: Any, timeout_s: float, what: str, fleet: ProcessFleet) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for name, code in fleet.dead_workers().items():
            raise RuntimeError(f"worker {name} exited ({code}):\n{fleet.tail(f'worker-{name}.log')}")
        if await predicate():
            return
        await asyncio.sleep(POLL_S)
    raise RuntimeError(f"timed out after {timeout_s}s waiting for {what}")


async def _settled(core: Any, kb_id: str) -> int:
    """Tasks of the knowledge base that are done (one count query: the harness must not steal the CPU
    the workers are measured on)."""
    counts = await asyncio.to_thread(core.repo.tasks.counts, kb_id=kb_id)
    if counts["failed"] or counts["cancelled"]:
        raise RuntimeError(f"tasks did not all succeed: {counts}")
    return counts["done"]


async def _warm_up(core: Any, warm_kb: Any, fleet: ProcessFleet, names: list[str]) -> None:
    """Until every worker has finished one document (its model is loaded), feed tiny documents (into a
    knowledge base of their own, so that the corpus's counts start at zero)."""
    from lifecycle import documents as lifecycle

    submitted = 0

    async def all_registered() -> bool:
        return len(await _worker_records(core, names)) == len(names)

    await _wait(all_registered, READY_TIMEOUT_S, "workers to register", fleet)
    for round_no in range(WARMUP_ROUNDS):
        records = await _worker_records(core, names)
        cold = [n for n in names if records.get(n, {}).get("done", 0) < 1]
        if not cold:
            return
        for i in range(len(cold)):  # text of its own: a reused vector would leave the model cold
            await lifecycle.submit(core, warm_kb, f"warmup-{round_no}-{i}.md",
                                   f"# Warm up {warm_kb.name} {round_no} {i}\n\nLoading the model before the "
                                   "clock starts.\n".encode())
        submitted += len(cold)

        async def warmed(expected: int = submitted) -> bool:
            return await _settled(core, warm_kb.id) == expected

        await _wait(warmed, READY_TIMEOUT_S, "warm-up documents", fleet)
        await asyncio.sleep(1.0)  # let heartbeats publish the new done counts
    raise RuntimeError(f"workers still cold after {WARMUP_ROUNDS} warm-up rounds")


async def _run_phase(core: Any, fleet: ProcessFleet, workers: int, documents: list[str],
                     sample_rss: bool) -> dict[str, Any]:
    from lifecycle import documents as lifecycle

    kb, warm_kb = [
        await asyncio.to_thread(core.repo.kbs.create, f"scale{workers}{suffix}", tenant="default", chunk_tokens=256,
                                overlap_tokens=32, embedding_model="all-MiniLM-L6-v2", dim=384)
        for suffix in ("", "-warmup")
    ]
    names = [f"scale{workers}-{i}-{uuid.uuid4().hex[:4]}" for i in range(workers)]
    for name in names:
        fleet.start_worker(name)
    try:
        await _warm_up(core, warm_kb, fleet, names)
        sampler = RssSampler(fleet.workers[names[0]].pid) if sample_rss else None
        if sampler is not None:
            sampler.sample("warm")
        task_ids = [
            _task_id(await lifecycle.submit(core, kb, f"doc{i}.md", text.encode()))
            for i, text in enumerate(documents)
        ]
        # RSS after the first document, then after every tenth of the corpus: a leak grows with the count.
        marks = {"start": 1, **{f"{p}pct": max(1, len(task_ids) * p // 100) for p in range(10, 100, 10)},
                 "end": len(task_ids)}

        async def finished() -> bool:
            settled = await _settled(core, kb.id)
            if sampler is not None:
                for moment, at in marks.items():
                    if settled >= at and moment not in sampler.samples_mb:
                        sampler.sample(moment)
            return settled == len(task_ids)

        await _wait(finished, RUN_TIMEOUT_S, f"{len(task_ids)} documents", fleet)
        tasks = [await asyncio.to_thread(core.repo.tasks.get, t) for t in task_ids]
    finally:
        for name in names:
            if name in fleet.workers:
                fleet.terminate(name)
    starts = [t.started_at for t in tasks if t.started_at is not None]
    ends = [t.finished_at for t in tasks if t.finished_at is not None]
    seconds = (max(ends) - min(starts)).total_seconds()
    chunks = sum(t.chunk_count for t in tasks)
    return {"workers": workers, "documents": len(tasks), "chunks": chunks, "seconds": seconds,
            "chunks_per_s": chunks / seconds, "rss_mb": sampler.samples_mb if sampler else None}


async def _run(workdir: Path, documents: int) -> list[dict[str, Any]]:
    from common.redisconn import EmbeddedRedis
    from common.runtime import open_core
    from common.settings import RedisSettings, Settings, VectorDbSettings

    redis_server = EmbeddedRedis(workdir / "redis")
    redis_url = await asyncio.to_thread(redis_server.start)
    prefix = f"scale{uuid.uuid4().hex[:6]}"
    fleet = ProcessFleet(workdir=workdir, redis_url=redis_url, prefix=prefix, settings_env=WORKER_ENV)
    try:
        await asyncio.to_thread(fleet.start_server)
        settings = Settings(data_dir=str(fleet.data_dir), redis=RedisSettings(url=redis_url, prefix=prefix),
                            vectordb=VectorDbSettings(uri=fleet.vectordb_url))
        async with open_core(settings) as core:  # this process never embeds: no model is loaded here
            results = []
            for workers in (1, 2):
                result = await _run_phase(core, fleet, workers, _corpus(documents, seed=6 + workers),
                                          sample_rss=workers == 1)
                emit(BENCH, f"workers_{workers}_chunks_per_s", round(result["chunks_per_s"], 2), "chunks/s",
                     workers=workers, documents=result["documents"], chunks=result["chunks"],
                     seconds=round(result["seconds"], 2), torch_threads_per_worker=1)
                if result["rss_mb"]:
                    for moment, mb in result["rss_mb"].items():
                        emit(BENCH, f"rss_mb_{moment}", mb, "MiB", worker_process=1,
                             documents=result["documents"])
                results.append(result)
            return results
    finally:
        await asyncio.to_thread(fleet.stop)
        await asyncio.to_thread(redis_server.stop)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale")
    size_flags(parser, "24 documents per run; finishes within 60 s")
    parser.add_argument("--documents", type=int, default=0,
                        help="documents per run (default 1,000; 24 quick; 4 smoke)")
    args = parser.parse_args()
    emit(BENCH, "machine", machine_state(), "info")
    documents = args.documents or by_size(args, full=1_000, quick=24, smoke=4)
    with tempfile.TemporaryDirectory(prefix="docvec-bench-scale-") as tmp:
        one, two = asyncio.run(_run(Path(tmp), documents))
    rss = one["rss_mb"] or {}
    summary(
        BENCH,
        documents=documents,
        chunks_per_run=[one["chunks"], two["chunks"]],
        workers_1_chunks_per_s=round(one["chunks_per_s"], 2),
        workers_2_chunks_per_s=round(two["chunks_per_s"], 2),
        scaling_ratio=round(two["chunks_per_s"] / one["chunks_per_s"], 3),
        rss_mb_warm=rss.get("warm"),
        rss_mb_start=rss.get("start"),
        rss_mb_middle=rss.get("50pct"),
        rss_mb_curve=rss,
        rss_mb_end=rss.get("end"),
        rss_growth_mb=round(rss["end"] - rss["start"], 1) if "end" in rss and "start" in rss else None,
        # Warm-up growth (allocator pools, tokenizer caches, new batch shapes) lands early; a leak keeps
        # growing through the second half.
        rss_growth_second_half_mb=round(rss["end"] - rss["50pct"], 1) if "end" in rss and "50pct" in rss else None,
        torch_threads_per_worker=1,
        **size_keys(args),
        loadavg_1m=machine_state()["loadavg_1m"],
    )


if __name__ == "__main__":
    main()
