"""`docvec ingest` as a sync, in-process and through the API: a re-run over an unchanged folder is a no-op,
an edit re-embeds only the chunks it changed, `--sync` deletes what is gone."""

from __future__ import annotations

import asyncio
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
from docvec_cli import ingest as ingesting
from docvec_cli.watch import TaskView, watch_tasks
from lifecycle import documents as lifecycle
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

    async def ingest(self, root: Path, *, sync: bool = False, dry_run: bool = False) -> ingesting.IngestReport:
        sources = ingesting.collect_sources([root], sync=sync)

        async def wait(labels: dict[str, str]) -> dict[str, TaskView]:
            return await watch_tasks(labels, self.backend.fetch, console=Console(quiet=True), show_bars=False)

        return await ingesting.run_ingest(self.backend, sources, sync=sync, dry_run=dry_run,
                                          console=Console(quiet=True), wait=wait)

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


@pytest.fixture(params=["local", "api"])
async def harness(request: pytest.FixtureRequest, core: Core, vectors: Any) -> AsyncIterator[Harness]:
    chunks = ChunkStore(vectors)
    kb = await lifecycle.create_kb(core, "notes", tenant="default", chunks=chunks)
    async with running_worker(core, vectors):
        if request.param == "local":
            yield Harness(core, kb, chunks, ingesting.LocalBackend(core, kb))
            return
        app = create_app(core.settings, core=core, vectors=vectors)
        async with app.router.lifespan_context(app):
            key = await asyncio.to_thread(app.state.services.apikeys.create, "default", admin=True)
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with AsyncClient("http://docvec.test", key.secret, transport=transport) as client:
                yield Harness(core, kb, chunks, ingesting.ApiBackend(client, kb.name))


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
