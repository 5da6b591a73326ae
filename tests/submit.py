"""Submitting in tests: most want the rows of one new (or changed) document and its queued task."""

from __future__ import annotations

from common.db import DocumentRecord, KbRecord, TaskRecord
from common.runtime import Core
from lifecycle import documents as lifecycle


async def submit_document(core: Core, kb: KbRecord, filename: str, data: bytes, *, source_id: str | None = None,
                          priority: str = "normal") -> tuple[DocumentRecord, TaskRecord]:
    """Submit one upload that adds or updates a document; its rows and its queued task."""
    submission = await lifecycle.submit(core, kb, filename, data, source_id=source_id, priority=priority)
    assert submission.task is not None, f"{filename} was unchanged: nothing was queued"
    return submission.document, submission.task
