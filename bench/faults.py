"""Fault matrix: documents through 3 real `docvec worker` processes (real model) on a real Redis (AOF),
a private PostgreSQL, an S3-protocol object store and a `docvec vectordb` server, while every kind of
fault is injected with tasks mid-embed or mid-index:

- `worker_kill`: SIGKILL a worker running such a task (a new one starts);
- `vectordb_restart`: SIGKILL the vector store server, restart it ~5 s later (twice);
- `redis_restart`: SIGKILL Redis, restart it with its AOF; `redis_empty`: the same with the AOF removed;
- `postgres_restart`: an immediate stop and a start of the database;
- `s3_outage`: the object store unreachable for ~10 s (a proxy refusing connections; nothing is lost);
- `vectordb_disk_full`: the vector store server's files may not grow for a few seconds (RLIMIT_FSIZE);
- mid-run, 10% of the documents are reparsed and 5% deleted.

A fault counts only if at least one task was mid-embed or mid-index when it was injected. After the last
fault the fleet drains (bounded), the garbage settles, and every document is audited against the
database: `lost` (not final), `duplicate_chunks` / `missing_chunks` (of live versions), `stale_visible`
(chunks of an old version, a failed or cancelled task or a deleted document that docvec's search
returns), `failed_by_infra` (good documents that failed), `garbage_left` (chunks in the store that are
not live, blobs no document owns). A few deliberately corrupt documents must fail (and do not count as
`failed_by_infra`). `<fault>_recovery_s`: from the fault's end until every task it hit mid-stage is final
(the worst of its injections).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import by_size, emit, machine_state, prose_document, size_flags, size_keys, summary
from bench.fleet import ProcessFleet
from bench.services import MotoServer, PausableProxy, PrivatePostgres, Unavailable

BENCH = "faults"
WORKERS = 3
BUCKET = "docvec-faults"
WORKER_SETTINGS = {
    "DOCVEC_WORKER__HEARTBEAT_INTERVAL_S": "0.5", "DOCVEC_WORKER__HEARTBEAT_TIMEOUT_S": "3.0",
    "DOCVEC_WORKER__BLOCK_MS": "200", "DOCVEC_WORKER__RETRY_BACKOFF_S": "0.2",
    "DOCVEC_WORKER__JANITOR_INTERVAL_S": "1.0", "DOCVEC_WORKER__ORPHAN_GRACE_S": "2.0",
    "DOCVEC_WORKER__ORPHAN_SCAN_INTERVAL_S": "5.0", "DOCVEC_WORKER__MAX_ATTEMPTS": "3",
    "DOCVEC_WORKER__GARBAGE_SETTLE_S": "3.0", "DOCVEC_WORKER__DEPENDENCY_PROBE_S": "0.5",
    "DOCVEC_WORKER__MAX_CONCURRENT_TASKS": "4", "DOCVEC_EMBEDDING__TORCH_THREADS": "1",
    "DOCVEC_EMBEDDING__BATCH_SIZE": "16", "DOCVEC_STORAGE__MAX_ATTEMPTS": "2",
    "DOCVEC_STORAGE__RETRY_BACKOFF_S": "0.1",
}
MID_STAGES = ("embed", "index")
CORRUPT = b"\x00\x01\x02\x03 binary junk, not a document \xff\xfe" * 40


@dataclass
class FaultRecord:
    injected: int = 0
    counted: int = 0
    recovery_s: list[float] = field(default_factory=list)


@dataclass
class Run:
    """What the run did, for the audit."""

    task_of: dict[str, str] = field(default_factory=dict)  # document id -> its latest task id
    corrupt: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)
    reparsed: set[str] = field(default_factory=set)
    probes: list[tuple[str, list[float]]] = field(default_factory=list)  # (document, a chunk vector)
    stale_seen: int = 0
    stale_in_store: int = 0  # chunks not live that the store held when search was checked
    faults: dict[str, FaultRecord] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _names() -> Any:
    n = 0
    while True:
        n += 1
        yield f"faults-{n}-{uuid.uuid4().hex[:4]}"


async def _retrying(call: Callable[[], Awaitable[Any]], *, timeout_s: float = 120.0) -> Any:
    """The bench's own reads while a dependency is down: retry until it answers (bounded)."""
    from common.dependencies import dependency_of

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await call()
        except Exception as exc:
            if dependency_of(exc) is None or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


