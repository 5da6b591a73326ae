"""`docvec ingest` and `docvec kbs reindex`: a folder ingested as a sync, in-process or through the API.

Each file gets a source key: its path relative to the directory named on the command line (a file
named directly: its file name, or `--source-id`). The knowledge base is asked which keys are new,
changed or unchanged (`lifecycle.sync`); only new and changed files are uploaded, and with `--sync`
the documents whose keys are gone are deleted. `--dry-run` prints the plan and changes nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import typer
from rich.console import Console

from common.errors import NotFound
from common.settings import Settings
from docvec_cli.watch import TaskView, watch_tasks
from lifecycle.sync import SyncPlan

HASH_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class Source:
    path: Path
    key: str
    sha256: str


@dataclass(slots=True)
class IngestReport:
    """What an ingest did: the plan, and the final state of every task it queued."""

    plan: SyncPlan
    tasks: dict[str, TaskView] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # task id -> source key

    def summary(self) -> str:
        line = self.plan.summary()
        if self.tasks:
            embedded = sum(v.chunks_embedded for v in self.tasks.values())
            reused = sum(v.chunks_reused for v in self.tasks.values())
            line += f"; {embedded} chunks embedded, {reused} reused"
        return line


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


def _visible_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def collect_sources(paths: list[Path], *, source_id: str | None = None, sync: bool = False) -> list[Source]:
    """The files under `paths` with their source keys and content hashes."""
    if sync and not all(p.is_dir() for p in paths):
        raise typer.BadParameter("--sync compares directories with the knowledge base: name directories only")
    keyed: list[tuple[Path, str]] = []
    for path in paths:
        if path.is_dir():
            keyed += [(f, f.relative_to(path).as_posix()) for f in _visible_files(path)]
        elif path.is_file():
            keyed.append((path, path.name))
        else:
            raise typer.BadParameter(f"{path} does not exist")
    if source_id is not None:
        if len(keyed) != 1:
            raise typer.BadParameter("--source-id names the key of one file; it was given with several")
        keyed = [(keyed[0][0], source_id)]
    if not keyed:
        raise typer.BadParameter("no files to ingest")
    seen: dict[str, Path] = {}
    for path, key in keyed:
        if key in seen:
            raise typer.BadParameter(f"{seen[key]} and {path} would both be source {key!r}; ingest them separately")
        seen[key] = path
    return [Source(path, key, _sha256(path)) for path, key in keyed]


class Backend(Protocol):
    """Where the knowledge base lives: this process's database and stores, or a docvec API."""

    async def sync(self, present: dict[str, str], *, delete_missing: bool, dry_run: bool) -> SyncPlan: ...

    async def submit(self, source: Source) -> tuple[str | None, str]: ...  # (task id, outcome)

    async def fetch(self, task_id: str) -> TaskView: ...


async def run_ingest(backend: Backend, sources: list[Source], *, sync: bool, dry_run: bool, console: Console,
                     wait: Callable[[dict[str, str]], Awaitable[dict[str, TaskView]]] | None) -> IngestReport:
    """Plan, upload what is new or changed, delete what is gone (with `sync`), then `wait` for the tasks."""
    present = {s.key: s.sha256 for s in sources}
    if dry_run:
        plan = await backend.sync(present, delete_missing=sync, dry_run=True)
        for verb, keys in (("add", plan.added), ("update", plan.updated), ("skip", plan.unchanged),
                           ("delete", plan.deleted)):
            for key in keys:
                console.print(f"would {verb} {key}")
        return IngestReport(plan)
    plan = await backend.sync(present, delete_missing=False, dry_run=True)
    report = IngestReport(SyncPlan(unchanged=list(plan.unchanged)))
    for source in sources:
        if source.key in plan.unchanged:
            continue
        task_id, outcome = await backend.submit(source)
        {"added": report.plan.added, "updated": report.plan.updated}.get(outcome, report.plan.unchanged).append(
            source.key
        )
        if task_id is not None:
            report.labels[task_id] = source.key
            if wait is None:
                console.print(f"queued {source.key}: {outcome}, task {task_id}")
    if sync:
        report.plan.deleted.extend((await backend.sync(present, delete_missing=True, dry_run=False)).deleted)
    if wait is not None and report.labels:
        report.tasks = await wait(report.labels)
    return report


# ------------------------------------------------------------------------------------------- in-process


class LocalBackend:
    def __init__(self, core: Any, kb: Any) -> None:
        self._core = core
        self._kb = kb

    async def sync(self, present: dict[str, str], *, delete_missing: bool, dry_run: bool) -> SyncPlan:
        from lifecycle import sync

        return await sync.sync(self._core, self._kb, present, delete_missing=delete_missing, dry_run=dry_run)

    async def submit(self, source: Source) -> tuple[str | None, str]:
        from lifecycle import documents as lifecycle

        data = await asyncio.to_thread(source.path.read_bytes)
        submission = await lifecycle.submit(self._core, self._kb, source.path.name, data, source_id=source.key)
        return (submission.task.id if submission.task else None), submission.outcome.value

    async def fetch(self, task_id: str) -> TaskView:
        t = await asyncio.to_thread(self._core.repo.tasks.get, task_id)
        return TaskView(t.id, t.status, t.progress, t.stage, t.error, t.chunks_embedded, t.chunks_reused)


