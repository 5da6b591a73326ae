"""`docvec.Client` and `docvec.AsyncClient` against a live API: knowledge bases, a folder ingested as a
sync with progress and wait, task events, search with typed results, and typed errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from common.settings import Settings
from docvec import (
    AsyncClient,
    AuthenticationError,
    Chunk,
    Client,
    ConflictError,
    ConnectionFailed,
    Hit,
    InvalidRequestError,
    NotFoundError,
    Progress,
    RequestTooLarge,
    Task,
    TaskTimeout,
)
from tests.api.live import LiveApi
from tests.docvec.conftest import write_corpus

WAIT_S = 60.0


def test_a_folder_is_ingested_as_a_sync_then_searched(live_api: LiveApi, api_key: str, tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "corpus")
    seen: list[Progress] = []
    with Client(live_api.url, api_key) as docvec:
        result = docvec.ingest("notes", root, wait=True, timeout_s=WAIT_S, on_progress=seen.append)
        assert sorted(result.plan.added) == ["guide/bees.txt", "guide/bread.md", "tides.md"]
        assert result.failed == {} and set(result.tasks) == set(result.plan.added)
        assert all(isinstance(t, Task) and t.status == "done" and t.chunk_count >= 1 for t in result.tasks.values())
        uploads = [(p.phase, p.done, p.total) for p in seen if p.phase == "upload"]
        assert uploads == [("upload", i, 3) for i in (1, 2, 3)]
        assert [p.done for p in seen if p.phase == "wait"] == [1, 2, 3]

        kb = docvec.get_kb("notes")
        assert kb.name == "notes" and kb.dim > 0 and [k.name for k in docvec.list_kbs()] == ["notes"]
        documents = {d.source_id: d for d in docvec.list_documents("notes")}
        assert set(documents) == set(result.plan.added) and documents["tides.md"].status == "done"

        hits = docvec.search("notes", "The moon pulls the oceans; the tides follow it around the Earth.", top_k=2)
        assert all(isinstance(h, Hit) for h in hits) and hits[0].filename == "tides.md"
        assert "moon" in hits[0].text and hits[0].score >= hits[-1].score

        again = docvec.ingest("notes", root, wait=True, timeout_s=WAIT_S)  # nothing changed: nothing sent
        assert again.plan.summary() == "0 added, 0 updated, 3 unchanged, 0 deleted" and again.task_ids == {}

        (root / "tides.md").write_text("# Tides\n\nTwo high tides a day, roughly.\n")
        (root / "guide" / "bees.txt").unlink()
        synced = docvec.ingest("notes", root, sync=True, wait=True, timeout_s=WAIT_S)
        assert (synced.plan.updated, synced.plan.deleted) == (["tides.md"], ["guide/bees.txt"])
        assert {d.source_id for d in docvec.list_documents("notes")} == {"tides.md", "guide/bread.md"}
        assert docvec.get_document(documents["tides.md"].id).parse_version == 2
        (chunk,) = docvec.chunks(documents["tides.md"].id)
        assert isinstance(chunk, Chunk) and "Two high tides" in chunk.text and chunk.title == "Tides"
        (listed,) = docvec.list_tasks(name="TIDES", status="done", limit=1)
        assert (listed.filename, listed.kb_name) == ("tides.md", "notes")


async def test_the_async_client_streams_a_tasks_events_and_acts_on_tasks(live_api: LiveApi, api_key: str) -> None:
    async with AsyncClient(live_api.url, api_key) as docvec:
        await docvec.create_kb("docs")
        (submitted,) = await docvec.upload("docs", ("tides.md", b"# Tides\n\n" + b"The moon pulls the sea. " * 200))
        assert submitted.outcome == "added" and submitted.task_id is not None
        events = []
        async with asyncio.timeout(WAIT_S):
            async for event in docvec.events(submitted.task_id):
                events.append(event)
        assert events[0].event == "state" and events[-1].event == "state" and events[-1].data["status"] == "done"
        assert any(e.event == "progress" for e in events)

        task = await docvec.get_task(submitted.task_id)
        assert task.finished and task.stage_timings and [t.id for t in await docvec.list_tasks(kb="docs")] == [task.id]
        with pytest.raises(ConflictError) as conflict:
            await docvec.cancel_task(task.id)  # a finished task
        assert conflict.value.status_code == 409 and conflict.value.code == "conflict"
        reparsed = await docvec.reparse(task.document_id)
        done = await docvec.wait([reparsed.id], timeout_s=WAIT_S)
        assert done[reparsed.id].status == "done" and done[reparsed.id].parse_version == 2
        (same,) = await docvec.upload("docs", ("tides.md", b"# Tides\n\n" + b"The moon pulls the sea. " * 200))
        assert same.outcome == "unchanged" and same.task_id is None


async def test_errors_are_typed_with_the_apis_code_and_message(live_api: LiveApi, api_key: str,
                                                               settings: Settings) -> None:
    async with AsyncClient(live_api.url, api_key) as docvec:
        with pytest.raises(NotFoundError, match="knowledge base 'nope' not found"):
            await docvec.search("nope", "anything")
        await docvec.create_kb("docs")
        with pytest.raises(RequestTooLarge, match="max_upload_bytes"):
            await docvec.upload("docs", ("big.txt", b"x" * (settings.limits.max_upload_bytes + 1)))
        with pytest.raises(InvalidRequestError, match="priority"):
            await docvec.upload("docs", ("a.md", b"# A\n\nalpha"), priority="urgent")
        with pytest.raises(InvalidRequestError, match="filter"):
            await docvec.search("docs", "alpha", filter="no such (syntax")
    async with AsyncClient(live_api.url, "dvk_wrong") as stranger:
        with pytest.raises(AuthenticationError) as refused:
            await stranger.list_kbs()
        assert refused.value.code == "unauthorized"
    async with AsyncClient("http://127.0.0.1:9", api_key, timeout_s=2) as nowhere:
        with pytest.raises(ConnectionFailed, match="cannot reach the docvec API"):
            await nowhere.list_kbs()


async def test_wait_looks_tasks_up_a_hundred_per_request_and_gives_up_after_its_timeout() -> None:
    """A unit test on a fake transport: 250 tasks that never finish."""
    def running(task_id: str) -> dict[str, object]:
        return {"id": task_id, "document_id": "d", "kb_id": "k", "status": "running", "priority": "normal",
                "parse_version": 1, "progress": 0.5, "progress_msg": "", "stage": "embed", "attempts": 1,
                "error": None, "worker": "w", "created_at": "2026-01-01T00:00:00"}

    asked: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        ids = request.url.params.get_list("id")
        asked.append(len(ids))
        return httpx.Response(200, json=[running(i) for i in ids])

    async with AsyncClient("http://docvec.invalid", "k", transport=httpx.MockTransport(answer)) as docvec:
        with pytest.raises(TaskTimeout, match="250 of 250 tasks still running"):
            await docvec.wait([f"t{i}" for i in range(250)], timeout_s=0.05, poll_s=0.01)
    assert asked[:3] == [100, 100, 50]
