"""The HTTP API end to end against a real redis-server, with an in-process worker."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import httpx
import pytest

from common.runtime import Core
from tests.worker.helpers import running_worker

API = "/api/v1"

RIVERS = ("# Rivers\n\nThe Amazon river carries more water than any other river on Earth, "
          "draining a basin of seven million square kilometres.\n")
BREAD = ("# Bread\n\nSourdough bread rises because wild yeast and lactic bacteria in the starter "
         "ferment the flour, producing gas and a sour taste.\n")


async def _wait_done(http: httpx.AsyncClient, task_id: str, timeout_s: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(timeout_s):
        while True:
            task = (await http.get(f"{API}/tasks/{task_id}")).json()
            if task["status"] in ("done", "failed", "cancelled"):
                return task
            await asyncio.sleep(0.05)


async def test_upload_then_search_finds_the_right_chunk(client: httpx.AsyncClient, core: Core,
                                                        vectors: Any) -> None:
    created = await client.post(f"{API}/kbs", json={"name": "docs"})
    assert created.status_code == 201, created.text
    upload = await client.post(f"{API}/kbs/docs/documents",
                               files=[("files", ("rivers.md", RIVERS.encode())),
                                      ("files", ("bread.md", BREAD.encode()))])
    assert upload.status_code == 202, upload.text
    submitted = upload.json()["documents"]
    assert [d["filename"] for d in submitted] == ["rivers.md", "bread.md"]
    async with running_worker(core, vectors):
        for doc in submitted:
            task = await _wait_done(client, doc["task_id"])
            assert task["status"] == "done", task["error"]
    hits = (await client.post(f"{API}/kbs/docs/search", json={"query": "sourdough starter yeast", "top_k": 2}))
    assert hits.status_code == 200, hits.text
    top = hits.json()["hits"][0]
    assert top["filename"] == "bread.md" and "Sourdough" in top["text"] and top["title"] == "Bread"
    listed = (await client.get(f"{API}/kbs/docs/documents")).json()
    assert {d["status"] for d in listed} == {"done"}
    tasks = (await client.get(f"{API}/tasks", params={"status": "done", "kb": "docs"})).json()
    assert len(tasks) == 2


async def test_delete_document_removes_its_chunks(client: httpx.AsyncClient, core: Core, vectors: Any) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    doc = (await client.post(f"{API}/kbs/docs/documents",
                             files=[("files", ("rivers.md", RIVERS.encode()))])).json()["documents"][0]
    async with running_worker(core, vectors):
        await _wait_done(client, doc["task_id"])
    assert (await client.delete(f"{API}/documents/{doc['document_id']}")).status_code == 204
    assert (await client.get(f"{API}/documents/{doc['document_id']}")).status_code == 404
    hits = (await client.post(f"{API}/kbs/docs/search", json={"query": "Amazon river"})).json()["hits"]
    assert hits == []


async def test_cancel_then_retry(client: httpx.AsyncClient, core: Core, vectors: Any) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    doc = (await client.post(f"{API}/kbs/docs/documents",
                             files=[("files", ("rivers.md", RIVERS.encode()))])).json()["documents"][0]
    cancelled = await client.post(f"{API}/tasks/{doc['task_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = await client.post(f"{API}/tasks/{doc['task_id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    retried = await client.post(f"{API}/tasks/{doc['task_id']}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    async with running_worker(core, vectors):
        task = await _wait_done(client, doc["task_id"])
    assert task["status"] == "done"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("get", f"{API}/kbs/missing", None, 404, "not_found"),
        ("get", f"{API}/tasks/nope", None, 404, "not_found"),
        ("post", f"{API}/kbs", {"name": "../etc"}, 422, "invalid_request"),
        ("post", f"{API}/kbs", {}, 422, "invalid_request"),
        ("post", f"{API}/kbs/missing/search", {"query": "x"}, 404, "not_found"),
        ("get", f"{API}/tasks?status=bogus", None, 422, "invalid_request"),
    ],
)
async def test_errors_are_json_with_the_right_status(client: httpx.AsyncClient, method: str, path: str,
                                                     body: Any, status: int, code: str) -> None:
    response = await client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


async def test_duplicate_kb_is_a_conflict(client: httpx.AsyncClient) -> None:
    assert (await client.post(f"{API}/kbs", json={"name": "docs"})).status_code == 201
    dup = await client.post(f"{API}/kbs", json={"name": "docs"})
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "conflict"


async def test_upload_over_the_limit_is_rejected(client: httpx.AsyncClient, core: Core) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    core.settings.limits.max_upload_bytes = 1000
    response = await client.post(f"{API}/kbs/docs/documents", files=[("files", ("big.txt", b"x" * 2000))])
    assert response.status_code == 413
    assert "max_upload_bytes" in response.json()["error"]["message"]


async def test_upload_without_files_is_rejected(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    response = await client.post(f"{API}/kbs/docs/documents", data={"x": "1"})  # a urlencoded form
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["message"]
    response = await client.post(f"{API}/kbs/docs/documents", data={"x": "1"}, files=[("other", ("a.txt", b"a"))])
    assert response.status_code == 400
    assert "multipart field 'files'" in response.json()["error"]["message"]


async def test_an_upload_under_a_known_source_id_updates_or_leaves_its_document(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})

    async def upload(data: bytes, **form: str) -> dict[str, object]:
        response = await client.post(f"{API}/kbs/docs/documents", files=[("files", ("notes.md", data))], data=form)
        assert response.status_code == 202, response.text
        return dict(response.json()["documents"][0])

    first = await upload(b"# A\n\nfirst")
    assert (first["outcome"], first["source_id"]) == ("added", "notes.md") and first["task_id"]
    same = await upload(b"# A\n\nfirst")
    assert (same["outcome"], same["task_id"], same["document_id"]) == ("unchanged", None, first["document_id"])
    changed = await upload(b"# A\n\nsecond")
    assert changed["outcome"] == "updated" and changed["document_id"] == first["document_id"]
    elsewhere = await upload(b"# A\n\nfirst", source_id="archive/notes.md")
    assert elsewhere["outcome"] == "added" and elsewhere["source_id"] == "archive/notes.md"
    listed = (await client.get(f"{API}/kbs/docs/documents")).json()
    assert sorted(d["source_id"] for d in listed) == ["archive/notes.md", "notes.md"]
    mismatch = await client.post(f"{API}/kbs/docs/documents", data={"source_id": ["a", "b"]},
                                 files=[("files", ("one.md", b"x"))])
    assert mismatch.status_code == 400 and "one per file" in mismatch.json()["error"]["message"]


async def test_sync_reports_the_plan_and_deletes_what_is_gone(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    for name in ("keep.md", "gone.md"):
        await client.post(f"{API}/kbs/docs/documents", files=[("files", (name, name.encode()))])
    keep = hashlib.sha256(b"keep.md").hexdigest()
    sources = {"keep.md": keep, "new.md": "0" * 64}
    dry = (await client.post(f"{API}/kbs/docs/sync", json={"sources": sources, "dry_run": True})).json()
    # No worker runs here: keep.md's content is there but not parsed yet, so it is unfinished, with its task.
    assert (dry["added"], dry["unchanged"], list(dry["unfinished"]), dry["deleted"], dry["dry_run"]) == (
        ["new.md"], [], ["keep.md"], ["gone.md"], True)
    assert len(dry["unfinished"]["keep.md"]) == 1
    assert len((await client.get(f"{API}/kbs/docs/documents")).json()) == 2
    done = (await client.post(f"{API}/kbs/docs/sync", json={"sources": sources})).json()
    assert done["deleted"] == ["gone.md"]
    assert [d["source_id"] for d in (await client.get(f"{API}/kbs/docs/documents")).json()] == ["keep.md"]
    bad = await client.post(f"{API}/kbs/docs/sync", json={"sources": {"x.md": "nothex"}})
    assert bad.status_code == 400


async def test_reindex_queues_a_new_version_of_every_document(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    await client.post(f"{API}/kbs/docs/documents", files=[("files", ("a.md", b"# a\n\ntext"))])
    response = await client.post(f"{API}/kbs/docs/reindex", json={"chunk_tokens": 128, "overlap_tokens": 16})
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["kb"]["chunk_tokens"], body["kb"]["overlap_tokens"], len(body["task_ids"])) == (128, 16, 1)
    bad = await client.post(f"{API}/kbs/docs/reindex", json={"chunk_tokens": 64, "overlap_tokens": 64})
    assert bad.status_code == 400


async def test_reindex_without_a_body_takes_every_default(client: httpx.AsyncClient) -> None:
    """The README calls reindex's fields optional: no body, an empty body and `{}` are all a plain reindex."""
    await client.post(f"{API}/kbs", json={"name": "docs"})
    await client.post(f"{API}/kbs/docs/documents", files=[("files", ("a.md", b"# a\n\ntext"))])
    kb = (await client.get(f"{API}/kbs/docs")).json()
    for request in ({}, {"content": b"", "headers": {"Content-Type": "application/json"}}, {"json": {}}):
        response = await client.post(f"{API}/kbs/docs/reindex", **request)
        assert response.status_code == 202, (request, response.text)
        body = response.json()
        assert (body["kb"]["chunk_tokens"], body["kb"]["overlap_tokens"]) == (kb["chunk_tokens"], kb["overlap_tokens"])
        assert len(body["task_ids"]) == 1
    broken = await client.post(f"{API}/kbs/docs/reindex", content=b"{", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"redis": True, "database": True, "object_store": True, "vector_store": True}


