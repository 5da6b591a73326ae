"""Documents: submit by source key (create, update to a new parse version, or leave unchanged), reparse,
read, delete (chunks and blob become garbage), and which parse version of each is live (what search may
return)."""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import peewee

from common.db.garbage import GarbageStore
from common.db.listing import Page, contains_ignoring_case
from common.db.records import (
    ACTIVE_STATUSES,
    DocumentRecord,
    GarbageKind,
    KbRecord,
    TaskRecord,
    TaskStatus,
    check_priority,
)
from common.db.store import IN_LIST_MAX, Store, document_record, kb_record, log_line, new_id, task_record
from common.errors import Conflict, NotFound

# A document whose content is submitted again unchanged is left alone while its content is on its way to
# being live or is live; a failed or cancelled one is parsed again.
_CURRENT_STATUSES = (TaskStatus.QUEUED.value, TaskStatus.RUNNING.value, TaskStatus.DONE.value)


def _unchanged(sha256: str, status: str, submitted_sha256: str) -> bool:
    """Whether submitting content `submitted_sha256` to a document with `sha256` and `status` changes nothing."""
    return sha256 == submitted_sha256 and status in _CURRENT_STATUSES


class Outcome(enum.StrEnum):
    ADDED = "added"  # a new source key: a new document
    UPDATED = "updated"  # new content for a known key: a new parse version of the same document
    UNCHANGED = "unchanged"  # the same content as the document already has: nothing to do


@dataclass(frozen=True, slots=True)
class Submission:
    """What submitting one upload did: `task` is None when `outcome` is unchanged; `superseded`, the ids
    of the older upload's tasks it cancelled (to flag in Redis)."""

    document: DocumentRecord
    outcome: Outcome
    task: TaskRecord | None = None
    superseded: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SourceState:
    """A keyed document as sync compares it: its id, its content hash and its status."""

    document_id: str
    sha256: str
    status: TaskStatus

    def unchanged_by(self, sha256: str) -> bool:
        """Whether submitting content `sha256` would leave it unchanged."""
        return _unchanged(self.sha256, self.status.value, sha256)


