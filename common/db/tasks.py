"""Tasks: the queries (one, many, by filter, counts, throughput, enqueue bookkeeping for the janitor)
and the user's transitions (cancel, retry). The worker's transitions are `common.db.ledger`'s."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import peewee

from common.db.garbage import GarbageStore
from common.db.listing import Page, TaskListing, contains_ignoring_case
from common.db.records import ACTIVE_STATUSES, TaskRecord, TaskStatus
from common.db.store import IN_LIST_MAX, Store, log_line, task_record
from common.errors import Conflict, NotFound


class Tasks(Store):
    """The `task` table, read by everyone, changed here by users."""

    def __init__(self, *args: object, garbage: GarbageStore) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._garbage = garbage

    def get(self, task_id: str) -> TaskRecord:
        with self.session.read():
            return task_record(self.task_row(task_id))

    def get_many(self, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        """The tasks of `task_ids` that exist, by id."""
        task = self.m.task
        ids = list(task_ids)
        found: dict[str, TaskRecord] = {}
        with self.session.read():
            for begin in range(0, len(ids), IN_LIST_MAX):
                query = task.select().where(task.id.in_(ids[begin : begin + IN_LIST_MAX]))
                found.update((r.id, task_record(r)) for r in query)
        return found

    def query(
        self,
        *,
        status: TaskStatus | str | None = None,
        kb_id: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Tasks, newest first, optionally filtered."""
        task = self.m.task
        query = task.select()
        if status is not None:
            query = query.where(task.status == TaskStatus(status).value)
        if kb_id is not None:
            query = query.where(task.kb_id == kb_id)
        if tenant is not None:
            query = query.where(task.tenant == tenant)
        query = query.order_by(task.created_at.desc(), task.id.desc()).limit(limit).offset(offset)
        with self.session.read():
            rows = list(query)
        return [task_record(r) for r in rows]

    def listing(
        self,
        *,
        tenant: str | None = None,
        status: TaskStatus | str | None = None,
        kb_id: str | None = None,
        kb_name: str | None = None,
        document_id: str | None = None,
        filename_contains: str | None = None,
        task_ids: Sequence[str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[TaskListing]:
        """A page of tasks, newest first, each with its file name and knowledge base name, and how many
        match in all. `tenant` None: every tenant's; `kb_name` matches that name in any tenant;
        `filename_contains` is a case-insensitive substring of the document's file name; `task_ids`:
        only these (a watcher's batched look-up)."""
        task, doc, kb = self.m.task, self.m.document, self.m.kb
        conditions: list[Any] = []
        if tenant is not None:
            conditions.append(task.tenant == tenant)
        if status is not None:
            conditions.append(task.status == TaskStatus(status).value)
        if kb_id is not None:
            conditions.append(task.kb_id == kb_id)
        if kb_name is not None:
            conditions.append(kb.name == kb_name)
        if document_id is not None:
            conditions.append(task.document == document_id)
        if filename_contains:
            conditions.append(contains_ignoring_case(doc.filename, filename_contains))
        if task_ids is not None:
            conditions.append(task.id.in_(list(task_ids)))

        def joined(query: Any) -> Any:
            query = query.join(doc, on=(task.document == doc.id)).switch(task).join(kb, on=(task.kb_id == kb.id))
            return query.where(*conditions) if conditions else query

        rows = joined(task.select(task, doc.filename.alias("doc_filename"), kb.name.alias("kb_name"))).order_by(
            task.created_at.desc(), task.id.desc()).limit(limit).offset(offset).objects()
        with self.session.read():
            total = int(joined(task.select(peewee.fn.COUNT(task.id))).scalar() or 0)
            items = [TaskListing(task_record(r), r.doc_filename, r.kb_name) for r in rows]
        return Page(items, total)

    def of_document(self, document_id: str) -> list[TaskRecord]:
        """A document's tasks, newest first."""
        task = self.m.task
        with self.session.read():
            rows = list(
                task.select()
                .where(task.document == document_id)
                .order_by(task.parse_version.desc(), task.created_at.desc())
            )
        return [task_record(r) for r in rows]

    def active_of_kb(self, kb_id: str) -> dict[str, list[str]]:
        """The queued and running tasks of a knowledge base's documents: document id -> task ids (one
        query, ids only: what a sync waits for when a document's latest version is unfinished)."""
        task = self.m.task
        found: dict[str, list[str]] = {}
        with self.session.read():
            rows = task.select(task.document, task.id).where(
                (task.kb_id == kb_id) & task.status.in_([s.value for s in ACTIVE_STATUSES])
            ).order_by(task.document, task.part).tuples()
            for document_id, task_id in rows:
                found.setdefault(document_id, []).append(task_id)
        return found

    def counts(self, *, tenant: str | None = None, kb_id: str | None = None) -> dict[str, int]:
        """Number of tasks per status (every status present, zeros included)."""
        task = self.m.task
        query = task.select(task.status, peewee.fn.COUNT(task.id).alias("n")).group_by(task.status)
        if tenant is not None:
            query = query.where(task.tenant == tenant)
        if kb_id is not None:
            query = query.where(task.kb_id == kb_id)
        counts = {s.value: 0 for s in TaskStatus}
        with self.session.read():
            for status, n in query.tuples():
                counts[status] = int(n)
        return counts

    def finished_since(self, since: float, until: float, *, limit: int) -> list[tuple[str, float]]:
        """(status, finished_at) of done / failed tasks finished in [since, until), at most `limit`."""
        task = self.m.task
        terminal = (TaskStatus.DONE.value, TaskStatus.FAILED.value)
        query = (
            task.select(task.status, task.finished_at)
            .where((task.finished_at >= since) & (task.finished_at < until) & task.status.in_(terminal))
            .limit(limit)
        )
        with self.session.read():
            return [(status, float(finished_at)) for status, finished_at in query.tuples()]

    # ------------------------------------------------------------------ enqueue bookkeeping

    def mark_enqueued(self, task_id: str, stream_id: str) -> None:
        """Record the stream entry id after XADD."""
        task = self.m.task
        with self.session.transaction():
            changed = task.update(stream_id=stream_id).where(task.id == task_id).execute()
        if changed == 0:
            raise NotFound(f"task {task_id} not found")

    def unenqueued(self, older_than_s: float) -> list[TaskRecord]:
        """Queued tasks never XADDed whose last change is older than `older_than_s` (for the janitor).

        The age counts from `updated_at` (= `created_at` for a new task) so a task just retried is
        left to the caller that retried it.
        """
        task = self.m.task
        cutoff = time.time() - older_than_s
        with self.session.read():
            rows = list(
                task.select()
                .where(
                    (task.status == TaskStatus.QUEUED.value)
                    & task.stream_id.is_null()
                    & (task.updated_at < cutoff)
                )
                .order_by(task.created_at)
            )
        return [task_record(r) for r in rows]

    def active_stream_entries(self, limit: int) -> list[tuple[str, str, str]]:
        """(task id, priority, stream entry id) of queued and running tasks that were enqueued, oldest
        first, at most `limit` (the janitor checks that each entry still exists)."""
        task = self.m.task
        query = (
            task.select(task.id, task.priority, task.stream_id)
            .where(task.status.in_([s.value for s in ACTIVE_STATUSES]) & task.stream_id.is_null(False))
            .order_by(task.created_at)
            .limit(limit)
        )
        with self.session.read():
            return list(query.tuples())

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued or running task (bumping its version); `Conflict` if it already finished."""
        task = self.m.task
        now = time.time()
        with self.session.transaction():
            row = self.locked_task(task.id == task_id)
            if row is None:
                raise NotFound(f"task {task_id} not found")
            if row.status not in ACTIVE_STATUSES:
                raise Conflict(
                    f"task {task_id} is already {row.status}; only queued or running tasks can be cancelled"
                )
            changed = (
                task.update(
                    status=TaskStatus.CANCELLED.value,
                    version=task.version + 1,
                    stage=None,
                    finished_at=now,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(log_line("cancelled", now)),
                )
                .where(self.fenced(task_id, row.version, ACTIVE_STATUSES))
                .execute()
            )
            if changed == 0:  # unreachable while the row is locked; kept as a guard
                raise Conflict(f"task {task_id} changed concurrently; try again")
            self.set_doc_status(row.document_id, TaskStatus.CANCELLED, now)
            self._garbage.version_of(row, f"task {task_id} cancelled", now)
            return task_record(self.task_row(task_id))

    def retry(self, task_id: str) -> TaskRecord:
        """Queue a failed or cancelled task again with a new version; `Conflict` otherwise."""
        task = self.m.task
        now = time.time()
        retryable = (TaskStatus.FAILED, TaskStatus.CANCELLED)
        with self.session.transaction():
            row = self.locked_task(task.id == task_id)
            if row is None:
                raise NotFound(f"task {task_id} not found")
            if row.status not in retryable:
                raise Conflict(
                    f"task {task_id} is {row.status}; only failed or cancelled tasks can be retried"
                )
            # A new parse version: a straggler of the cancelled run can only ever touch (and clean
            # up) its own chunk set, never the one this retry writes. Allocating it first also locks
            # the document row, serialising this check against a concurrent reparse.
            parse_version = self.allocate_parse_version(row.document_id, now)
            self._check_latest_parse(row)
            changed = (
                task.update(
                    status=TaskStatus.QUEUED.value,
                    version=task.version + 1,
                    parse_version=parse_version,
                    attempts=0,
                    error=None,
                    stream_id=None,
                    # A retried page-range part re-runs the whole document (which splits again).
                    part=0,
                    parts=1,
                    page_from=None,
                    page_to=None,
                    chunk_count=0,
                    token_count=0,
                    progress=0.0,
                    stage=None,
                    worker=None,
                    finished_at=None,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(log_line("retry requested", now)),
                )
                .where(self.fenced(task_id, row.version, retryable))
                .execute()
            )
            if changed == 0:
                raise Conflict(f"task {task_id} changed concurrently; try again")
            self.set_doc_status(row.document_id, TaskStatus.QUEUED, now)
            return task_record(self.task_row(task_id))

    def _check_latest_parse(self, row: Any) -> None:
        """A retried task must be the document's newest parse and must not run beside an active one."""
        task = self.m.task
        newer = (
            task.select(task.id)
            .where(
                (task.document == row.document_id)
                & (task.id != row.id)
                & (
                    task.status.in_([s.value for s in ACTIVE_STATUSES])
                    | (task.parse_version > row.parse_version)
                )
            )
            .exists()
        )
        if newer:
            raise Conflict(
                f"task {row.id} is not the latest parse of document {row.document_id}; "
                "reparse the document instead"
            )

