"""A client for the docvec HTTP API: `AsyncClient` (httpx, asyncio) and `Client`, the same calls blocking.

    from docvec import Client

    with Client("http://127.0.0.1:8000", api_key="dvk_...") as docvec:
        docvec.ingest("papers", ["~/papers"], wait=True)          # a folder, as a sync: only new and changed files
        for hit in docvec.search("papers", "what limits recall?", top_k=5):
            print(f"{hit.score:.3f} {hit.filename}: {hit.text[:80]}")

The URL and key default to `DOCVEC_API_URL` and `DOCVEC_API_KEY`. Every error the API answers becomes an
`ApiError` subclass (`NotFoundError`, `AuthenticationError`, ...) with its stable `code` and its message.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from docvec.errors import BY_STATUS, ApiError, ConnectionFailed, NotFoundError, TaskTimeout
from docvec.ingest import Skipped, Source, run_ingest, scan_sources_async
from docvec.models import Chunk, Document, Hit, KnowledgeBase, Progress, Submitted, SyncPlan, Task, TaskEvent, parse

T = TypeVar("T")

API_URL_ENV = "DOCVEC_API_URL"
API_KEY_ENV = "DOCVEC_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 60.0
WAIT_POLL_S = 0.5
WAIT_BATCH = 100  # tasks looked up per request (the API's cap on `id=`)

FileInput = Path | str | tuple[str, bytes]
"""An upload: a path to read, or (file name, content)."""


@dataclass(slots=True)
class IngestResult:
    """What `ingest` did: the plan (added, updated, unchanged, unfinished, deleted keys), the files left out
    and why (`Skipped`: an unreadable file, a symlink out of the folder), and, when it waited, the final
    state of each uploaded or unfinished key's task."""

    plan: SyncPlan
    task_ids: dict[str, str] = field(default_factory=dict)  # source key -> task id
    tasks: dict[str, Task] = field(default_factory=dict)  # source key -> finished task (with wait)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def failed(self) -> dict[str, Task]:
        return {key: task for key, task in self.tasks.items() if task.status != "done"}


