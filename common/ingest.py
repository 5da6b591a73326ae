"""Submitting documents: store the blob, write Document + Task rows, then XADD the task.

The order matters: a crash after the rows and before the XADD leaves a queued task with no stream
entry, which the janitor re-enqueues; the reverse order could enqueue a task with no row.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import uuid

from common.db import DocumentRecord, KbRecord, TaskRecord
from common.errors import InvalidRequest, LimitExceeded
from common.runtime import Core

_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]+")
MAX_FILENAME_CHARS = 255
CANCEL_FLAG_TTL_S = 7 * 24 * 3600


def safe_filename(name: str) -> str:
    """The last path component of an uploaded name, without control characters or separators."""
    base = re.split(r"[/\\]", name or "")[-1]
    cleaned = _UNSAFE_NAME_CHARS.sub("_", base).strip().lstrip(".") or "document"
    return cleaned[:MAX_FILENAME_CHARS]


async def submit_document(core: Core, kb: KbRecord, filename: str, data: bytes, *,
                          priority: str = "normal") -> tuple[DocumentRecord, TaskRecord]:
    """Store and enqueue one document of `kb`; returns its rows (the task already in its stream)."""
    limit = core.settings.limits.max_upload_bytes
    if len(data) > limit:
        raise LimitExceeded(f"{filename}: {len(data)} bytes exceeds limits.max_upload_bytes ({limit})")
    if priority not in ("high", "normal"):
        raise InvalidRequest(f"priority must be 'high' or 'normal', not {priority!r}")
    name = safe_filename(filename)
    blob_key = f"kb/{kb.id}/{uuid.uuid4().hex}"
    await core.store.put(blob_key, data)
    document, task = await asyncio.to_thread(
        core.repo.create_document, kb, filename=name, size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(), blob_key=blob_key, priority=priority,
    )
    task = await enqueue(core, task)
    return document, task


async def enqueue(core: Core, task: TaskRecord) -> TaskRecord:
    """XADD a queued task and record its stream entry id."""
    stream_id = await core.queue.enqueue(task.id, task.priority)
    await asyncio.to_thread(core.repo.mark_enqueued, task.id, stream_id)
    return await asyncio.to_thread(core.repo.get_task, task.id)


async def cancel(core: Core, task_id: str) -> TaskRecord:
    """Mark a task cancelled in the DB, then flag it in Redis for the worker running it.

    Cancelling one page-range part of a split document cancels every part of that parse.
    """
    task = await asyncio.to_thread(core.repo.cancel_task, task_id)
    flagged = [task_id]
    if task.is_split:
        flagged += await asyncio.to_thread(
            core.repo.cancel_parts, task.document_id, task.parse_version, f"part {task.part + 1} was cancelled"
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
    """Re-run a failed or cancelled task from the start."""
    task = await asyncio.to_thread(core.repo.retry_task, task_id)
    await core.redis.delete(core.keys.cancel(task_id))
    return await enqueue(core, task)


async def create_kb(core: Core, name: str, *, tenant: str, chunk_tokens: int | None = None,
                    overlap_tokens: int | None = None) -> KbRecord:
    """Create a knowledge base whose chunking defaults come from settings and whose dimension and
    model name come from the configured embedder."""
    chunking = core.settings.chunking
    embedder = await core.embedders.get()
    size = chunk_tokens or chunking.chunk_tokens
    overlap = overlap_tokens if overlap_tokens is not None else chunking.overlap_tokens
    if overlap >= size:
        raise InvalidRequest(f"overlap_tokens ({overlap}) must be smaller than chunk_tokens ({size})")
    return await asyncio.to_thread(
        core.repo.create_kb, name, tenant=tenant, chunk_tokens=size, overlap_tokens=overlap,
        embedding_model=embedder.name, dim=embedder.dim,
    )
