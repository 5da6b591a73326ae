"""Task-queue overhead: no-op tasks through docvec's full task path vs arq, Celery and Dramatiq.

All four run against ONE redis-server started for this benchmark (the bundled binary, TCP on 127.0.0.1,
AOF on), one after the other, on the same number of tasks.

- docvec: the real path with the pipeline stages replaced by one no-op stage. Enqueue = Document + Task
  rows in the database (SQLite, WAL) then XADD (`lifecycle.documents.enqueue`); consume = the real `Worker`
  (consumer group read, DB claim with a new fencing version and attempts + 1, cancel check, a progress
  write to the DB and its event published, DB completion, then XACK+XDEL), with the worker's group
  commit: the DB writes of all concurrent tasks go in one transaction per round, events and acks in
  one Redis round trip (`worker.ledger`). The worker's janitor runs its start-up scan during the run.
- arq: `poll_delay=0.01, max_jobs=50, queue_read_limit=500` (its defaults poll every 0.5 s).
- Dramatiq: RedisBroker, one worker with 8 threads.
- Celery: Redis broker, a `--pool=solo` worker process (prefetch multiplier 64, results ignored).

Throughput is the number of tasks over the time from the first task's start to the last task's
completion as each system sees it (worker start-up is excluded for everyone; for docvec the end is
the worker's count of settled tasks, i.e. after the DB commit and the ack).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import by_size, emit, machine_state, size_flags, size_keys, summary

BENCH = "queue"
PEERS = ("arq", "celery", "dramatiq")
INSTALL_HINT = {
    "arq": "pip install --no-deps arq  (arq 0.28 declares redis<6; it runs on docvec's redis-py)",
    "celery": "pip install 'docvec[bench]'  (or: pip install celery)",
    "dramatiq": "pip install 'docvec[bench]'  (or: pip install dramatiq)",
}
DOCVEC_SLOTS = 50  # task slots of the docvec worker: the same concurrency as arq's max_jobs
ARQ_CONFIG = {"poll_delay": 0.01, "max_jobs": 50, "queue_read_limit": 500}
DRAMATIQ_THREADS = 8
CELERY_PREFETCH = 64
SERVER_START_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 120.0
CELERY_START_TIMEOUT_S = 60.0


# ----------------------------------------------------------------------------- the shared redis-server


@dataclass
class BenchRedis:
    """A bundled redis-server on a free 127.0.0.1 port, AOF on (as docvec runs it); stopped on exit."""

    workdir: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        from common.redisconn import redis_server_binary

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "redis.conf"
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\n"
            f'dir "{self.workdir}"\nlogfile "{self.workdir / "redis.log"}"\n'
            "appendonly yes\nappendfsync everysec\nsave \"\"\n"
        )
        self.proc = subprocess.Popen([str(redis_server_binary()), str(conf)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)  # not listening yet
            finally:
                client.close()
        raise RuntimeError(f"bench redis-server did not answer within {SERVER_START_TIMEOUT_S}s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


@contextmanager
def bench_redis(workdir: Path) -> Iterator[BenchRedis]:
    server = BenchRedis(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Timing:
    """First start and last completion of a run's tasks, as seen by the system under test."""

    total: int
    started_at: float | None = None
    finished_at: float | None = None
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def task_started(self) -> None:
        if self.started_at is None:
            self.started_at = time.perf_counter()

    def task_done(self) -> bool:
        """Count one completion; True when it was the last one."""
        with self.lock:
            self.done += 1
            if self.done == self.total:
                self.finished_at = time.perf_counter()
                return True
        return False

    @property
    def seconds(self) -> float:
        assert self.started_at is not None and self.finished_at is not None, "run did not finish"
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class RunResult:
    system: str
    tasks: int
    enqueue_s: float
    run_s: float
    config: str

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.run_s


# ----------------------------------------------------------------------------- docvec


class NoopStage:
    """The whole pipeline, replaced: produces an empty parse and no chunks."""

    name = "noop"
    start, end = 0.0, 1.0

    def __init__(self, timing: Timing) -> None:
        self._timing = timing

    async def run(self, ctx: Any) -> None:
        self._timing.task_started()
        ctx.format = "noop"


class NoopChunks:
    """Stands in for the vector store's chunk set: there are no chunks, and it is always reachable."""

    async def delete_document(self, *args: Any, **kwargs: Any) -> int:
        return 0

    async def ping(self) -> None:
        return None