async def _with_local_worker(settings: Settings, kb_name: str, console: Console, show_bars: bool,
                             work: Callable[[Any, Any, Callable[[dict[str, str]], Awaitable[dict[str, TaskView]]]],
                                            Awaitable[Any]]) -> Any:
    """Open this process's stores and a worker; run `work(core, kb, wait)`, where `wait` runs the tasks."""
    import vectordb
    from common.runtime import open_core
    from lifecycle import documents as lifecycle
    from worker.consumer import Worker

    async with open_core(settings) as core:
        vectors = vectordb.connect(settings.vectordb_uri, token=settings.vectordb.token)
        try:
            try:
                kb = await asyncio.to_thread(core.repo.kbs.get, kb_name, tenant="default")
            except NotFound:
                kb = await lifecycle.create_kb(core, kb_name, tenant="default")
            backend = LocalBackend(core, kb)

            async def wait(labels: dict[str, str]) -> dict[str, TaskView]:
                worker = Worker(core, vectors)
                async with asyncio.TaskGroup() as group:
                    group.create_task(worker.run())
                    try:
                        return await watch_tasks(labels, backend.fetch, console=console, show_bars=show_bars)
                    finally:
                        worker.stop()

            return await work(core, kb, wait)
        finally:
            await vectors.close()


async def ingest_local(settings: Settings, sources: list[Source], kb_name: str, *, sync: bool, dry_run: bool,
                       wait: bool, console: Console) -> IngestReport:
    async def work(core: Any, kb: Any, run: Callable[[dict[str, str]], Awaitable[dict[str, TaskView]]]) -> Any:
        return await run_ingest(LocalBackend(core, kb), sources, sync=sync, dry_run=dry_run, console=console,
                                wait=run)

    report: IngestReport = await _with_local_worker(settings, kb_name, console, wait, work)
    return report


async def reindex_local(settings: Settings, kb_name: str, *, chunk_tokens: int | None, overlap_tokens: int | None,
                        wait: bool, console: Console) -> dict[str, TaskView]:
    from lifecycle import sync

    async def work(core: Any, kb: Any, run: Callable[[dict[str, str]], Awaitable[dict[str, TaskView]]]) -> Any:
        _, tasks = await sync.reindex(core, kb, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
        return await run({t.id: t.document_id for t in tasks}) if tasks else {}

    views: dict[str, TaskView] = await _with_local_worker(settings, kb_name, console, wait, work)
    return views


# ---------------------------------------------------------------------------------------------- the API


class ApiBackend:
    def __init__(self, client: httpx.AsyncClient, base: str, kb_name: str,
                 check: Callable[[httpx.Response], Any]) -> None:
        self._client = client
        self._kb_url = f"{base}/kbs/{kb_name}"
        self._base = base
        self._check = check

    async def sync(self, present: dict[str, str], *, delete_missing: bool, dry_run: bool) -> SyncPlan:
        body = self._check(await self._client.post(f"{self._kb_url}/sync", json={
            "sources": present, "delete_missing": delete_missing, "dry_run": dry_run,
        }))
        return SyncPlan(body["added"], body["updated"], body["unchanged"], body["deleted"])

    async def submit(self, source: Source) -> tuple[str | None, str]:
        payload = await asyncio.to_thread(source.path.read_bytes)
        body = self._check(await self._client.post(
            f"{self._kb_url}/documents", files=[("files", (source.path.name, payload))],
            data={"source_id": source.key},
        ))
        (doc,) = body["documents"]
        return doc["task_id"], doc["outcome"]

    async def fetch(self, task_id: str) -> TaskView:
        t = self._check(await self._client.get(f"{self._base}/tasks/{task_id}"))
        return TaskView(t["id"], t["status"], t["progress"], t["stage"], t["error"], t.get("chunks_embedded", 0),
                        t.get("chunks_reused", 0))


async def ensure_kb(client: httpx.AsyncClient, base: str, kb_name: str, check: Callable[[httpx.Response], Any]) -> None:
    response = await client.get(f"{base}/kbs/{kb_name}")
    if response.status_code == 404:
        check(await client.post(f"{base}/kbs", json={"name": kb_name}))
    else:
        check(response)


async def ingest_api(client: httpx.AsyncClient, base: str, sources: list[Source], kb_name: str, *, sync: bool,
                     dry_run: bool, wait: bool, console: Console,
                     check: Callable[[httpx.Response], Any]) -> IngestReport:
    await ensure_kb(client, base, kb_name, check)
    backend = ApiBackend(client, base, kb_name, check)

    async def run(labels: dict[str, str]) -> dict[str, TaskView]:
        return await watch_tasks(labels, backend.fetch, console=console, show_bars=True)

    return await run_ingest(backend, sources, sync=sync, dry_run=dry_run, console=console,
                            wait=run if wait else None)
