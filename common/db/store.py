"""What the stores of a `Repository` share: the session, the models, and the row helpers that more
than one of them needs (fences, row locks, task rows, document status, parse versions)."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import peewee

from common.db.connection import Session
from common.db.models import Models
from common.db.records import DocumentRecord, GarbageRecord, KbRecord, TaskRecord, TaskStatus, builder
from common.errors import NotFound

IN_LIST_MAX = 500  # ids per IN (...) list: far below every database's limit on bound parameters

kb_record = builder(KbRecord)
document_record = builder(DocumentRecord)
task_record = builder(TaskRecord)
garbage_record = builder(GarbageRecord)


def new_id() -> str:
    return uuid.uuid4().hex


@functools.lru_cache(maxsize=8)
def stamp(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def log_line(message: str, now: float) -> str:
    """One line of a task's progress log: `<UTC stamp> <message>` (newlines flattened)."""
    one_line = " ".join(message.splitlines()) if "\n" in message or "\r" in message else message
    return f"{stamp(int(now))} {one_line}\n"


def timings_json(stage_timings: Mapping[str, float]) -> str:
    return json.dumps({k: round(float(v), 6) for k, v in stage_timings.items()}, sort_keys=True)


class Store:
    """Base of the stores: one `Session` and the database's models."""

    def __init__(self, session: Session, models: Models) -> None:
        self.session = session
        self.m = models

    def task_row(self, task_id: str) -> Any:
        row = self.m.task.get_or_none(self.m.task.id == task_id)
        if row is None:
            raise NotFound(f"task {task_id} not found")
        return row

    def doc_row(self, document_id: str) -> Any:
        row = self.m.document.get_or_none(self.m.document.id == document_id)
        if row is None:
            raise NotFound(f"document {document_id} not found")
        return row

    def fenced(self, task_id: str | peewee.Value, version: int | peewee.Value,
               statuses: Iterable[TaskStatus] = (TaskStatus.RUNNING,)) -> Any:
        """The WHERE of a write made for one delivery: its task, its fencing version, its statuses."""
        task = self.m.task
        return (task.id == task_id) & (task.version == version) & task.status.in_([s.value for s in statuses])

    def locked_task(self, where: Any) -> Any:
        """Read one task row, locking it (FOR UPDATE) where the database supports row locks.

        SQLite has none, but every write transaction there starts with BEGIN IMMEDIATE, which serialises
        writers just as well.
        """
        query = self.m.task.select().where(where)
        if self.session.db.for_update:
            query = query.for_update()
        return query.first()

    def set_doc_status(self, document_id: str, status: TaskStatus, now: float) -> None:
        doc = self.m.document
        doc.update(status=status.value, updated_at=now).where(doc.id == document_id).execute()

    def allocate_parse_version(self, document_id: str, now: float) -> int:
        """Bump and return the document's latest allocated parse version (inside a transaction)."""
        doc = self.m.document
        doc.update(next_parse_version=doc.next_parse_version + 1, updated_at=now).where(
            doc.id == document_id
        ).execute()
        return int(self.doc_row(document_id).next_parse_version)

    def insert_task(self, document_id: str, kb_id: str, tenant: str, *, parse_version: int, priority: str,
                    now: float, part: tuple[int, int, int, int] | None = None) -> Any:
        """Insert a queued task; `part` = (part, parts, page_from, page_to) for a page-range part."""
        index, parts, page_from, page_to = part or (0, 1, None, None)
        return self.m.task.create(
            part=index, parts=parts, page_from=page_from, page_to=page_to, id=new_id(), document=document_id,
            kb_id=kb_id, tenant=tenant, status=TaskStatus.QUEUED.value, priority=priority,
            parse_version=parse_version, version=1, progress=0.0, progress_msg=log_line("queued", now),
            stage=None, stage_timings="{}", attempts=0, created_at=now, updated_at=now,
        )