@pytest.mark.parametrize(("sent", "stored"), [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\boot.ini", "boot.ini"),
    ("dir/sub/report.md", "report.md"),
    ("...hidden", "hidden"),
    ("x" * 300 + ".txt", "x" * 255),
])
async def test_uploaded_names_are_made_safe(client: httpx.AsyncClient, sent: str, stored: str) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    response = await client.post(f"{API}/kbs/docs/documents", files=[("files", (sent, b"hello"))])
    assert response.status_code == 202, response.text
    doc = response.json()["documents"][0]
    assert doc["filename"] == stored
    assert (await client.get(f"{API}/documents/{doc['document_id']}")).json()["filename"] == stored


async def test_one_oversized_file_rejects_the_whole_upload(client: httpx.AsyncClient, core: Core) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    core.settings.limits.max_upload_bytes = 1000
    response = await client.post(f"{API}/kbs/docs/documents",
                                 files=[("files", ("small.txt", b"ok")), ("files", ("big.txt", b"x" * 1001))])
    assert response.status_code == 413 and response.json()["error"]["code"] == "limit_exceeded"
    assert (await client.get(f"{API}/kbs/docs/documents")).json() == []
    assert (await client.get(f"{API}/tasks")).json() == []


async def test_upload_at_the_limit_is_accepted(client: httpx.AsyncClient, core: Core) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    core.settings.limits.max_upload_bytes = 1000
    response = await client.post(f"{API}/kbs/docs/documents", files=[("files", ("exact.txt", b"x" * 1000))])
    assert response.status_code == 202, response.text


