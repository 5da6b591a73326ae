"""A document's life, in one place: submit, reparse, cancel, retry, fail, delete, and what search sees.

Every change to what a knowledge base holds goes through here (the API routes, the worker's stages and
the CLI call these functions). The rules:

- The database decides what is searchable: a document's live parse version (`document.parse_version`).
  `search` returns only chunks of live versions of documents that exist, whatever the vector store
  still holds, so nothing of a failed, cancelled, replaced or deleted document is ever served.
- Whatever can never be live again is garbage, recorded in the same transaction as the change that
  made it so (`Repository`): the previous version when a new one goes live, the chunk set of a failed
  or cancelled parse, a deleted document's chunks and blob, a deleted knowledge base's collection and
  blobs, an upload whose rows were never written. `lifecycle.garbage` removes it until the stores
  confirm, retried across restarts.
- Submitting stores the blob, writes the Document + Task rows, then XADDs the task: a crash after the
  rows and before the XADD leaves a queued task with no stream entry, which the janitor re-enqueues.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import uuid

import numpy as np

from common.db import KbRecord, Outcome, Repository, Submission, TaskRecord, TaskStatus, check_priority
from common.errors import InvalidRequest
from common.runtime import Core
from common.settings import chunking_problem
from common.uploads import check_source_id, check_upload_size, safe_filename, upload_key
from vectordb.chunkstore import ChunkHit, ChunkStore

log = logging.getLogger(__name__)

CANCEL_FLAG_TTL_S = 7 * 24 * 3600
# An upload's blob is garbage unless its rows are written within this time (crash between the two).
UPLOAD_COMMIT_WINDOW_S = 3600.0
HASH_IN_THREAD_BYTES = 1 << 20  # larger uploads are hashed off the event loop
# Search over-fetches this many candidates per hit wanted, then keeps the live ones; rounds bounded.
SEARCH_OVERFETCH = 2
SEARCH_EXTRA = 10
SEARCH_MAX_CANDIDATES = 16384
SEARCH_MAX_ROUNDS = 4


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------ knowledge bases


async def create_kb(core: Core, name: str, *, tenant: str, chunk_tokens: int | None = None,
                    overlap_tokens: int | None = None, chunks: ChunkStore | None = None) -> KbRecord:
    """Create a knowledge base whose chunking defaults come from settings and whose dimension and
    model name come from the configured embedder; with `chunks`, its collection is created at once
    (otherwise the first index write creates it)."""
    chunking = core.settings.chunking
    embedder = await core.embedders.get()
    size = chunk_tokens or chunking.chunk_tokens
    overlap = overlap_tokens if overlap_tokens is not None else chunking.overlap_tokens
    problem = chunking_problem(size, overlap)
    if problem:
        raise InvalidRequest(problem)
    kb = await asyncio.to_thread(
        core.repo.kbs.create, name, tenant=tenant, chunk_tokens=size, overlap_tokens=overlap,
        embedding_model=embedder.name, dim=embedder.dim,
    )
    if chunks is not None:
        await chunks.ensure_collection(kb.collection, kb.dim)
    return kb


async def delete_kb(core: Core, kb: KbRecord) -> None:
    """Delete a knowledge base: its running tasks are cancelled (fenced, flagged), its collection and
    blobs become garbage, and it is gone from the database (and so from search) at once."""
    cancelled = await asyncio.to_thread(core.repo.kbs.delete, kb.id)
    await flag_cancelled(core, cancelled)


# ------------------------------------------------------------------------------------------ documents


@dataclasses.dataclass(frozen=True, slots=True)
class StagedUpload:
    """An upload's file, stored under `blob_key` and not yet a document (`submit_staged` makes it one;
    its blob is garbage unless that happens within `UPLOAD_COMMIT_WINDOW_S`). `key`: its source key unless
    the request names one (`common.uploads.upload_key` of the name it was sent under)."""

    filename: str
    blob_key: str
    size_bytes: int
    sha256: str
    key: str


async def submit(core: Core, kb: KbRecord, filename: str, data: bytes, *, source_id: str | None = None,
                 priority: str = "normal") -> Submission:
    """Submit one upload under its source key (default: `upload_key` of its name) and enqueue its task.

    A new key adds a document; the content the document already has (by SHA-256) leaves it unchanged,
    with no task and nothing stored; new content starts a new parse version of the same document, which
    replaces the live one when it completes (search serves the old chunks until then), and cancels an
    older upload's unfinished tasks (the later upload wins)."""
    check_upload_size(filename, len(data), core.settings.limits.max_upload_bytes)
    check_priority(priority)  # before anything is stored
    digest = await _digest(data)
    key = check_source_id(upload_key(filename, digest) if source_id is None else source_id)
    unchanged = await asyncio.to_thread(core.repo.documents.unchanged, kb.id, key, digest)
    if unchanged is not None:
        return Submission(unchanged, Outcome.UNCHANGED)
    return await _write_rows(core, kb, await _store(core, kb, filename, data, digest), key, priority)