async def _docvec(url: str, data_dir: Path, tasks: int) -> RunResult:
    from common.runtime import open_core
    from common.settings import RedisSettings, Settings, WorkerSettings
    from lifecycle import documents as lifecycle
    from worker.consumer import Worker

    settings = Settings(data_dir=str(data_dir), redis=RedisSettings(url=url, prefix="bench-docvec"),
                        worker=WorkerSettings(max_concurrent_tasks=DOCVEC_SLOTS, block_ms=100))
    async with open_core(settings) as core:
        repo = core.repo
        kb = await asyncio.to_thread(repo.kbs.create, "bench", tenant="bench", chunk_tokens=256, overlap_tokens=32,
                                     embedding_model="none", dim=8)
        started = time.perf_counter()
        for i in range(tasks):
            submission = await asyncio.to_thread(
                repo.documents.submit, kb, source_id=f"t{i}.txt", filename=f"t{i}.txt", size_bytes=0,
                sha256=hashlib.sha256(b"").hexdigest(), blob_key=f"bench/{i}",
            )
            assert submission.task is not None  # every key is new
            await lifecycle.enqueue(core, submission.task)
        enqueue_s = time.perf_counter() - started

        timing = Timing(tasks)
        worker = Worker(core, None, chunks=NoopChunks(), stages=[NoopStage(timing)])  # type: ignore[arg-type]
        async with asyncio.TaskGroup() as group:
            group.create_task(worker.run())
            try:
                async with asyncio.timeout(RUN_TIMEOUT_S):
                    while worker.stats.done + worker.stats.failed < tasks:
                        await asyncio.sleep(0.002)
                timing.finished_at = time.perf_counter()
            finally:
                worker.stop()
        counts = await asyncio.to_thread(repo.tasks.counts)
        if counts["done"] != tasks:
            failed = await asyncio.to_thread(repo.tasks.query, status="failed", limit=1)
            raise RuntimeError(f"docvec finished {counts['done']} of {tasks} tasks: {counts}"
                               + (f", e.g. {failed[0].error}" if failed else ""))
        if await core.redis.xlen(core.keys.stream_normal) != 0:
            raise RuntimeError("docvec left entries in its stream")
    return RunResult("docvec", tasks, enqueue_s, timing.seconds,
                     f"1 worker, {DOCVEC_SLOTS} task slots, SQLite (WAL) task rows, no-op stage")


# ----------------------------------------------------------------------------- arq


async def _arq(port: int, tasks: int) -> RunResult:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    timing = Timing(tasks)

    async def noop(ctx: dict[str, Any]) -> None:
        timing.task_started()
        timing.task_done()

    redis_settings = RedisSettings(host="127.0.0.1", port=port)
    queue = "bench-arq:queue"
    pool = await create_pool(redis_settings)
    try:
        started = time.perf_counter()
        for _ in range(tasks):
            await pool.enqueue_job("noop", _queue_name=queue)
        enqueue_s = time.perf_counter() - started
    finally:
        await pool.aclose()
    worker = Worker(functions=[func(noop, name="noop")], redis_settings=redis_settings, queue_name=queue,
                    burst=True, handle_signals=False, **ARQ_CONFIG)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await worker.async_run()
    finally:
        await worker.close()
    if timing.done != tasks:
        raise RuntimeError(f"arq ran {timing.done} of {tasks} jobs")
    config = ", ".join(f"{k}={v}" for k, v in ARQ_CONFIG.items()) + ", burst mode, keep_result default"
    return RunResult("arq", tasks, enqueue_s, timing.seconds, config)


# ----------------------------------------------------------------------------- Dramatiq


def _dramatiq(url: str, tasks: int) -> RunResult:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

    timing = Timing(tasks)
    finished = threading.Event()
    broker = RedisBroker(url=url, namespace="bench-dramatiq")
    dramatiq.set_broker(broker)

    def noop() -> None:
        timing.task_started()
        if timing.task_done():
            finished.set()

    actor = dramatiq.actor(broker=broker, actor_name="noop", queue_name="bench", max_retries=0)(noop)
    try:
        started = time.perf_counter()
        for _ in range(tasks):
            actor.send()
        enqueue_s = time.perf_counter() - started
        worker = dramatiq.Worker(broker, worker_threads=DRAMATIQ_THREADS)
        worker.start()
        try:
            if not finished.wait(RUN_TIMEOUT_S):
                raise RuntimeError(f"dramatiq ran {timing.done} of {tasks} messages in {RUN_TIMEOUT_S}s")
        finally:
            worker.stop()
    finally:
        broker.close()
    return RunResult("dramatiq", tasks, enqueue_s, timing.seconds, f"RedisBroker, 1 worker, {DRAMATIQ_THREADS} threads")


# ----------------------------------------------------------------------------- Celery


def _celery_app(url: str) -> Any:
    from celery import Celery  # type: ignore[import-untyped]

    app = Celery("docvec_bench", broker=url, set_as_current=False)
    app.conf.update(task_ignore_result=True, worker_prefetch_multiplier=CELERY_PREFETCH,
                    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
                    task_default_queue="bench-celery")
    return app


