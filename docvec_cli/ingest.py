"""`docvec ingest` and `docvec kbs reindex`: a folder ingested as a sync, in-process or through the API.

Each file gets a source key: its path relative to the directory named on the command line (a file
named directly: its file name, or `--source-id`). The knowledge base is asked which keys are new,
changed or unchanged (`lifecycle.sync`); only new and changed files are uploaded, and with `--sync`
the documents whose keys are gone are deleted. `--dry-run` prints the plan and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import typer
from rich.console import Console

from common.errors import NotFound
from common.settings import Settings
from docvec import AsyncClient, SyncPlan
from docvec import ingest as planned
from docvec.client import KbBackend
from docvec.ingest import Source, SourceError
from docvec_cli.watch import TaskView, watch_tasks


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


def collect_sources(paths: Sequence[Path], *, source_id: str | None = None, sync: bool = False) -> list[Source]:
    """The files under `paths` with their source keys and content hashes (`docvec.ingest`)."""
    try:
        return planned.collect_sources(paths, source_id=source_id, sync=sync)
    except SourceError as exc:
        raise typer.BadParameter(str(exc)) from exc


class Backend(planned.Backend, Protocol):
    """Where the knowledge base lives (this process's database and stores, or a docvec API), and how a
    task's progress is read for the progress bars."""

    async def fetch(self, task_ids: list[str]) -> dict[str, TaskView]: ...


async def run_ingest(backend: Backend, sources: list[Source], *, sync: bool, dry_run: bool, console: Console,
                     wait: Callable[[dict[str, str]], Awaitable[dict[str, TaskView]]] | None) -> IngestReport:
    """`docvec.ingest.run_ingest` (plan, upload what is new or changed, delete what is gone with `sync`),
    printed; then `wait` for the tasks."""
    report = await planned.run_ingest(backend, sources, sync=sync, dry_run=dry_run)
    if dry_run:
        for verb, keys in (("add", report.plan.added), ("update", report.plan.updated),
                           ("skip", report.plan.unchanged), ("delete", report.plan.deleted)):
            for key in keys:
                console.print(f"would {verb} {key}")
        return IngestReport(report.plan)
    if wait is None:
        for key, outcome, task_id in report.queued:
            console.print(f"queued {key}: {outcome}, task {task_id}")
    out = IngestReport(report.plan, labels=report.labels)
    if wait is not None and report.labels:
        out.tasks = await wait(report.labels)
    return out


# ------------------------------------------------------------------------------------------- in-process


class LocalBackend:
    def __init__(self, core: Any, kb: Any) -> None:
        self._core = core
        self._kb = kb

    async def sync(self, present: dict[str, str], *, delete_missing: bool, dry_run: bool) -> SyncPlan:
        from lifecycle import sync

        plan = await sync.sync(self._core, self._kb, present, delete_missing=delete_missing, dry_run=dry_run)
        return SyncPlan(plan.added, plan.updated, plan.unchanged, plan.deleted)

    async def submit(self, source: Source) -> tuple[str | None, str]:
        from lifecycle import documents as lifecycle

        data = await asyncio.to_thread(source.path.read_bytes)
        submission = await lifecycle.submit(self._core, self._kb, source.path.name, data, source_id=source.key)
        return (submission.task.id if submission.task else None), submission.outcome.value

    async def fetch(self, task_ids: list[str]) -> dict[str, TaskView]:
        page = await asyncio.to_thread(self._core.repo.tasks.listing, task_ids=task_ids, limit=max(1, len(task_ids)))
        return {item.task.id: _view(item.task) for item in page.items}


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


class ApiBackend(KbBackend):
    """The client's backend, with task progress for the bars."""

    async def fetch(self, task_ids: list[str]) -> dict[str, TaskView]:
        return {task_id: _view(t) for task_id, t in (await self.client.get_tasks(task_ids)).items()}


def _view(t: Any) -> TaskView:
    """A task record (the database's or the client's: the same fields) as the progress bars read it."""
    return TaskView(t.id, str(t.status), t.progress, t.stage, t.error, t.chunks_embedded, t.chunks_reused)


async def ingest_api(client: AsyncClient, sources: list[Source], kb_name: str, *, sync: bool, dry_run: bool,
                     wait: bool, console: Console) -> IngestReport:
    await client.ensure_kb(kb_name)
    backend = ApiBackend(client, kb_name)

    async def run(labels: dict[str, str]) -> dict[str, TaskView]:
        return await watch_tasks(labels, backend.fetch, console=console, show_bars=True)

    return await run_ingest(backend, sources, sync=sync, dry_run=dry_run, console=console,
                            wait=run if wait else None)