async def test_task_list_filters(client: httpx.AsyncClient) -> None:
    for kb in ("one", "two"):
        await client.post(f"{API}/kbs", json={"name": kb})
        await client.post(f"{API}/kbs/{kb}/documents", files=[("files", (f"{kb}.txt", b"text"))])
    first = (await client.get(f"{API}/tasks", params={"kb": "one"})).json()
    assert len(first) == 1
    cancelled = await client.post(f"{API}/tasks/{first[0]['id']}/cancel")
    assert cancelled.status_code == 200
    assert [t["id"] for t in (await client.get(f"{API}/tasks", params={"status": "cancelled"})).json()] == [
        first[0]["id"]]
    assert len((await client.get(f"{API}/tasks", params={"status": "queued"})).json()) == 1
    assert (await client.get(f"{API}/tasks", params={"status": "queued", "kb": "one"})).json() == []
    assert len((await client.get(f"{API}/tasks", params={"limit": 1})).json()) == 1
    missing = await client.get(f"{API}/tasks", params={"kb": "nope"})
    assert missing.status_code == 404


async def test_control_characters_in_names_are_replaced(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/kbs", json={"name": "docs"})
    body = (b'--B\r\nContent-Disposition: form-data; name="files"; filename="bad\x01name\x7f.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nhello\r\n--B--\r\n")
    response = await client.post(f"{API}/kbs/docs/documents", content=body,
                                 headers={"Content-Type": "multipart/form-data; boundary=B"})
    assert response.status_code == 202, response.text
    assert response.json()["documents"][0]["filename"] == "bad_name_.txt"


async def test_concurrent_searches_embed_their_queries_together(client: httpx.AsyncClient, core: Core,
                                                                 vectors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Queries that arrive while the model is busy share its next call; each request gets its own hits."""
    import time

    await client.post(f"{API}/kbs", json={"name": "docs"})
    upload = await client.post(f"{API}/kbs/docs/documents", files=[("files", ("rivers.md", RIVERS.encode())),
                                                                   ("files", ("bread.md", BREAD.encode()))])
    async with running_worker(core, vectors):
        for doc in upload.json()["documents"]:
            assert (await _wait_done(client, doc["task_id"]))["status"] == "done"
    embedder = await core.embedders.get()
    calls: list[list[str]] = []
    encode = embedder.encode

    def slow_counting_encode(texts: list[str], batch_size: int) -> Any:
        calls.append(list(texts))
        time.sleep(0.05)  # a model call takes a while: the other requests arrive meanwhile
        return encode(texts, batch_size)

    monkeypatch.setattr(embedder, "encode", slow_counting_encode)
    queries = ["sourdough starter yeast", "Amazon river basin"] * 4
    responses = await asyncio.gather(*(client.post(f"{API}/kbs/docs/search", json={"query": q, "top_k": 1})
                                       for q in queries))
    tops = [r.json()["hits"][0]["filename"] for r in responses]
    assert tops == ["bread.md", "rivers.md"] * 4, "each request got the hits of its own query"
    assert sorted(q for call in calls for q in call) == sorted(queries), "every query embedded once"
    assert len(calls) < len(queries) / 2, f"queries were embedded together, not one call each: {calls}"