def celery_worker_main(url: str, tasks: int, result_file: Path) -> None:
    """The Celery worker process (`python -m bench.queue --celery-worker ...`): writes its timing and
    keeps running until the parent stops it."""
    app = _celery_app(url)
    timing = Timing(tasks)

    @app.task(name="noop")
    def noop() -> None:
        timing.task_started()
        if timing.task_done():
            result_file.write_text(json.dumps({"seconds": timing.seconds}))

    app.worker_main(["worker", "--pool=solo", "--loglevel=WARNING", "--without-heartbeat",
                     "--without-mingle", "--without-gossip", "-Q", "bench-celery"])


def _celery(url: str, workdir: Path, tasks: int) -> RunResult:
    app = _celery_app(url)
    started = time.perf_counter()
    for _ in range(tasks):
        app.send_task("noop")
    enqueue_s = time.perf_counter() - started
    result_file = workdir / "celery-result.json"
    log_path = workdir / "celery-worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.queue", "--celery-worker", url, str(tasks), str(result_file)],
            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1],
        )
    try:
        deadline = time.monotonic() + CELERY_START_TIMEOUT_S + RUN_TIMEOUT_S
        while not result_file.exists():
            if proc.poll() is not None:
                raise RuntimeError("celery worker exited: " + log_path.read_text(errors="replace")[-2000:])
            if time.monotonic() > deadline:
                raise RuntimeError("celery worker did not finish in time")
            time.sleep(0.05)
        seconds = float(json.loads(result_file.read_text())["seconds"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
    return RunResult("celery", tasks, enqueue_s, seconds,
                     f"Redis broker, 1 worker process, --pool=solo, prefetch multiplier {CELERY_PREFETCH}, "
                     "results ignored")


# ----------------------------------------------------------------------------- main


def _installed(peer: str) -> bool:
    return importlib.util.find_spec(peer) is not None


def _report(result: RunResult) -> None:
    emit(BENCH, f"{result.system}_tasks_per_s", round(result.tasks_per_s, 1), "tasks/s", tasks=result.tasks,
         seconds=round(result.run_s, 3), config=result.config)
    emit(BENCH, f"{result.system}_enqueue_per_s", round(result.tasks / result.enqueue_s, 1), "tasks/s",
         tasks=result.tasks, seconds=round(result.enqueue_s, 3))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue")
    size_flags(parser, "fewer tasks; finishes within 60 s")
    parser.add_argument("--tasks", type=int, default=0,
                        help="tasks per system (default 10,000; 1,000 quick; 50 smoke)")
    parser.add_argument("--only", choices=("docvec", *PEERS), action="append", help="run only these systems")
    parser.add_argument("--celery-worker", nargs=3, metavar=("URL", "TASKS", "RESULT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.celery_worker:
        url, count, result_file = args.celery_worker
        celery_worker_main(url, int(count), Path(result_file))
        return
    tasks = args.tasks or by_size(args, full=10_000, quick=1_000, smoke=50)
    systems = args.only or ["docvec", *PEERS]
    emit(BENCH, "machine", machine_state(), "info")
    rates: dict[str, float | None] = {}
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="docvec-bench-queue-") as tmp, bench_redis(Path(tmp) / "redis") as server:
        emit(BENCH, "redis", {"url": server.url, "appendonly": "everysec"}, "info")
        for system in systems:
            if system != "docvec" and not _installed(system):
                skipped[system] = f"{system} is not installed: {INSTALL_HINT[system]}"
                emit(BENCH, f"{system}_tasks_per_s", None, "tasks/s", skipped=skipped[system])
                rates[system] = None
                continue
            if system == "docvec":
                result = asyncio.run(_docvec(server.url, Path(tmp) / "docvec", tasks))
            elif system == "arq":
                result = asyncio.run(_arq(server.port, tasks))
            elif system == "dramatiq":
                result = _dramatiq(server.url, tasks)
            else:
                result = _celery(server.url, Path(tmp), tasks)
            _report(result)
            rates[system] = result.tasks_per_s
    peers = {p: r for p, r in rates.items() if p != "docvec" and r is not None}
    fastest = max(peers, key=lambda p: peers[p]) if peers else None
    docvec_rate = rates.get("docvec")
    ratio = round(docvec_rate / peers[fastest], 3) if fastest and docvec_rate else None
    summary(
        BENCH,
        tasks=tasks,
        **{f"{s}_tasks_per_s": (round(r, 1) if r is not None else None) for s, r in rates.items()},
        fastest_peer=fastest,
        ratio_vs_fastest_peer=ratio,
        peers_skipped=skipped,
        peer_config={"arq": ARQ_CONFIG, "dramatiq": {"worker_threads": DRAMATIQ_THREADS},
                     "celery": {"pool": "solo", "prefetch_multiplier": CELERY_PREFETCH}},
        **size_keys(args),
        loadavg_1m=machine_state()["loadavg_1m"],
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
