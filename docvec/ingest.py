"""A folder ingested as a sync, against any backend (the API through the client, or the CLI's in-process
stores): each file gets a source key (its path relative to the directory named; a file named directly:
its file name), the knowledge base is asked which keys are new, changed or unchanged, only new and changed
files are uploaded, and with `sync` the documents whose keys are gone are deleted."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from docvec.errors import DocvecClientError
from docvec.models import Progress, SyncPlan

HASH_BLOCK_BYTES = 1 << 20


class SourceError(DocvecClientError, ValueError):
    """The paths given cannot be ingested as they are (missing, empty, two files with one key)."""


@dataclass(frozen=True, slots=True)
class Source:
    """One file to ingest: where it is, its source key and the SHA-256 of its content."""

    path: Path
    key: str
    sha256: str


@dataclass(slots=True)
class IngestReport:
    """What an ingest did: the plan, and the task queued for each uploaded key (task id -> key)."""

    plan: SyncPlan
    labels: dict[str, str] = field(default_factory=dict)
    queued: list[tuple[str, str, str]] = field(default_factory=list)  # (key, outcome, task id)


class Backend(Protocol):
    """Where the knowledge base lives."""

    async def sync(self, present: dict[str, str], *, delete_missing: bool, dry_run: bool) -> SyncPlan: ...

    async def submit(self, source: Source) -> tuple[str | None, str]: ...  # (task id, outcome)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


def _visible_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts))


def collect_sources(paths: Sequence[Path | str], *, source_id: str | None = None, sync: bool = False) -> list[Source]:
    """The files under `paths` (hidden ones skipped) with their source keys and content hashes."""
    roots = [Path(p) for p in paths]
    if sync and not all(p.is_dir() for p in roots):
        raise SourceError("a sync compares directories with the knowledge base: name directories only")
    keyed: list[tuple[Path, str]] = []
    for path in roots:
        if path.is_dir():
            keyed += [(f, f.relative_to(path).as_posix()) for f in _visible_files(path)]
        elif path.is_file():
            keyed.append((path, path.name))
        else:
            raise SourceError(f"{path} does not exist")
    if source_id is not None:
        if len(keyed) != 1:
            raise SourceError("a source id names the key of one file; it was given with several")
        keyed = [(keyed[0][0], source_id)]
    if not keyed:
        raise SourceError("no files to ingest")
    seen: dict[str, Path] = {}
    for path, key in keyed:
        if key in seen:
            raise SourceError(f"{seen[key]} and {path} would both be source {key!r}; ingest them separately")
        seen[key] = path
    return [Source(path, key, sha256_file(path)) for path, key in keyed]


async def collect_sources_async(paths: Sequence[Path | str], *, source_id: str | None = None,
                                sync: bool = False) -> list[Source]:
    """`collect_sources` off the event loop (it walks directories and hashes files)."""
    return await asyncio.to_thread(collect_sources, paths, source_id=source_id, sync=sync)


async def run_ingest(backend: Backend, sources: list[Source], *, sync: bool, dry_run: bool,
                     on_progress: Callable[[Progress], None] | None = None) -> IngestReport:
    """Plan, upload what is new or changed, then delete what is gone (with `sync`)."""
    present = {s.key: s.sha256 for s in sources}
    if dry_run:
        return IngestReport(await backend.sync(present, delete_missing=sync, dry_run=True))
    plan = await backend.sync(present, delete_missing=False, dry_run=True)
    report = IngestReport(SyncPlan(unchanged=list(plan.unchanged)))
    unchanged = set(plan.unchanged)
    todo = [s for s in sources if s.key not in unchanged]
    for done, source in enumerate(todo, 1):
        task_id, outcome = await backend.submit(source)
        {"added": report.plan.added, "updated": report.plan.updated}.get(outcome, report.plan.unchanged).append(
            source.key
        )
        if task_id is not None:
            report.labels[task_id] = source.key
            report.queued.append((source.key, outcome, task_id))
        if on_progress is not None:
            on_progress(Progress("upload", done, len(todo), source.key))
    if sync:
        report.plan.deleted.extend((await backend.sync(present, delete_missing=True, dry_run=False)).deleted)
    return report