class AsyncClient:
    """The docvec API over httpx's `AsyncClient`. Use as `async with AsyncClient(...) as docvec:`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.base_url = (base_url or os.environ.get(API_URL_ENV) or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.AsyncClient(base_url=f"{self.base_url}/api/v1", headers=headers, timeout=timeout_s,
                                       transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ------------------------------------------------------------------------------- knowledge bases

    async def list_kbs(self) -> list[KnowledgeBase]:
        return [parse(KnowledgeBase, kb) for kb in await self._request("GET", "/kbs")]

    async def get_kb(self, name: str) -> KnowledgeBase:
        return parse(KnowledgeBase, await self._request("GET", f"/kbs/{name}"))

    async def create_kb(self, name: str, *, chunk_tokens: int | None = None,
                        overlap_tokens: int | None = None) -> KnowledgeBase:
        body = {"name": name, "chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens}
        return parse(KnowledgeBase, await self._request("POST", "/kbs", json=body))

    async def ensure_kb(self, name: str) -> KnowledgeBase:
        """The knowledge base `name`, created with the default settings if it does not exist."""
        try:
            return await self.get_kb(name)
        except NotFoundError:
            return await self.create_kb(name)

    async def delete_kb(self, name: str) -> None:
        await self._request("DELETE", f"/kbs/{name}")

    async def reindex(self, kb: str, *, chunk_tokens: int | None = None,
                      overlap_tokens: int | None = None) -> list[str]:
        """Re-chunk and re-embed every document of `kb`; the queued task ids."""
        body = await self._request("POST", f"/kbs/{kb}/reindex",
                                   json={"chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens})
        return list(body["task_ids"])

    # ------------------------------------------------------------------------------------ documents

    async def upload(self, kb: str, files: FileInput | Sequence[FileInput], *,
                     source_ids: Sequence[str] | None = None, priority: str = "normal") -> list[Submitted]:
        """Upload one or more files in one request (each file's key: its `source_ids` entry, else its file
        name). A key with the content its document already has is `unchanged`: no task."""
        items = [files] if isinstance(files, str | Path | tuple) else list(files)
        parts = [await _read_file(item) for item in items]
        data = {"source_id": list(source_ids)} if source_ids is not None else None
        body = await self._request("POST", f"/kbs/{kb}/documents", params={"priority": priority},
                                   files=[("files", part) for part in parts], data=data)
        return [parse(Submitted, d) for d in body["documents"]]

    async def sync_plan(self, kb: str, sources: Mapping[str, str], *, delete_missing: bool = True,
                        dry_run: bool = False) -> SyncPlan:
        """Compare `sources` (source key -> SHA-256 of its content) with the knowledge base: which keys are
        added, updated, unchanged, unfinished (the content is there, its tasks not done yet), and (with
        `delete_missing`) which documents are deleted (unless `dry_run`)."""
        body = await self._request("POST", f"/kbs/{kb}/sync", json={
            "sources": dict(sources), "delete_missing": delete_missing, "dry_run": dry_run})
        return SyncPlan(body["added"], body["updated"], body["unchanged"], body["deleted"],
                        {key: list(task_ids) for key, task_ids in body.get("unfinished", {}).items()})

    async def ingest(self, kb: str, paths: Sequence[Path | str] | Path | str, *, sync: bool = False,
                     dry_run: bool = False, wait: bool = False, timeout_s: float | None = None,
                     follow_symlinks: bool = False,
                     on_progress: Callable[[Progress], None] | None = None) -> IngestResult:
        """Ingest files and folders as a sync (the knowledge base is created if missing): each file's key is
        its path under the folder named (a file named directly: its file name; a name that is not UTF-8
        escaped, see `docvec.ingest.escape_name`); only new and changed files are uploaded, one per
        request; with `sync` the documents whose files are gone are deleted; with `wait`, returns when
        every queued task, and every task still unfinished from an earlier ingest of these files, has
        finished (`on_progress` hears of each file sent and each task finished). A file that cannot be
        read is left out and listed in `skipped`, as are symlinks out of a folder unless `follow_symlinks`."""
        roots = [paths] if isinstance(paths, str | Path) else list(paths)
        collected = await scan_sources_async([Path(p).expanduser() for p in roots], sync=sync,
                                             follow_symlinks=follow_symlinks)
        await self.ensure_kb(kb)
        report = await run_ingest(KbBackend(self, kb), collected.sources, sync=sync, dry_run=dry_run,
                                  keep=collected.kept_keys, on_progress=on_progress)
        result = IngestResult(report.plan, {key: task_id for task_id, key in report.labels.items()},
                              skipped=collected.skipped)
        if wait and report.labels:
            finished = await self.wait(list(report.labels), timeout_s=timeout_s, on_progress=on_progress)
            result.tasks = {report.labels[task_id]: task for task_id, task in finished.items()}
        return result

    async def list_documents(self, kb: str, *, limit: int = 100, offset: int = 0) -> list[Document]:
        body = await self._request("GET", f"/kbs/{kb}/documents", params={"limit": limit, "offset": offset})
        return [parse(Document, d) for d in body]

    async def get_document(self, document_id: str) -> Document:
        return parse(Document, await self._request("GET", f"/documents/{document_id}"))

    async def chunks(self, document_id: str, *, limit: int = 50, offset: int = 0) -> list[Chunk]:
        """Chunks `offset .. offset + limit` of the document's live version (what search serves), in order."""
        body = await self._request("GET", f"/documents/{document_id}/chunks", params={"limit": limit, "offset": offset})
        return [parse(Chunk, c) for c in body["chunks"]]

    async def delete_document(self, document_id: str) -> None:
        """Gone from search at once; its chunks and file are removed in the background."""
        await self._request("DELETE", f"/documents/{document_id}")

    async def reparse(self, document_id: str, *, priority: str = "normal") -> Task:
        return parse(Task, await self._request("POST", f"/documents/{document_id}/reparse",
                                               params={"priority": priority}))

    # ---------------------------------------------------------------------------------------- tasks

    async def get_task(self, task_id: str) -> Task:
        return parse(Task, await self._request("GET", f"/tasks/{task_id}"))

    async def list_tasks(self, *, status: str | None = None, kb: str | None = None, name: str | None = None,
                         document_id: str | None = None, limit: int = 100, offset: int = 0) -> list[Task]:
        """Tasks newest first, optionally only those in `status`, of knowledge base `kb`, whose file name
        contains `name` (ignoring case), or of one document."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        params.update({k: v for k, v in (("status", status), ("kb", kb), ("q", name), ("document_id", document_id))
                       if v is not None})
        return [parse(Task, t) for t in await self._request("GET", "/tasks", params=params)]

    async def get_tasks(self, task_ids: Iterable[str]) -> dict[str, Task]:
        """The tasks of `task_ids` this key can see, by id (a hundred per request; unknown ids are absent)."""
        wanted = list(dict.fromkeys(task_ids))
        found: dict[str, Task] = {}
        for start in range(0, len(wanted), WAIT_BATCH):
            batch = wanted[start:start + WAIT_BATCH]
            body = await self._request("GET", "/tasks", params={"id": batch, "limit": len(batch)})
            found.update((t.id, t) for t in (parse(Task, item) for item in body))
        return found

    async def cancel_task(self, task_id: str) -> Task:
        return parse(Task, await self._request("POST", f"/tasks/{task_id}/cancel"))

    async def retry_task(self, task_id: str) -> Task:
        return parse(Task, await self._request("POST", f"/tasks/{task_id}/retry"))

    async def events(self, task_id: str) -> AsyncGenerator[TaskEvent, None]:
        """The task's live events (Server-Sent Events): its state, each progress report, its final state;
        the iteration ends when the task has finished (or the server ends the stream)."""
        async with self._http.stream("GET", f"/tasks/{task_id}/events", timeout=httpx.Timeout(None, connect=10.0)) \
                as response:
            if response.is_error:
                await response.aread()
                _raise_for(response)
            event, data = "message", []
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue  # a keep-alive comment
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif not line and data:
                    parsed = TaskEvent(event, json.loads("\n".join(data)))
                    event, data = "message", []
                    yield parsed
                    if parsed.final and parsed.event == "state":
                        return

    async def wait(self, task_ids: Iterable[str], *, timeout_s: float | None = None, poll_s: float = WAIT_POLL_S,
                   on_progress: Callable[[Progress], None] | None = None) -> dict[str, Task]:
        """Poll the tasks until every one has finished (done, failed or cancelled); their final states.
        A hundred tasks are looked up per request. `TaskTimeout` after `timeout_s`; `NotFoundError` for a
        task this key cannot see."""
        pending = list(dict.fromkeys(task_ids))
        total = len(pending)
        finished: dict[str, Task] = {}
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pending:
            found = await self.get_tasks(pending)
            for task_id in pending:
                if task_id not in found:
                    raise NotFoundError(404, "not_found", f"task {task_id} not found")
                if found[task_id].finished:
                    finished[task_id] = found[task_id]
                    if on_progress is not None:
                        on_progress(Progress("wait", len(finished), total, task_id))
            pending = [task_id for task_id in pending if task_id not in finished]
            if not pending:
                break
            if deadline is not None and time.monotonic() + poll_s > deadline:
                raise TaskTimeout(f"{len(pending)} of {total} tasks still running after {timeout_s}s: "
                                  f"{', '.join(pending[:5])}")
            await asyncio.sleep(poll_s)
        return finished

    # ----------------------------------------------------------------------------------- search, fleet

    async def search(self, kb: str, query: str, *, top_k: int = 5, filter: str | None = None) -> list[Hit]:
        """The `top_k` chunks closest to `query` (optionally within a Milvus-style `filter`)."""
        body = await self._request("POST", f"/kbs/{kb}/search", json={"query": query, "top_k": top_k,
                                                                       "filter": filter})
        return [parse(Hit, h) for h in body["hits"]]

    async def fleet(self) -> dict[str, Any]:
        """Workers, streams, task counts and throughput (admin key)."""
        return dict(await self._request("GET", "/fleet"))

    # ------------------------------------------------------------------------------------------ http

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach the docvec API at {self.base_url}: {exc}") from exc
        _raise_for(response)
        return response.json() if response.content else None


class KbBackend:
    """`docvec.ingest.Backend` for one knowledge base over the API: one file per upload request."""

    def __init__(self, client: AsyncClient, kb: str) -> None:
        self.client, self.kb = client, kb

    async def sync(self, present: dict[str, str], *, delete_missing: bool, dry_run: bool) -> SyncPlan:
        return await self.client.sync_plan(self.kb, present, delete_missing=delete_missing, dry_run=dry_run)

    async def submit(self, source: Source) -> tuple[str | None, str]:
        data = await asyncio.to_thread(source.path.read_bytes)
        (submitted,) = await self.client.upload(self.kb, (source.filename, data), source_ids=[source.key])
        return submitted.task_id, submitted.outcome


async def _read_file(item: FileInput) -> tuple[str, bytes]:
    if isinstance(item, tuple):
        return item
    path = Path(item).expanduser()
    return path.name, await asyncio.to_thread(path.read_bytes)


def _raise_for(response: httpx.Response) -> None:
    if not response.is_error:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "http_error", response.text[:500] or response.reason_phrase
    raise BY_STATUS.get(response.status_code, ApiError)(response.status_code, code, message)


class Client:
    """`AsyncClient`'s calls, blocking: they run on an event loop in a thread of this client's own (so a
    `Client` works in any thread, and inside a notebook whose loop is running). `on_progress` callbacks are
    called in that thread. Use as `with Client(...) as docvec:` or call `close()`."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="docvec-client", daemon=True)
        self._thread.start()
        self.aio = AsyncClient(base_url, api_key, timeout_s=timeout_s, transport=transport)
        self.base_url = self.aio.base_url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.aio.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def _run(self, call: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        async def run() -> T:
            return await call

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def list_kbs(self) -> list[KnowledgeBase]:
        return self._run(self.aio.list_kbs())

    def get_kb(self, name: str) -> KnowledgeBase:
        return self._run(self.aio.get_kb(name))

    def create_kb(self, name: str, *, chunk_tokens: int | None = None,
                  overlap_tokens: int | None = None) -> KnowledgeBase:
        return self._run(self.aio.create_kb(name, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens))

    def ensure_kb(self, name: str) -> KnowledgeBase:
        return self._run(self.aio.ensure_kb(name))

    def delete_kb(self, name: str) -> None:
        self._run(self.aio.delete_kb(name))

    def reindex(self, kb: str, *, chunk_tokens: int | None = None, overlap_tokens: int | None = None) -> list[str]:
        return self._run(self.aio.reindex(kb, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens))

    def upload(self, kb: str, files: FileInput | Sequence[FileInput], *, source_ids: Sequence[str] | None = None,
               priority: str = "normal") -> list[Submitted]:
        return self._run(self.aio.upload(kb, files, source_ids=source_ids, priority=priority))

    def sync_plan(self, kb: str, sources: Mapping[str, str], *, delete_missing: bool = True,
                  dry_run: bool = False) -> SyncPlan:
        return self._run(self.aio.sync_plan(kb, sources, delete_missing=delete_missing, dry_run=dry_run))

    def ingest(self, kb: str, paths: Sequence[Path | str] | Path | str, *, sync: bool = False, dry_run: bool = False,
               wait: bool = False, timeout_s: float | None = None, follow_symlinks: bool = False,
               on_progress: Callable[[Progress], None] | None = None) -> IngestResult:
        return self._run(self.aio.ingest(kb, paths, sync=sync, dry_run=dry_run, wait=wait, timeout_s=timeout_s,
                                         follow_symlinks=follow_symlinks, on_progress=on_progress))

    def list_documents(self, kb: str, *, limit: int = 100, offset: int = 0) -> list[Document]:
        return self._run(self.aio.list_documents(kb, limit=limit, offset=offset))

    def get_document(self, document_id: str) -> Document:
        return self._run(self.aio.get_document(document_id))

    def chunks(self, document_id: str, *, limit: int = 50, offset: int = 0) -> list[Chunk]:
        return self._run(self.aio.chunks(document_id, limit=limit, offset=offset))

    def delete_document(self, document_id: str) -> None:
        self._run(self.aio.delete_document(document_id))

    def reparse(self, document_id: str, *, priority: str = "normal") -> Task:
        return self._run(self.aio.reparse(document_id, priority=priority))

    def get_task(self, task_id: str) -> Task:
        return self._run(self.aio.get_task(task_id))

    def list_tasks(self, *, status: str | None = None, kb: str | None = None, name: str | None = None,
                   document_id: str | None = None, limit: int = 100, offset: int = 0) -> list[Task]:
        return self._run(self.aio.list_tasks(status=status, kb=kb, name=name, document_id=document_id, limit=limit,
                                             offset=offset))

    def get_tasks(self, task_ids: Iterable[str]) -> dict[str, Task]:
        return self._run(self.aio.get_tasks(task_ids))

    def cancel_task(self, task_id: str) -> Task:
        return self._run(self.aio.cancel_task(task_id))

    def retry_task(self, task_id: str) -> Task:
        return self._run(self.aio.retry_task(task_id))

    def events(self, task_id: str) -> Iterator[TaskEvent]:
        stream = self.aio.events(task_id)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())

    def wait(self, task_ids: Iterable[str], *, timeout_s: float | None = None, poll_s: float = WAIT_POLL_S,
             on_progress: Callable[[Progress], None] | None = None) -> dict[str, Task]:
        return self._run(self.aio.wait(task_ids, timeout_s=timeout_s, poll_s=poll_s, on_progress=on_progress))

    def search(self, kb: str, query: str, *, top_k: int = 5, filter: str | None = None) -> list[Hit]:
        return self._run(self.aio.search(kb, query, top_k=top_k, filter=filter))

    def fleet(self) -> dict[str, Any]:
        return self._run(self.aio.fleet())