class Documents(Store):
    """The `document` table (and the tasks a document's creation or reparse queues)."""

    def __init__(self, *args: object, garbage: GarbageStore) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._garbage = garbage

    def submit(self, kb: KbRecord, *, source_id: str, filename: str, size_bytes: int, sha256: str, blob_key: str,
               priority: str = "normal") -> Submission:
        """Submit an upload under its source key: a new key adds a document; new content for a key updates
        it (a new parse version: the live one stays searchable until the new one replaces it; an older
        upload's unfinished tasks are cancelled, the later upload wins); the same content leaves it as it
        is. The upload's blob is claimed, or garbage when nothing needs it, in the same transaction."""
        check_priority(priority)
        for _ in range(2):  # a concurrent submission of a new key may create it first: then it is an update
            try:
                return self._submit(kb, source_id, filename, size_bytes, sha256, blob_key, priority)
            except peewee.IntegrityError:
                continue
        raise Conflict(f"source {source_id!r} is being submitted concurrently; try again")

    def _submit(self, kb: KbRecord, source_id: str, filename: str, size_bytes: int, sha256: str, blob_key: str,
                priority: str) -> Submission:
        doc = self.m.document
        now = time.time()
        with self.session.transaction():
            if self.m.kb.get_or_none(self.m.kb.id == kb.id) is None:
                raise NotFound(f"knowledge base {kb.name!r} not found")
            # The UPDATE locks the keyed row first: concurrent submissions of one key serialise here.
            key = (doc.kb == kb.id) & (doc.source_id == source_id)
            if doc.update(updated_at=now).where(key).execute() == 0:
                row = doc.create(
                    id=new_id(), kb=kb.id, tenant=kb.tenant, filename=filename, format=None, size_bytes=size_bytes,
                    sha256=sha256, blob_key=blob_key, status=TaskStatus.QUEUED.value, chunk_count=0, token_count=0,
                    parse_version=0, next_parse_version=1, source_id=source_id, created_at=now, updated_at=now,
                )
                task = self.insert_task(row.id, kb.id, kb.tenant, parse_version=1, priority=priority, now=now)
                self._garbage.claim_blob(blob_key)
                return Submission(document_record(row), Outcome.ADDED, task_record(task))
            row = doc.get(key)
            if _unchanged(row.sha256, row.status, sha256):
                self._garbage.claim_blob(blob_key)
                self._garbage.add(GarbageKind.BLOB, "unchanged upload", kb_id=kb.id, now=now, blob_key=blob_key)
                return Submission(document_record(row), Outcome.UNCHANGED)
            superseded = self._cancel_active(row.id, "superseded by a newer upload", now)
            if row.blob_key != blob_key:
                self._garbage.add(GarbageKind.BLOB, "replaced by a newer upload", kb_id=kb.id, now=now,
                                  blob_key=row.blob_key)
            doc.update(filename=filename, size_bytes=size_bytes, sha256=sha256, blob_key=blob_key,
                       status=TaskStatus.QUEUED.value, next_parse_version=doc.next_parse_version + 1,
                       updated_at=now).where(doc.id == row.id).execute()
            row = self.doc_row(row.id)
            task = self.insert_task(row.id, kb.id, kb.tenant, parse_version=row.next_parse_version, priority=priority,
                                    now=now)
            self._garbage.claim_blob(blob_key)
            return Submission(document_record(row), Outcome.UPDATED, task_record(task), superseded)

    def _cancel_active(self, document_id: str, reason: str, now: float) -> list[str]:
        """Cancel the document's queued and running tasks (every part of their parse; versions bumped so
        their workers are fenced out); their chunk sets become garbage. Returns their ids."""
        task = self.m.task
        # A locking read: under MySQL's REPEATABLE READ a plain SELECT reads the transaction's snapshot,
        # taken before the document row's lock was granted, and would miss the task a concurrent
        # submission of the same key inserted meanwhile (two live uploads; seen under full-suite load).
        query = task.select().where(
            (task.document == document_id) & task.status.in_([s.value for s in ACTIVE_STATUSES])
        )
        active = list(query.for_update() if self.session.db.for_update else query)
        if not active:
            return []
        task.update(
            status=TaskStatus.CANCELLED.value, version=task.version + 1, stage=None, finished_at=now,
            updated_at=now, error=reason, progress_msg=task.progress_msg.concat(log_line(f"cancelled: {reason}", now)),
        ).where(task.id.in_([r.id for r in active])).execute()
        for row in active:
            self._garbage.version_of(row, reason, now)
        return [r.id for r in active]

    def unchanged(self, kb_id: str, source_id: str, sha256: str) -> DocumentRecord | None:
        """The document of `source_id` if submitting content `sha256` would leave it unchanged (a read: the
        caller need not store an upload that changes nothing)."""
        doc = self.m.document
        with self.session.read():
            row = doc.get_or_none((doc.kb == kb_id) & (doc.source_id == source_id))
        return document_record(row) if row is not None and _unchanged(row.sha256, row.status, sha256) else None

    def sources(self, kb_id: str) -> dict[str, SourceState]:
        """Every keyed document of a knowledge base by source key (what sync compares a folder with)."""
        doc = self.m.document
        with self.session.read():
            rows = doc.select(doc.source_id, doc.id, doc.sha256, doc.status).where(
                (doc.kb == kb_id) & doc.source_id.is_null(False)
            ).tuples()
            return {key: SourceState(doc_id, digest, TaskStatus(status)) for key, doc_id, digest, status in rows}

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

    def reindex(self, kb_id: str, *, chunk_tokens: int, overlap_tokens: int, embedding_model: str, dim: int,
                priority: str = "normal") -> tuple[KbRecord, list[TaskRecord], list[str]]:
        """Change a knowledge base's chunking and embedding model and queue a new parse version of every
        document in one transaction (each document's live version stays searchable until its new one is
        done; unfinished tasks are superseded). Returns the knowledge base, the new tasks and the ids of
        the superseded ones. `Conflict` when the model's dimension is not the collection's."""
        check_priority(priority)
        kb, doc = self.m.kb, self.m.document
        now = time.time()
        with self.session.transaction():
            row = kb.get_or_none(kb.id == kb_id)
            if row is None:
                raise NotFound(f"knowledge base {kb_id} not found")
            if dim != row.dim:
                raise Conflict(
                    f"the embedding model {embedding_model!r} makes {dim}-dimensional vectors, but knowledge base "
                    f"{row.name!r} holds {row.dim}-dimensional ones; create a new knowledge base for this model"
                )
            kb.update(chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens,
                      embedding_model=embedding_model).where(kb.id == kb_id).execute()
            document_ids = [d for (d,) in doc.select(doc.id).where(doc.kb == kb_id).order_by(doc.created_at).tuples()]
            tasks: list[TaskRecord] = []
            superseded: list[str] = []
            for document_id in document_ids:
                superseded += self._cancel_active(document_id, "superseded by a reindex", now)
                doc.update(next_parse_version=doc.next_parse_version + 1, status=TaskStatus.QUEUED.value,
                           updated_at=now).where(doc.id == document_id).execute()
                d = self.doc_row(document_id)
                tasks.append(task_record(self.insert_task(
                    document_id, kb_id, d.tenant, parse_version=d.next_parse_version, priority=priority, now=now
                )))
            return kb_record(kb.get_by_id(kb_id)), tasks, superseded

    def get(self, document_id: str, *, tenant: str | None = None) -> DocumentRecord:
        """A document; with `tenant`, `NotFound` too when it is another tenant's."""
        with self.session.read():
            record = document_record(self.doc_row(document_id))
        if tenant is not None and record.tenant != tenant:
            raise NotFound(f"document {document_id} not found")
        return record

    def of_kb(self, kb_id: str, *, limit: int = 100, offset: int = 0) -> list[DocumentRecord]:
        """A knowledge base's documents, newest first (`listing`'s page, without its total)."""
        return self.listing(kb_id, limit=limit, offset=offset).items

    def listing(self, kb_id: str, *, status: TaskStatus | str | None = None, filename_contains: str | None = None,
                limit: int = 50, offset: int = 0) -> Page[DocumentRecord]:
        """A page of a knowledge base's documents, newest first, and how many match in all;
        `filename_contains` is a case-insensitive substring of the file name."""
        doc = self.m.document
        conditions = [doc.kb == kb_id]
        if status is not None:
            conditions.append(doc.status == TaskStatus(status).value)
        if filename_contains:
            conditions.append(contains_ignoring_case(doc.filename, filename_contains))
        rows = (doc.select().where(*conditions).order_by(doc.created_at.desc(), doc.id.desc())
                .limit(limit).offset(offset))
        with self.session.read():
            total = int(doc.select(peewee.fn.COUNT(doc.id)).where(*conditions).scalar() or 0)
            items = [document_record(r) for r in rows]
        return Page(items, total)

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