async def stage_upload(core: Core, kb: KbRecord, filename: str, data: bytes) -> StagedUpload:
    """Store one file of an upload that is still streaming in, so that only this file is held in memory;
    `submit_staged` (or `discard_staged`) follows once the whole request is read and checked."""
    check_upload_size(filename, len(data), core.settings.limits.max_upload_bytes)
    return await _store(core, kb, filename, data, await _digest(data))


async def submit_staged(core: Core, kb: KbRecord, staged: StagedUpload, *, source_id: str | None = None,
                        priority: str = "normal") -> Submission:
    """`submit` for a file `stage_upload` stored: unchanged content releases the stored copy."""
    check_priority(priority)
    key = check_source_id(staged.key if source_id is None else source_id)
    unchanged = await asyncio.to_thread(core.repo.documents.unchanged, kb.id, key, staged.sha256)
    if unchanged is not None:
        await asyncio.to_thread(core.repo.garbage.release_blobs, [staged.blob_key], "upload unchanged")
        return Submission(unchanged, Outcome.UNCHANGED)
    return await _write_rows(core, kb, staged, key, priority)


async def discard_staged(core: Core, staged: list[StagedUpload], reason: str) -> None:
    """Staged files of a refused request: their blobs are garbage now."""
    if staged:
        await asyncio.to_thread(core.repo.garbage.release_blobs, [upload.blob_key for upload in staged], reason)


async def _digest(data: bytes) -> str:
    return await asyncio.to_thread(_sha256, data) if len(data) > HASH_IN_THREAD_BYTES else _sha256(data)


async def _store(core: Core, kb: KbRecord, name: str, data: bytes, digest: str) -> StagedUpload:
    """Store an upload sent under `name` (as sent: its stored file name and its key are derived here)."""
    blob_key = f"kb/{kb.id}/{uuid.uuid4().hex}"
    await asyncio.to_thread(core.repo.garbage.intend_blob, kb.id, blob_key, commit_within_s=UPLOAD_COMMIT_WINDOW_S)
    await core.store.put(blob_key, data)
    return StagedUpload(safe_filename(name), blob_key, len(data), digest, upload_key(name, digest))


async def _write_rows(core: Core, kb: KbRecord, staged: StagedUpload, key: str, priority: str) -> Submission:
    submission = await asyncio.to_thread(
        core.repo.documents.submit, kb, source_id=key, filename=staged.filename, size_bytes=staged.size_bytes,
        sha256=staged.sha256, blob_key=staged.blob_key, priority=priority,
    )
    await flag_cancelled(core, submission.superseded)
    if submission.task is None:
        return submission
    return dataclasses.replace(submission, task=await enqueue(core, submission.task))


async def enqueue(core: Core, task: TaskRecord) -> TaskRecord:
    """XADD a queued task and record its stream entry id."""
    stream_id = await core.queue.enqueue(task.id, task.priority)
    await asyncio.to_thread(core.repo.tasks.mark_enqueued, task.id, stream_id)
    return await asyncio.to_thread(core.repo.tasks.get, task.id)


