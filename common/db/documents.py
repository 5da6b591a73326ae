"""Documents: create (with the first task), reparse, read, delete (chunks and blob become garbage),
and which parse version of each is live (what search may return)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from common.db.garbage import GarbageStore
from common.db.records import (
    ACTIVE_STATUSES,
    DocumentRecord,
    GarbageKind,
    KbRecord,
    TaskRecord,
    TaskStatus,
    check_priority,
)
from common.db.store import IN_LIST_MAX, Store, document_record, new_id, task_record
from common.errors import Conflict, NotFound


class Documents(Store):
    """The `document` table (and the tasks a document's creation or reparse queues)."""

    def __init__(self, *args: object, garbage: GarbageStore) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._garbage = garbage

    def create(self, kb: KbRecord, *, filename: str, size_bytes: int, sha256: str, blob_key: str,
               priority: str = "normal") -> tuple[DocumentRecord, TaskRecord]:
        """Insert a queued document and its first task (parse_version 1, version 1) in one transaction; the
        upload's blob stops being garbage (see `GarbageStore.intend_blob`)."""
        check_priority(priority)
        now = time.time()
        doc_id = new_id()
        with self.session.transaction():
            if self.m.kb.get_or_none(self.m.kb.id == kb.id) is None:
                raise NotFound(f"knowledge base {kb.name!r} not found")
            doc = self.m.document.create(
                id=doc_id, kb=kb.id, tenant=kb.tenant, filename=filename, format=None, size_bytes=size_bytes,
                sha256=sha256, blob_key=blob_key, status=TaskStatus.QUEUED.value, chunk_count=0, token_count=0,
                parse_version=0, next_parse_version=1, created_at=now, updated_at=now,
            )
            task = self.insert_task(doc_id, kb.id, kb.tenant, parse_version=1, priority=priority, now=now)
            self._garbage.claim_blob(blob_key)
        return document_record(doc), task_record(task)

    def reparse(self, document_id: str, priority: str = "normal") -> TaskRecord:
        """Queue a new parse of a document with the next parse version; `Conflict` while one is active."""
        check_priority(priority)
        doc, task = self.m.document, self.m.task
        now = time.time()
        with self.session.transaction():
            # The UPDATE comes first: it locks the document row, serialising concurrent reparses.
            bumped = doc.update(
                next_parse_version=doc.next_parse_version + 1, status=TaskStatus.QUEUED.value, updated_at=now,
            ).where(doc.id == document_id).execute()
            if bumped == 0:
                raise NotFound(f"document {document_id} not found")
            active = task.select(task.id).where(
                (task.document == document_id) & (task.status.in_([s.value for s in ACTIVE_STATUSES]))
            ).exists()
            if active:
                raise Conflict(f"document {document_id} already has a queued or running task")
            row = self.doc_row(document_id)
            new_task = self.insert_task(document_id, row.kb_id, row.tenant, parse_version=row.next_parse_version,
                                        priority=priority, now=now)
        return task_record(new_task)

    def get(self, document_id: str) -> DocumentRecord:
        with self.session.read():
            return document_record(self.doc_row(document_id))

    def of_kb(self, kb_id: str, *, limit: int = 100, offset: int = 0) -> list[DocumentRecord]:
        """A knowledge base's documents, newest first."""
        doc = self.m.document
        with self.session.read():
            rows = list(doc.select().where(doc.kb == kb_id).order_by(doc.created_at.desc(), doc.id.desc())
                        .limit(limit).offset(offset))
        return [document_record(r) for r in rows]

    def delete(self, document_id: str) -> list[str]:
        """Delete a document and its tasks; its chunks (every version) and its blob become garbage in the
        same transaction. Returns the ids of the tasks that were queued or running (to flag in Redis):
        their workers are fenced out, their rows are gone."""
        task, doc = self.m.task, self.m.document
        now = time.time()
        with self.session.transaction():
            # The UPDATE locks the document row first: a concurrent completion or reparse serialises here.
            if doc.update(updated_at=now).where(doc.id == document_id).execute() == 0:
                raise NotFound(f"document {document_id} not found")
            row = self.doc_row(document_id)
            kb_row = self.m.kb.get_by_id(row.kb_id)
            active = [r.id for r in task.select(task.id).where(
                (task.document == document_id) & task.status.in_([s.value for s in ACTIVE_STATUSES]))]
            self._garbage.add(GarbageKind.CHUNKS, "document deleted", kb_id=row.kb_id, now=now,
                              collection=kb_row.collection, document_id=document_id)
            self._garbage.add(GarbageKind.BLOB, "document deleted", kb_id=row.kb_id, now=now, blob_key=row.blob_key)
            task.delete().where(task.document == document_id).execute()
            doc.delete().where(doc.id == document_id).execute()
        return active

    def live_versions(self, document_ids: Sequence[str]) -> dict[str, int]:
        """The live parse version of each of `document_ids` that exists and has one (search's truth)."""
        doc = self.m.document
        ids = list(dict.fromkeys(document_ids))
        live: dict[str, int] = {}
        with self.session.read():
            for begin in range(0, len(ids), IN_LIST_MAX):
                query = doc.select(doc.id, doc.parse_version).where(
                    doc.id.in_(ids[begin : begin + IN_LIST_MAX]) & (doc.parse_version > 0)
                )
                live.update((doc_id, int(version)) for doc_id, version in query.tuples())
        return live
