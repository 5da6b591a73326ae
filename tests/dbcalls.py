"""One-task shorthands over the worker ledger's batch calls (production code claims, writes and
completes in rounds; tests often want just one)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from common.db import CompleteWrite, Completion, DocumentRecord, KbRecord, ProgressWrite, Repository, TaskRecord


def claim_one(repo: Repository, task_id: str, worker: str) -> TaskRecord | None:
    """Claim a delivery of one task; None if it is terminal or gone."""
    claimed = repo.ledger.claim([task_id], worker)[0]
    return None if claimed is None else claimed.task


def progress_one(repo: Repository, task_id: str, version: int, *, progress: float | None = None,
                 message: str | None = None, stage: str | None = None,
                 stage_timings: Mapping[str, float] | None = None) -> bool:
    """One progress write; False if fenced out."""
    return bool(repo.ledger.write([ProgressWrite(task_id, version, progress, message, stage, stage_timings)])[0])


def complete_one(repo: Repository, task_id: str, version: int, *, chunk_count: int, token_count: int, format: str,
                 stage_timings: Mapping[str, float] | None = None) -> Completion | None:
    """One completion; None if fenced out."""
    result = repo.ledger.write([CompleteWrite(task_id, version, chunk_count, token_count, format, stage_timings)])[0]
    assert not isinstance(result, bool)
    return result


def create_document(repo: Repository, kb: KbRecord, *, filename: str, size_bytes: int, sha256: str, blob_key: str,
                    priority: str = "normal") -> tuple[DocumentRecord, TaskRecord]:
    """A new document under a source key of its own, and its first task."""
    submitted = repo.documents.submit(kb, source_id=uuid.uuid4().hex, filename=filename, size_bytes=size_bytes,
                                      sha256=sha256, blob_key=blob_key, priority=priority)
    assert submitted.task is not None
    return submitted.document, submitted.task
