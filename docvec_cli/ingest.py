"""`docvec ingest` and `docvec kbs reindex`: a folder ingested as a sync, in-process or through the API.

Each file gets a source key: its path relative to the directory named on the command line (a file
named directly: its file name, or `--source-id`). The knowledge base is asked which keys are new,
changed, unchanged or unfinished (`lifecycle.sync`); only new and changed files are uploaded, the
unfinished ones' tasks are waited for with the new ones, and with `--sync` the documents whose keys are
gone are deleted. `--dry-run` prints the plan and changes nothing. Files that cannot be read, and
symlinks out of a folder (unless `--follow-symlinks`), are left out and listed at the end.

In-process, the worker that runs the tasks has one consumer name per host and data dir, held under a lock
file while it runs: a run killed mid-way leaves its stream entries pending under that name, and the next
run replays them at once (a name of its own would leave them until its heartbeat expired).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import typer
from rich.console import Console
from rich.markup import escape

from common.errors import NotFound
from common.settings import Settings
from docvec import AsyncClient, SyncPlan
from docvec import ingest as planned
from docvec.client import KbBackend
from docvec.ingest import Collected, Skipped, Source, SourceError
from docvec_cli.watch import TaskView, watch_tasks

INGEST_LOCK_FILE = "ingest.lock"


@dataclass(slots=True)
class IngestReport:
    """What an ingest did: the plan, the final state of every task it waited for (those it queued and those
    of unfinished keys), and the files it left out."""

    plan: SyncPlan
    tasks: dict[str, TaskView] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)  # task id -> source key
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def failed(self) -> list[TaskView]:
        return [v for v in self.tasks.values() if v.status != "done"]

    def summary(self) -> str:
        line = self.plan.summary()
        unfinished = self.plan.unfinished
        if unfinished and self.tasks:
            done = sum(all(self.tasks.get(t) is not None and self.tasks[t].status == "done" for t in task_ids)
                       for task_ids in unfinished.values())
            line += f"; of the {len(unfinished)} unfinished, {done} finished now"
            if done < len(unfinished):
                line += f", {len(unfinished) - done} did not"
        elif unfinished:
            line += f"; the {len(unfinished)} unfinished are still queued or running (--wait waits for them)"
        if self.tasks:
            embedded = sum(v.chunks_embedded for v in self.tasks.values())
            reused = sum(v.chunks_reused for v in self.tasks.values())
            line += f"; {embedded} chunks embedded, {reused} reused"
        if self.skipped:
            errors = sum(s.error for s in self.skipped)
            line += f"; {len(self.skipped)} skipped" + (f" ({errors} could not be read)" if errors else "")
        return line

    def print(self, console: Console, *, dry_run: bool) -> int:
        """Print the failures, the files left out and the summary; the exit code: 1 when a task did not
        finish or a file could not be read, else 0."""
        for view in self.failed:
            console.print(f"[red]{view.status}[/red] {escape(self.labels.get(view.task_id, ''))} task {view.task_id}: "
                          f"{escape(view.error or '')}", highlight=False)
        if self.skipped:
            console.print(f"skipped {len(self.skipped)} file(s):", highlight=False)
            for item in self.skipped:
                mark = "[red]error[/red]" if item.error else "left out"
                console.print(f"  {mark} {escape(item.path)}: {escape(item.reason)}", highlight=False)
        if self.tasks:
            console.print(f"{len(self.tasks) - len(self.failed)}/{len(self.tasks)} documents done")
        console.print(("dry run: " if dry_run else "") + self.summary(), markup=False, highlight=False)
        return 1 if self.failed or any(s.error for s in self.skipped) else 0


def scan_sources(paths: Sequence[Path], *, source_id: str | None = None, sync: bool = False,
                 follow_symlinks: bool = False) -> Collected:
    """The files under `paths` with their source keys and content hashes, and those left out
    (`docvec.ingest.scan_sources`)."""
    try:
        return planned.scan_sources(paths, source_id=source_id, sync=sync, follow_symlinks=follow_symlinks)
    except SourceError as exc:
        raise typer.BadParameter(str(exc)) from exc


def collect_sources(paths: Sequence[Path], *, source_id: str | None = None, sync: bool = False) -> list[Source]:
    """The files under `paths` with their source keys and content hashes, strictly (`docvec.ingest`)."""
    try:
        return planned.collect_sources(paths, source_id=source_id, sync=sync)
    except SourceError as exc:
        raise typer.BadParameter(str(exc)) from exc


class Backend(planned.Backend, Protocol):
    """Where the knowledge base lives (this process's database and stores, or a docvec API), and how a
    task's progress is read for the progress bars."""

    async def fetch(self, task_ids: list[str]) -> dict[str, TaskView]: ...


async def run_ingest(backend: Backend, sources: list[Source] | Collected, *, sync: bool, dry_run: bool,
                     console: Console,
                     wait: Callable[[dict[str, str]], Awaitable[dict[str, TaskView]]] | None) -> IngestReport:
    """`docvec.ingest.run_ingest` (plan, upload what is new or changed, delete what is gone with `sync`),
    printed; then `wait` for the tasks queued and those of unfinished keys."""
    collected = sources if isinstance(sources, Collected) else Collected(list(sources))
    report = await planned.run_ingest(backend, collected.sources, sync=sync, dry_run=dry_run,
                                      keep=collected.kept_keys)
    if dry_run:
        for verb, keys in (("add", report.plan.added), ("update", report.plan.updated),
                           ("skip", report.plan.unchanged), ("wait for unfinished", list(report.plan.unfinished)),
                           ("delete", report.plan.deleted)):
            for key in keys:
                console.print(f"would {verb} {key}", markup=False, highlight=False)
        return IngestReport(report.plan, skipped=collected.skipped)
    if wait is None:
        for key, outcome, task_id in report.queued:
            console.print(f"queued {key}: {outcome}, task {task_id}", markup=False, highlight=False)
        for key, task_ids in report.plan.unfinished.items():
            console.print(f"unfinished {key}: task {', '.join(task_ids) or '(none left)'}", markup=False,
                          highlight=False)
    out = IngestReport(report.plan, labels=report.labels, skipped=collected.skipped)
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
        return SyncPlan(plan.added, plan.updated, plan.unchanged, plan.deleted, plan.unfinished)

    async def submit(self, source: Source) -> tuple[str | None, str]:
        from lifecycle import documents as lifecycle

        data = await asyncio.to_thread(source.path.read_bytes)
        submission = await lifecycle.submit(self._core, self._kb, source.filename, data, source_id=source.key)
        return (submission.task.id if submission.task else None), submission.outcome.value

    async def fetch(self, task_ids: list[str]) -> dict[str, TaskView]:
        page = await asyncio.to_thread(self._core.repo.tasks.listing, task_ids=task_ids, limit=max(1, len(task_ids)))
        return {item.task.id: _view(item.task) for item in page.items}


class ConsumerSlot:
    """The in-process worker's consumer name: `ingest-<host>-<data dir digest>`, held under an exclusive
    `flock` on `<data_dir>/ingest.lock` (the kernel drops it when the process dies, SIGKILL included). A run
    killed mid-way leaves its entries pending under that name; the next run replays them at start-up.
    While another live in-process run holds the lock, this one takes a name of its own (None): that run's
    entries are its own."""

    def __init__(self, data_path: Path) -> None:
        self._path = data_path / INGEST_LOCK_FILE
        digest = hashlib.sha256(os.fsencode(data_path.resolve())).hexdigest()[:10]
        self.name = f"ingest-{socket.gethostname()}-{digest}"
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """The fixed name if this process now holds the lock, else None. Blocking file calls: run in a thread."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        self._fd = fd
        return self.name

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None


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
            slot = ConsumerSlot(settings.data_path)

            async def wait(labels: dict[str, str]) -> dict[str, TaskView]:
                consumer = await asyncio.to_thread(slot.acquire)
                try:
                    worker = Worker(core, vectors, consumer=consumer)
                    async with asyncio.TaskGroup() as group:
                        group.create_task(worker.run())
                        try:
                            return await watch_tasks(labels, backend.fetch, console=console, show_bars=show_bars)
                        finally:
                            worker.stop()
                finally:
                    slot.release()

            return await work(core, kb, wait)
        finally:
            await vectors.close()


async def ingest_local(settings: Settings, sources: list[Source] | Collected, kb_name: str, *, sync: bool,
                       dry_run: bool, wait: bool, console: Console) -> IngestReport:
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


async def ingest_api(client: AsyncClient, sources: list[Source] | Collected, kb_name: str, *, sync: bool,
                     dry_run: bool, wait: bool, console: Console) -> IngestReport:
    await client.ensure_kb(kb_name)
    backend = ApiBackend(client, kb_name)

    async def run(labels: dict[str, str]) -> dict[str, TaskView]:
        return await watch_tasks(labels, backend.fetch, console=console, show_bars=True)

    return await run_ingest(backend, sources, sync=sync, dry_run=dry_run, console=console,
                            wait=run if wait else None)
