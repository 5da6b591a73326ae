"""`docvec ingest` as a sync, in-process and through the API: a re-run over an unchanged folder is a no-op,
an edit re-embeds only the chunks it changed, `--sync` deletes what is gone."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from rich.console import Console

from api.app import create_app
from common.db import KbRecord
from common.runtime import Core
from docvec import AsyncClient
from docvec import ingest as planned
from docvec_cli import ingest as ingesting
from docvec_cli.watch import TaskView, watch_tasks
from lifecycle import documents as lifecycle
from tests.docvec.folders import LATIN1_KEY, LATIN1_NAME_SHOWN, odd_folder
from tests.worker.helpers import running_worker
from vectordb.chunkstore import ChunkStore

SECTIONS = {
    "rivers.md": ["Rivers carry water from mountains to the sea.", "Deltas form where rivers slow down.",
                  "Floods renew the soil of a valley."],
    "glaciers.md": ["Glaciers are rivers of ice that move slowly.", "Moraines mark where a glacier ended.",
                    "Ice cores hold old air bubbles."],
    "deserts/sahara.md": ["The Sahara is the largest hot desert.", "Dunes move with the wind.",
                          "Oases appear where water reaches the surface."],
    "deserts/gobi.md": ["The Gobi is a cold desert in Asia.", "Winters there are long and harsh.",
                        "Dinosaur fossils were found in the Gobi."],
}
OLD_TEXT = "Deltas form where rivers slow down."
NEW_TEXT = "Estuaries mix fresh river water with salt water from the tides."


def _markdown(title: str, paragraphs: list[str]) -> str:
    body = "\n\n".join(f"## Part {i}\n\n{p}" for i, p in enumerate(paragraphs, 1))
    return f"# {title}\n\n{body}\n"


def _write(root: Path, name: str, paragraphs: list[str]) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_markdown(name, paragraphs), encoding="utf-8")


class Harness:
    """One backend (in-process or the API) with a worker running, and what the tests look at."""

    def __init__(self, core: Core, kb: KbRecord, chunks: ChunkStore, backend: Any) -> None:
        self.core, self.kb, self.chunks, self.backend = core, kb, chunks, backend

    async def ingest(self, root: Path, *, sync: bool = False, dry_run: bool = False,
                     wait: bool = True) -> ingesting.IngestReport:
        sources = ingesting.scan_sources([root], sync=sync)

        async def watch(labels: dict[str, str]) -> dict[str, TaskView]:
            return await watch_tasks(labels, self.backend.fetch, console=Console(quiet=True), show_bars=False)

        return await ingesting.run_ingest(self.backend, sources, sync=sync, dry_run=dry_run,
                                          console=Console(quiet=True), wait=watch if wait else None)

    async def task_count(self) -> int:
        return len(await asyncio.to_thread(self.core.repo.tasks.query, kb_id=self.kb.id, limit=1000))

    async def search(self, text: str, k: int = 20) -> list[tuple[str, str]]:
        embedder = await self.core.embedders.get()
        vector = (await asyncio.to_thread(embedder.encode, [text], 1))[0]
        hits = await lifecycle.search(self.core.repo, self.chunks, self.kb, np.asarray(vector), k)
        return [(h.chunk_id, h.text) for h in hits]

    async def live_texts(self) -> list[str]:
        """The text of every chunk search may return (live versions of existing documents)."""
        documents = await asyncio.to_thread(self.core.repo.documents.of_kb, self.kb.id)
        live = {d.id: d.parse_version for d in documents}
        client = self.chunks._client  # noqa: SLF001 - the test reads the store directly
        rows = await client.query(self.kb.collection, filter='document_id != ""',
                                  output_fields=["document_id", "parse_version", "text"])
        return [r["text"] for r in rows if live.get(r["document_id"]) == r["parse_version"]]


@contextlib.asynccontextmanager
async def _harness(kind: str, core: Core, vectors: Any) -> AsyncIterator[Harness]:
    """A knowledge base and a backend of `kind` on it (no worker)."""
    chunks = ChunkStore(vectors)
    kb = await lifecycle.create_kb(core, "notes", tenant="default", chunks=chunks)
    if kind == "local":
        yield Harness(core, kb, chunks, ingesting.LocalBackend(core, kb))
        return
    app = create_app(core.settings, core=core, vectors=vectors)
    async with app.router.lifespan_context(app):
        key = await asyncio.to_thread(app.state.services.apikeys.create, "default", admin=True)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient("http://docvec.test", key.secret, transport=transport) as client:
            yield Harness(core, kb, chunks, ingesting.ApiBackend(client, kb.name))


@pytest.fixture(params=["local", "api"])
async def harness(request: pytest.FixtureRequest, core: Core, vectors: Any) -> AsyncIterator[Harness]:
    async with _harness(request.param, core, vectors) as made, running_worker(core, vectors):
        yield made


@pytest.fixture(params=["local", "api"])
async def idle_harness(request: pytest.FixtureRequest, core: Core, vectors: Any) -> AsyncIterator[Harness]:
    """A harness whose tasks wait: no worker runs until the test starts one."""
    async with _harness(request.param, core, vectors) as made:
        yield made


async def test_a_folder_ingested_again_costs_only_what_changed(harness: Harness, tmp_path: Path) -> None:
    root = tmp_path / "docs"
    for name, paragraphs in SECTIONS.items():
        _write(root, name, paragraphs)
    first = await harness.ingest(root)
    assert sorted(first.plan.added) == sorted(SECTIONS) and all(v.status == "done" for v in first.tasks.values())
    assert sum(v.chunks_reused for v in first.tasks.values()) == 0
    tasks_after_first = await harness.task_count()
    before = await harness.search("rivers of ice")

    again = await harness.ingest(root)
    assert sorted(again.plan.unchanged) == sorted(SECTIONS) and not again.plan.added and not again.plan.updated
    assert again.tasks == {} and await harness.task_count() == tasks_after_first, "no task for unchanged files"
    after = await harness.search("rivers of ice")
    assert after == before, "search results are identical"
    assert len({chunk_id for chunk_id, _ in after}) == len(after), "no duplicate hit"

    edited = list(SECTIONS["rivers.md"])
    edited[1] = NEW_TEXT
    _write(root, "rivers.md", edited)
    _write(root, "caves.md", ["Caves form where water dissolves limestone.", "Stalactites hang from the roof."])
    (root / "deserts" / "gobi.md").unlink()
    dry = await harness.ingest(root, sync=True, dry_run=True)
    assert (dry.plan.added, dry.plan.updated, dry.plan.deleted) == (["caves.md"], ["rivers.md"], ["deserts/gobi.md"])
    assert await harness.task_count() == tasks_after_first, "a dry run changes nothing"

    synced = await harness.ingest(root, sync=True)
    assert (synced.plan.added, synced.plan.updated, synced.plan.deleted) == (
        ["caves.md"], ["rivers.md"], ["deserts/gobi.md"])
    assert sorted(synced.plan.unchanged) == ["deserts/sahara.md", "glaciers.md"]
    documents = await asyncio.to_thread(harness.core.repo.documents.of_kb, harness.kb.id)
    assert sorted(d.source_id or "" for d in documents) == ["caves.md", "deserts/sahara.md", "glaciers.md",
                                                             "rivers.md"]
    by_key = {synced.labels[task_id]: view for task_id, view in synced.tasks.items()}
    rivers, caves = by_key["rivers.md"], by_key["caves.md"]
    assert rivers.status == caves.status == "done"
    assert rivers.chunks_embedded == 1, "only the edited paragraph's chunk is embedded again"
    assert rivers.chunks_reused >= 2
    assert caves.chunks_reused == 0 and caves.chunks_embedded >= 2
    texts = await harness.live_texts()
    assert any(NEW_TEXT in t for t in texts) and not any(OLD_TEXT in t for t in texts)
    assert not any("Gobi" in t for t in texts)
    found = await harness.search(NEW_TEXT, k=1)
    assert found and NEW_TEXT in found[0][1]


async def test_the_watch_reads_every_unfinished_task_at_once_and_survives_a_deleted_one() -> None:
    rounds: list[list[str]] = []
    states = {"a": ["running", "done"], "b": ["queued", "running", "failed"]}

    async def fetch(task_ids: list[str]) -> dict[str, TaskView]:
        rounds.append(sorted(task_ids))
        views = {}
        for task_id in task_ids:
            if task_id in states:
                status = states[task_id].pop(0) if len(states[task_id]) > 1 else states[task_id][0]
                views[task_id] = TaskView(task_id, status, 1.0 if status == "done" else 0.5, None, None)
        return views  # "c" is never found: its document was deleted

    final = await watch_tasks({"a": "a.md", "b": "b.md", "c": "c.md"}, fetch, console=Console(quiet=True),
                              show_bars=False)
    assert rounds == [["a", "b", "c"], ["a", "b"], ["b"]]  # one call per round, with what is still unfinished
    assert {k: v.status for k, v in final.items()} == {"a": "done", "b": "failed", "c": "cancelled"}
    assert final["c"].error == "its document was deleted"


async def test_odd_file_names_ingest_under_stable_keys(harness: Harness, tmp_path: Path) -> None:
    """Issue 28 item 4: a name that is not UTF-8 (it crashed the whole run with a traceback), one with a newline
    (it aborted the run, even a dry run) and a backslash get escaped keys; a symlink out of the folder is
    not followed; everything else ingests, the same keys on every run."""
    root = odd_folder(tmp_path / "docs", tmp_path / "elsewhere")
    dry = await harness.ingest(root, dry_run=True)
    keys = ["back\\\\slash.md", LATIN1_KEY, "line\\nbreak.md", "plain.md", "sub/deep.md"]
    assert dry.plan.added == keys
    first = await harness.ingest(root)
    assert first.plan.added == keys and all(v.status == "done" for v in first.tasks.values()) and len(first.tasks) == 5
    assert {Path(s.path).name for s in first.skipped} == {"escape.txt", "alias.md", "loop"}
    assert not any(s.error for s in first.skipped)
    documents = {d.source_id: d for d in await asyncio.to_thread(harness.core.repo.documents.of_kb, harness.kb.id)}
    assert sorted(documents) == keys
    assert documents[LATIN1_KEY].filename == LATIN1_NAME_SHOWN and documents["line\\nbreak.md"].filename == \
        "line_break.md"
    found = await harness.search("Espresso is brewed by forcing hot water through coffee.", k=1)
    assert found and "Espresso" in found[0][1]
    assert not any("secret" in text for text in await harness.live_texts()), "nothing from outside the folder"
    again = await harness.ingest(root)
    assert again.plan.summary() == "0 added, 0 updated, 5 unchanged, 0 deleted" and again.tasks == {}


async def test_a_sync_keeps_the_documents_of_files_it_cannot_read(harness: Harness, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A file or a folder that cannot be read is listed and fails the run, but a sync does not take it for
    gone: its documents stay; what is really gone is deleted."""
    root = tmp_path / "docs"
    for name in ("rivers.md", "glaciers.md", "deserts/gobi.md", "deserts/sahara.md"):
        _write(root, name, SECTIONS[name])
    _write(root, "caves.md", ["Caves form where water dissolves limestone."])
    await harness.ingest(root)
    (root / "caves.md").unlink()
    real_hash, real_scandir = planned.sha256_file, os.scandir

    # As root, permissions cannot make a file unreadable: the reads fail here instead.
    def unreadable_file(path: Path) -> str:
        if path.name == "glaciers.md":
            raise PermissionError(13, "Permission denied", str(path))
        return real_hash(path)

    def unreadable_folder(path: Any) -> Any:
        if os.fspath(path).endswith("deserts"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(planned, "sha256_file", unreadable_file)
    monkeypatch.setattr(os, "scandir", unreadable_folder)
    dry = await harness.ingest(root, sync=True, dry_run=True)
    assert dry.plan.deleted == ["caves.md"]
    synced = await harness.ingest(root, sync=True)
    assert synced.plan.deleted == ["caves.md"], "the unreadable file's and folder's documents are kept"
    assert sorted((Path(s.path).name, s.reason, s.error) for s in synced.skipped) == [
        ("deserts", "a folder that cannot be read: Permission denied", True),
        ("glaciers.md", "cannot be read: Permission denied", True)]
    documents = await asyncio.to_thread(harness.core.repo.documents.of_kb, harness.kb.id)
    assert sorted(d.source_id or "" for d in documents) == ["deserts/gobi.md", "deserts/sahara.md", "glaciers.md",
                                                             "rivers.md"]
    console = Console(record=True, width=200)
    assert synced.print(console, dry_run=False) == 1, "a file that could not be read fails the run"
    printed = console.export_text()
    assert "skipped 2 file(s):" in printed and "glaciers.md: cannot be read: Permission denied" in printed


async def test_unfinished_documents_are_waited_for_never_unchanged(idle_harness: Harness, tmp_path: Path,
                                                                   vectors: Any) -> None:
    """Issue 28 item 3 at the plan: a document whose content is there but whose task has not run is reported
    unfinished (not unchanged), nothing is uploaded again, and a waiting ingest waits for its task."""
    root = tmp_path / "docs"
    for name in ("rivers.md", "glaciers.md"):
        _write(root, name, SECTIONS[name])
    queued = await idle_harness.ingest(root, wait=False)
    assert sorted(queued.plan.added) == ["glaciers.md", "rivers.md"] and queued.tasks == {}
    tasks = await idle_harness.task_count()

    again = await idle_harness.ingest(root, wait=False)
    assert again.plan.unchanged == [] and sorted(again.plan.unfinished) == ["glaciers.md", "rivers.md"]
    assert sorted(again.labels.values()) == ["glaciers.md", "rivers.md"]
    assert set(again.labels) == {task_id for ids in again.plan.unfinished.values() for task_id in ids}
    assert set(again.labels) == set(queued.labels), "the first run's tasks, not new ones"
    assert await idle_harness.task_count() == tasks
    assert again.summary().endswith("2 unfinished from an earlier ingest, 0 deleted; the 2 unfinished are still "
                                    "queued or running (--wait waits for them)")

    async def run_then_watch(labels: dict[str, str]) -> dict[str, TaskView]:
        # As the in-process CLI does: the worker starts after the plan, so the tasks are unfinished when planned.
        async with running_worker(idle_harness.core, vectors):
            return await watch_tasks(labels, idle_harness.backend.fetch, console=Console(quiet=True),
                                     show_bars=False)

    waited = await ingesting.run_ingest(idle_harness.backend, ingesting.scan_sources([root]), sync=False,
                                        dry_run=False, console=Console(quiet=True), wait=run_then_watch)
    assert sorted(waited.plan.unfinished) == ["glaciers.md", "rivers.md"] and waited.plan.added == []
    assert {v.status for v in waited.tasks.values()} == {"done"} and set(waited.tasks) == set(queued.labels)
    assert "of the 2 unfinished, 2 finished now" in waited.summary()
    finished = await idle_harness.ingest(root)
    assert finished.plan.summary() == "0 added, 0 updated, 2 unchanged, 0 deleted"