async def reparse(core: Core, document_id: str, *, priority: str = "normal") -> TaskRecord:
    """Queue a new parse version of a document; the current one stays live until it completes."""
    task = await asyncio.to_thread(core.repo.documents.reparse, document_id, priority)
    return await enqueue(core, task)


async def delete_document(core: Core, document_id: str) -> None:
    """Delete a document: its running tasks are cancelled (fenced, flagged), its chunks and blob become
    garbage, and it is gone from the database (and so from search) at once."""
    cancelled = await asyncio.to_thread(core.repo.documents.delete, document_id)
    await flag_cancelled(core, cancelled)


# ---------------------------------------------------------------------------------------------- tasks


async def cancel(core: Core, task_id: str) -> TaskRecord:
    """Mark a task cancelled in the DB (its parse becomes garbage), then flag it in Redis for the worker
    running it. Cancelling one page-range part of a split document cancels every part of that parse."""
    task = await asyncio.to_thread(core.repo.tasks.cancel, task_id)
    flagged = [task_id]
    if task.is_split:
        flagged += await asyncio.to_thread(
            core.repo.ledger.cancel_parts, task.document_id, task.parse_version, f"part {task.part + 1} was cancelled",
            TaskStatus.CANCELLED,
        )
    await flag_cancelled(core, flagged)
    return task


async def flag_cancelled(core: Core, task_ids: list[str]) -> None:
    """Set the Redis cancel flags that running workers check between stages and batches."""
    if task_ids:
        async with core.redis.pipeline(transaction=False) as pipe:
            for tid in task_ids:
                pipe.set(core.keys.cancel(tid), "1", ex=CANCEL_FLAG_TTL_S)
            await pipe.execute()


async def retry(core: Core, task_id: str) -> TaskRecord:
    """Re-run a failed or cancelled task from the start (under a new parse version)."""
    task = await asyncio.to_thread(core.repo.tasks.retry, task_id)
    await core.redis.delete(core.keys.cancel(task_id))
    return await enqueue(core, task)


async def fail(core: Core, task_id: str, version: int, reason: str) -> TaskRecord | None:
    """Fail a task for good (a worker's verdict, fenced by `version`); its parse becomes garbage. A failed
    page-range part fails its whole parse: the other parts are cancelled. None if fenced out."""
    if not await asyncio.to_thread(core.repo.ledger.fail, task_id, version, reason):
        return None
    task = await asyncio.to_thread(core.repo.tasks.get, task_id)
    if task.is_split:
        siblings = await asyncio.to_thread(
            core.repo.ledger.cancel_parts, task.document_id, task.parse_version, f"part {task.part + 1} failed",
            TaskStatus.FAILED,
        )
        await flag_cancelled(core, siblings)
    return task


# --------------------------------------------------------------------------------------------- search


async def search(repo: Repository, chunks: ChunkStore, kb: KbRecord, vector: np.ndarray, top_k: int, *,
                 filter: str | None = None) -> list[ChunkHit]:
    """The `top_k` best chunks of `kb` that belong to the live parse version of an existing document.

    The store may still hold garbage (removed in the background) and chunks of versions being written;
    candidates are over-fetched and checked against the database, in a few bounded rounds.
    """
    want = SEARCH_OVERFETCH * top_k + SEARCH_EXTRA
    live: list[ChunkHit] = []
    for _ in range(SEARCH_MAX_ROUNDS):
        limit = min(want, SEARCH_MAX_CANDIDATES)
        candidates = await chunks.search(kb.collection, vector, limit, filter=filter)
        versions = await asyncio.to_thread(repo.documents.live_versions, [h.document_id for h in candidates])
        live = [h for h in candidates if versions.get(h.document_id) == h.parse_version]
        if len(live) >= top_k or len(candidates) < limit or limit >= SEARCH_MAX_CANDIDATES:
            break
        want = limit * 4
    return live[:top_k]