class Matrix:
    """Runs the faults against one fleet."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.rng = random.Random(args.seed)
        self.run = Run()
        self.names = _names()
        self._doc_rng = random.Random(args.seed + 1)
        self._next_doc = 0

    # ---------------------------------------------------------------- environment

    async def main(self) -> dict[str, Any]:
        from common.redisconn import EmbeddedRedis

        redis_dir = self.workdir / "redis"
        self.redis = EmbeddedRedis(redis_dir)
        self.redis_url = self.redis.start()
        self.pg = PrivatePostgres(self.workdir / "pg")
        self.moto = MotoServer(self.workdir)
        db_url, s3 = "", None
        try:
            db_url = await asyncio.to_thread(self.pg.start)
        except Unavailable as exc:
            self.run.skipped["postgres_restart"] = str(exc)
            emit(BENCH, "skip", "postgres_restart", "fault", reason=str(exc), database="sqlite")
        try:
            await asyncio.to_thread(self.moto.start)
            self.proxy = PausableProxy(self.moto.port)
            await self.proxy.start()
            s3 = self.proxy.url
        except Unavailable as exc:
            self.run.skipped["s3_outage"] = str(exc)
            emit(BENCH, "skip", "s3_outage", "fault", reason=str(exc), storage="local")
        env = dict(WORKER_SETTINGS)
        if db_url:
            env["DOCVEC_DB__URL"] = db_url
        if s3:
            env.update({"DOCVEC_STORAGE__BACKEND": "s3", "DOCVEC_STORAGE__BUCKET": BUCKET,
                        "DOCVEC_STORAGE__ENDPOINT_URL": s3, "DOCVEC_STORAGE__REGION": "us-east-1",
                        "DOCVEC_STORAGE__ACCESS_KEY_ID": "testing", "DOCVEC_STORAGE__SECRET_ACCESS_KEY": "testing",
                        "DOCVEC_STORAGE__CREATE_BUCKET": "true"})
        self.prefix = f"faults{uuid.uuid4().hex[:6]}"
        self.fleet = ProcessFleet(workdir=self.workdir, redis_url=self.redis_url, prefix=self.prefix, settings_env=env)
        try:
            return await self._with_fleet(db_url, s3)
        finally:
            self.fleet.stop()
            self.redis.stop()
            await asyncio.to_thread(self.pg.stop)
            self.moto.stop()

    def _settings(self, db_url: str, s3: str | None) -> Any:
        from common.settings import Settings

        storage: dict[str, Any] = {"max_attempts": 2, "retry_backoff_s": 0.1}
        if s3:
            storage.update(backend="s3", bucket=BUCKET, endpoint_url=s3, region="us-east-1", access_key_id="testing",
                           secret_access_key="testing", create_bucket=True)
        return Settings(data_dir=str(self.fleet.data_dir), redis={"url": self.redis_url, "prefix": self.prefix},
                        db={"url": db_url}, storage=storage, vectordb={"uri": self.fleet.vectordb_url},
                        worker={"garbage_settle_s": 3.0})

    async def _with_fleet(self, db_url: str, s3: str | None) -> dict[str, Any]:
        import vectordb
        from common.runtime import open_core
        from lifecycle import documents as lifecycle
        from vectordb.chunkstore import ChunkStore

        self.fleet.start_server()
        settings = self._settings(db_url, s3)
        async with open_core(settings) as core:  # this process never embeds: no model is loaded
            self.core = core
            self.client = vectordb.connect(self.fleet.vectordb_url, retry_attempts=2)
            self.chunks = ChunkStore(self.client)
            try:
                self.kb = await lifecycle.create_kb(core, "faults", tenant="default", chunks=self.chunks)
                # Half now, the rest a slice after every fault: there is always work mid-stage to hit.
                await self._submit(self.args.documents // 2)
                emit(BENCH, "submitted", len(self.run.task_of), "documents", of=self.args.documents)
                for _ in range(WORKERS):
                    self.fleet.start_worker(next(self.names))
                started = time.monotonic()
                await self._faults()
                drained = await self._drain()
                await self._settle_garbage()
                audit = await self._audit()
            finally:
                await self.client.close()
        return {**audit, "elapsed_s": round(time.monotonic() - started, 1), "drained": drained}

    # ---------------------------------------------------------------- documents

    async def _submit(self, count: int) -> None:
        """Submit the next `count` documents (varied sizes; one in fifty corrupt)."""
        from lifecycle import documents as lifecycle

        for _ in range(count):
            i = self._next_doc
            if i >= self.args.documents:
                return
            self._next_doc += 1
            if i % 50 == 7:  # a few that no retry can save: they must fail, and fast
                submission = await _retrying(
                    lambda i=i: lifecycle.submit(self.core, self.kb, f"broken{i}.txt", CORRUPT))
                self.run.corrupt.add(submission.document.id)
            else:
                size = self._doc_rng.choice([1, 1, 2, 2, 3, 4, 6, 10])
                text = prose_document(self._doc_rng, sections=size, paragraphs=2, sentences=5)
                submission = await _retrying(
                    lambda i=i, text=text: lifecycle.submit(self.core, self.kb, f"doc{i}.md", text.encode()))
            assert submission.task is not None  # every name is new
            self.run.task_of[submission.document.id] = submission.task.id

    async def _mid_stage(self) -> list[str]:
        """Tasks running the embed or index stage right now (as the database last heard)."""
        running = await asyncio.to_thread(self.core.repo.tasks.query, status="running", limit=1000)
        return [t.id for t in running if t.stage in MID_STAGES]

    async def _finished(self) -> int:
        counts = await _retrying(lambda: asyncio.to_thread(self.core.repo.tasks.counts))
        return int(counts["done"] + counts["failed"] + counts["cancelled"])

    # ---------------------------------------------------------------- faults

    async def _faults(self) -> None:
        slice_size = -(-(self.args.documents - self.args.documents // 2) // 10)  # ten slices, rounded up
        plan: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("worker_kill", self._kill_worker),
            ("vectordb_restart", self._restart_vectordb),
            ("redis_restart", lambda: self._restart_redis(empty=False)),
            ("postgres_restart", self._restart_postgres),
            ("worker_kill", self._kill_worker),
            ("mutations", self._reparse_and_delete),
            ("s3_outage", self._s3_outage),
            ("vectordb_disk_full", self._disk_full),
            ("vectordb_restart", self._restart_vectordb),
            ("redis_empty", lambda: self._restart_redis(empty=True)),
            ("worker_kill", self._kill_worker),
        ]
        first = True
        watchers: list[asyncio.Task[None]] = []  # each fault's recovery, measured while the next ones run
        for name, inject in plan:
            if name in self.run.skipped:
                continue
            if name == "mutations":  # not a fault: users changing documents while faults go on
                await inject()
                continue
            record = self.run.faults.setdefault(name, FaultRecord())
            # The first wait also covers the workers loading the model.
            mid = await self._wait_mid_stage(self.args.wait_mid_stage_s + (60.0 if first else 0.0))
            first = False
            t0 = time.monotonic()
            await inject()
            healed = time.monotonic()
            record.injected += 1
            record.counted += int(bool(mid))
            watchers.append(asyncio.create_task(self._recovery(name, record, mid, healed)))
            emit(BENCH, "fault", name, "event", at=time.strftime("%H:%M:%S", time.gmtime(time.time() - (healed - t0))),
                 mid_stage_tasks=len(mid), fault_s=round(healed - t0, 1), finished=await self._finished())
            self._check_workers()
            await self._submit(slice_size)
            await asyncio.sleep(self.args.gap_s)  # spread the faults over the run
        await self._submit(self.args.documents)  # whatever is left
        emit(BENCH, "submitted", len(self.run.task_of), "documents", corrupt=len(self.run.corrupt))
        await asyncio.gather(*watchers)

    async def _wait_mid_stage(self, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            mid = await _retrying(self._mid_stage)
            if mid or time.monotonic() > deadline:
                return list(mid)
            await asyncio.sleep(0.1)

    async def _recovery(self, name: str, record: FaultRecord, hit: list[str], healed: float,
                        timeout_s: float = 180.0) -> None:
        """Record the seconds from the fault's end until every task it hit mid-stage is final (not
        recorded when it hit none, or not within the bound)."""
        while hit and time.monotonic() - healed < timeout_s:
            tasks = await _retrying(lambda: asyncio.to_thread(self.core.repo.tasks.get_many, hit))
            if all(t.is_terminal for t in tasks.values()):  # a deleted document's task is gone: final too
                record.recovery_s.append(round(time.monotonic() - healed, 2))
                emit(BENCH, "recovered", name, "fault", recovery_s=record.recovery_s[-1], tasks=len(hit))
                return
            await asyncio.sleep(0.25)

    def _check_workers(self) -> None:
        for name, code in self.fleet.dead_workers().items():
            raise RuntimeError(f"worker {name} died on its own ({code}):\n" + self.fleet.tail(f"worker-{name}.log"))

    async def _kill_worker(self) -> None:
        running = await asyncio.to_thread(self.core.repo.tasks.query, status="running", limit=1000)
        busy = sorted({t.worker for t in running if t.stage in MID_STAGES and t.worker in self.fleet.workers})
        victim = self.rng.choice(busy or sorted(self.fleet.workers))
        self.fleet.kill(victim)
        self.fleet.start_worker(next(self.names))

    async def _restart_vectordb(self) -> None:
        self.fleet.kill_server()
        await asyncio.sleep(self.args.outage_s / 2)
        await asyncio.to_thread(self.fleet.start_server, same_port=True)

    async def _restart_redis(self, *, empty: bool) -> None:
        from common.redisconn import EmbeddedRedis

        os.kill(int(self.redis.pidfile.read_text().strip()), signal.SIGKILL)
        await asyncio.to_thread(self.redis.stop)
        if empty:  # the AOF is lost too: Redis comes back with nothing
            for path in self.redis.dir.glob("appendonly*"):
                if path.is_dir():
                    for part in path.iterdir():
                        part.unlink()
                else:
                    path.unlink()
        await asyncio.sleep(1.0)
        self.redis = EmbeddedRedis(self.workdir / "redis")
        if await asyncio.to_thread(self.redis.start) != self.redis_url:
            raise RuntimeError("the restarted redis came back on another address")

    async def _restart_postgres(self) -> None:
        await asyncio.to_thread(self.pg.restart)

    async def _s3_outage(self) -> None:
        await self.proxy.pause()
        await asyncio.sleep(self.args.outage_s)
        await self.proxy.resume()

    async def _disk_full(self) -> None:
        server = self.fleet.server
        assert server is not None
        wal = list((self.fleet.data_dir / "vectors").glob("collections/*/wal/ch*/*.log"))
        limit = max((p.stat().st_size for p in wal), default=0) + 1
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        try:
            await asyncio.sleep(self.args.outage_s / 3)
        finally:
            resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    async def _reparse_and_delete(self) -> None:
        """10% of the documents reparsed, 5% deleted, while the fleet works (and stale chunks exist)."""
        from common.errors import Conflict, NotFound
        from lifecycle import documents as lifecycle

        n_reparse = max(1, self.args.documents // 10)
        n_delete = max(1, self.args.documents // 20)
        deadline = time.monotonic() + 60
        while len(self.run.reparsed) < n_reparse and time.monotonic() < deadline:
            # A document can be reparsed once its parse is done (a new version, the old one live meanwhile).
            tasks = await asyncio.to_thread(self.core.repo.tasks.get_many, list(self.run.task_of.values()))
            done = [d for d, t in self.run.task_of.items() if d not in self.run.reparsed
                    and tasks.get(t) is not None and tasks[t].status == "done"]
            for document_id in self.rng.sample(done, min(len(done), n_reparse - len(self.run.reparsed))):
                await self._probe_vectors(document_id)
                try:
                    task = await lifecycle.reparse(self.core, document_id)
                except Conflict:
                    continue
                self.run.task_of[document_id] = task.id
                self.run.reparsed.add(document_id)
            await asyncio.sleep(0.5)
        # Deleted: most of them done (their chunks are in the store when search is checked), the others
        # still queued or running (their tasks are cancelled).
        tasks = await asyncio.to_thread(self.core.repo.tasks.get_many, list(self.run.task_of.values()))
        candidates = [d for d in self.run.task_of if d not in self.run.corrupt and d not in self.run.reparsed]
        done = [d for d in candidates if tasks.get(self.run.task_of[d]) and tasks[self.run.task_of[d]].status == "done"]
        active = [d for d in candidates if d not in done]
        chosen = self.rng.sample(done, min(len(done), n_delete - n_delete // 3))
        chosen += self.rng.sample(active, min(len(active), n_delete - len(chosen)))
        for document_id in chosen:
            await self._probe_vectors(document_id)
            try:
                await lifecycle.delete_document(self.core, document_id)
            except NotFound:
                continue
            self.run.deleted.add(document_id)
        # While the replaced and deleted chunks are still in the store, search must not return them.
        stored = await self.chunks.document_versions(self.kb.collection)
        live = await asyncio.to_thread(self.core.repo.documents.live_versions, list(stored))
        self.run.stale_in_store = sum(n for d, vs in stored.items() for v, n in vs.items() if live.get(d) != v)
        self.run.stale_seen += await self._stale_hits()
        emit(BENCH, "mutations", {"reparsed": len(self.run.reparsed), "deleted": len(self.run.deleted),
                                  "not_live_chunks_in_store": self.run.stale_in_store}, "documents")

    async def _probe_vectors(self, document_id: str) -> None:
        rows = await self.client.query(self.kb.collection, filter=f'document_id == "{document_id}"',
                                       output_fields=["vector"], limit=2)
        self.run.probes.extend((document_id, list(r["vector"])) for r in rows)

    async def _stale_hits(self) -> int:
        """Hits docvec's search returns that are not live: a deleted document, or not its live version."""
        import numpy as np

        from lifecycle import documents as lifecycle

        async def search(vector: list[float]) -> list[Any]:
            return await lifecycle.search(self.core.repo, self.chunks, self.kb, np.asarray(vector, np.float32), 10)

        stale = 0
        for _, vector in self.run.probes:
            hits = await _retrying(lambda v=vector: search(v))  # type: ignore[misc]
            live = await asyncio.to_thread(self.core.repo.documents.live_versions, [h.document_id for h in hits])
            stale += sum(1 for h in hits if live.get(h.document_id) != h.parse_version)
        return stale

    # ---------------------------------------------------------------- the end

    async def _drain(self) -> bool:
        deadline = time.monotonic() + self.args.drain_s
        while time.monotonic() < deadline:
            ids = list(self.run.task_of.values())
            tasks = await _retrying(lambda: asyncio.to_thread(self.core.repo.tasks.get_many, ids))  # noqa: B023
            live = [t for d, t in self.run.task_of.items() if d not in self.run.deleted]
            if all(tasks.get(t) is not None and tasks[t].is_terminal for t in live):
                return True
            self._check_workers()
            await asyncio.sleep(0.5)
        return False

    async def _settle_garbage(self) -> None:
        deadline = time.monotonic() + self.args.garbage_s
        while time.monotonic() < deadline:
            count, _ = await asyncio.to_thread(self.core.repo.garbage.stats)
            if count == 0:
                return
            await asyncio.sleep(0.5)

    async def _audit(self) -> dict[str, Any]:
        repo = self.core.repo
        tasks = await asyncio.to_thread(repo.tasks.get_many, list(self.run.task_of.values()))
        stored = await self.chunks.document_versions(self.kb.collection)
        done = failed = lost = duplicate = missing = failed_by_infra = 0
        attempts: list[int] = []
        for document_id, task_id in self.run.task_of.items():
            if document_id in self.run.deleted:
                continue
            task = tasks.get(task_id)
            if task is None or not task.is_terminal:
                lost += 1
                continue
            attempts.append(task.attempts)
            if task.status == "failed":
                failed += 1
                failed_by_infra += int(document_id not in self.run.corrupt)
                continue
            if task.status != "done":
                lost += 1
                continue
            done += 1
            doc = await asyncio.to_thread(repo.documents.get, document_id)
            rows = await self.client.query(self.kb.collection, filter=f'document_id == "{document_id}"',
                                           output_fields=["ordinal", "parse_version"])
            ordinals = [int(r["ordinal"]) for r in rows if int(r["parse_version"]) == doc.parse_version]
            duplicate += len(ordinals) - len(set(ordinals))
            missing += len(set(range(doc.chunk_count)) - set(ordinals))
        histogram: dict[int, int] = {}
        for n in attempts:
            histogram[n] = histogram.get(n, 0) + 1
        emit(BENCH, "attempts", dict(sorted(histogram.items())), "tasks")
        for task in sorted(tasks.values(), key=lambda t: -t.attempts)[:3]:
            if task.attempts > 2:  # why a task needed several deliveries: its own log says
                emit(BENCH, "many_attempts", task.id, "task", attempts=task.attempts, status=task.status,
                     log=[line for line in task.progress_lines if "attempt" in line or "retry" in line])
        live = await asyncio.to_thread(repo.documents.live_versions, list(stored))
        stale_chunks = sum(n for d, versions in stored.items() for v, n in versions.items() if live.get(d) != v)
        orphan_blobs = await self._orphan_blobs()
        garbage_rows, _ = await asyncio.to_thread(repo.garbage.stats)
        stale_visible = self.run.stale_seen + await self._stale_hits()
        result: dict[str, Any] = {
            "documents": len(self.run.task_of), "done": done, "failed": failed, "lost": lost,
            "duplicate_chunks": duplicate, "missing_chunks": missing, "stale_visible": stale_visible,
            "failed_by_infra": failed_by_infra, "garbage_left": stale_chunks + orphan_blobs,
            "garbage_rows_left": garbage_rows, "corrupt_documents": len(self.run.corrupt),
            "reparsed": len(self.run.reparsed), "deleted": len(self.run.deleted),
            "not_live_chunks_searched_past": self.run.stale_in_store,
            "max_attempts_used": max(attempts, default=0),
        }
        for name, record in self.run.faults.items():
            result[f"{name}_count"] = record.counted
            result[f"{name}_injected"] = record.injected
            result[f"{name}_recovery_s"] = max(record.recovery_s) if record.recovery_s else None
        for name, reason in self.run.skipped.items():
            result[f"{name}_count"] = 0
            result[f"{name}_skipped"] = reason
        return result

    async def _orphan_blobs(self) -> int:
        """Blobs in the bucket that no document row names (uploads of deleted documents left behind)."""
        if "s3_outage" in self.run.skipped:
            return 0
        import boto3  # type: ignore[import-untyped]

        s3 = boto3.client("s3", endpoint_url=self.moto.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
                for o in page.get("Contents", [])]
        owned = {d.blob_key for d in await asyncio.to_thread(self.core.repo.documents.of_kb, self.kb.id, limit=100_000)}
        return sum(1 for key in keys if key not in owned)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.faults")
    size_flags(parser, "a smaller matrix, within 120 s")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--documents", type=int, default=None)
    args = parser.parse_args()
    documents, args.outage_s, args.wait_mid_stage_s, args.gap_s, args.drain_s, args.garbage_s = by_size(
        args, full=(240, 10.0, 30.0, 4.0, 600.0, 60.0), quick=(60, 4.0, 10.0, 0.0, 60.0, 20.0),
        smoke=(12, 1.0, 2.0, 0.0, 60.0, 10.0),
    )
    args.documents = args.documents or documents
    emit(BENCH, "machine", machine_state(), "info")
    emit(BENCH, "config", {"workers": WORKERS, "max_attempts": int(WORKER_SETTINGS["DOCVEC_WORKER__MAX_ATTEMPTS"]),
                           "tasks_per_worker": int(WORKER_SETTINGS["DOCVEC_WORKER__MAX_CONCURRENT_TASKS"]),
                           "garbage_settle_s": float(WORKER_SETTINGS["DOCVEC_WORKER__GARBAGE_SETTLE_S"])}, "info")
    with tempfile.TemporaryDirectory(prefix="docvec-faults-") as tmp:
        result = asyncio.run(Matrix(args, Path(tmp)).main())
    summary(BENCH, **result, **size_keys(args))


if __name__ == "__main__":
    main()
