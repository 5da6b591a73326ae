"""The worker ledger: what workers write about their deliveries — claims, progress, completions
(group-committed, one transaction per round of many tasks), splits into page-range parts, failures,
requeues — each fenced by the delivery's version. A completion that makes a parse live records the
version it replaces as garbage in the same transaction."""

from __future__ import annotations

import collections
import functools
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee

from common.db.garbage import GarbageStore
from common.db.records import (
    ACTIVE_STATUSES,
    ClaimedTask,
    CompleteWrite,
    Completion,
    ProgressWrite,
    TaskRecord,
    TaskStatus,
    TaskWrite,
)
from common.db.statements import Statement, arg
from common.db.store import Store, document_record, kb_record, log_line, stamp, task_record, timings_json
from common.errors import Conflict, InvalidRequest

SELECT_IDS = 64  # ids per execution of the worker's prepared IN (...) reads
LOST_DELIVERY_LINE = "its queue entry was lost (Redis restarted without it): this attempt is not counted"
RETURNED_LINE = "worker stopping: returned to the queue (this attempt is not counted)"


@dataclass(slots=True)
class _Carried:
    """Progress writes of one delivery merged into one UPDATE (see `Repository.write_tasks`)."""

    task_id: str
    version: int
    indices: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    progress: float | None = None
    stage: str | None = None
    timings: str | None = None

    def add(self, index: int, write: ProgressWrite, timings: str | None, now: float) -> None:
        self.indices.append(index)
        if write.message is not None:
            self.lines.append(log_line(write.message, now))
        if write.progress is not None:
            self.progress = min(1.0, max(0.0, float(write.progress)))
        self.stage = write.stage if write.stage is not None else self.stage
        self.timings = timings if timings is not None else self.timings




class WorkerLedger(Store):
    """Every write a worker makes about its deliveries."""

    def __init__(self, *args: object, garbage: GarbageStore) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._garbage = garbage
        self._sql = self._worker_statements()

    def _worker_statements(self) -> dict[str, Statement]:
        """The per-row statements of the worker's writes (`claim_tasks`, `write_tasks`)."""
        task, doc, kb = self.m.task, self.m.document, self.m.kb
        running = TaskStatus.RUNNING.value
        ids = [arg(f"id{i}") for i in range(SELECT_IDS)]
        fenced = self.fenced(arg("id"), arg("version"))
        return {
            "claim": Statement(task.update({
                task.status: running,
                task.attempts: task.attempts + 1,
                # Each delivery gets its own fencing token: a worker whose entry was reclaimed by another
                # can no longer write progress or complete the task.
                task.version: task.version + 1,
                task.worker: arg("worker"),
                task.started_at: peewee.fn.COALESCE(task.started_at, arg("now")),
                task.stage: None,
                task.updated_at: arg("now"),
                # "<stamp> attempt <N> on <worker>": N is the new attempts count.
                task.progress_msg: task.progress_msg.concat(arg("before")).concat(task.attempts + 1).concat(
                    arg("after")
                ),
            }).where((task.id == arg("id")) & task.status.in_([s.value for s in ACTIVE_STATUSES]))),
            "claimed": Statement(
                task.select(*self._claimed_fields)
                .join(doc, on=(task.document == doc.id))
                .join(kb, on=(doc.kb == kb.id))
                .where(task.id.in_(ids) & (task.status == running))
            ),
            "document_running": Statement(
                doc.update({doc.status: running, doc.updated_at: arg("now")}).where(doc.id == arg("id"))
            ),
            "completed": Statement(
                task.select(task.id, task.document, task.parse_version, task.parts, doc.parse_version, doc.kb,
                            kb.collection)
                .join(doc, on=(task.document == doc.id))
                .join(kb, on=(doc.kb == kb.id))
                .where(task.id.in_(ids))
            ),
            "progress": Statement(task.update({
                task.updated_at: arg("now"),
                task.progress: peewee.fn.COALESCE(arg("progress"), task.progress),
                task.stage: peewee.fn.COALESCE(arg("stage"), task.stage),
                task.progress_msg: task.progress_msg.concat(arg("line")),
                task.stage_timings: peewee.fn.COALESCE(arg("timings"), task.stage_timings),
            }).where(fenced)),
            "complete": Statement(task.update({
                task.status: TaskStatus.DONE.value,
                task.progress: 1.0,
                task.stage: None,
                task.chunk_count: arg("chunks"),
                task.token_count: arg("tokens"),
                task.chunks_embedded: arg("embedded"),
                task.chunks_reused: arg("reused"),
                task.finished_at: arg("now"),
                task.updated_at: arg("now"),
                task.progress_msg: task.progress_msg.concat(arg("line")),
                task.stage_timings: peewee.fn.COALESCE(arg("timings"), task.stage_timings),
            }).where(fenced)),
            "document_done": Statement(doc.update({
                doc.status: TaskStatus.DONE.value,
                doc.chunk_count: arg("chunks"),
                doc.token_count: arg("tokens"),
                doc.chunks_embedded: arg("embedded"),
                doc.chunks_reused: arg("reused"),
                doc.format: arg("format"),
                doc.parse_version: arg("parse_version"),
                doc.updated_at: arg("now"),
            }).where(doc.id == arg("id"))),
        }

    @property
    def _claimed_models(self) -> tuple[Any, Any, Any]:
        """The models a claimed task's row joins, in the order of its columns."""
        return (self.m.task, self.m.document, self.m.kb)

    @property
    def _claimed_fields(self) -> list[Any]:
        """The columns of a claimed task's row: the task's, its document's, its knowledge base's."""
        return [f for m in self._claimed_models for f in m._meta.sorted_fields]

    @functools.cached_property
    def _row_types(self) -> tuple[Any, Any, Any]:
        """Named tuples for the task, document and knowledge base parts of a claimed row (attribute access
        for the `_*_record` builders at a fraction of a model instance's cost)."""
        task_row, doc_row, kb_row = (
            collections.namedtuple(f"{m.__name__}Row", [f.column_name for f in m._meta.sorted_fields])
            for m in self._claimed_models
        )
        return task_row, doc_row, kb_row

    def _execute(self, cursor: Any, name: str, **values: Any) -> int:
        """Run one of `_sql` with `values` on `cursor`; the number of rows it matched."""
        statement = self._sql[name]
        cursor.execute(statement.sql, statement.params(values))
        return int(cursor.rowcount)

    def _select_ids(self, cursor: Any, name: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """The rows of statement `name`, whose WHERE has `IN (:id0 ... :id<SELECT_IDS - 1>)`, for `ids`:
        one execution per SELECT_IDS ids, padded by repeating an id so that the statement's text (and
        so the driver's cached prepared statement) never changes."""
        statement = self._sql[name]
        rows: list[tuple[Any, ...]] = []
        for begin in range(0, len(ids), SELECT_IDS):
            chunk = list(ids[begin : begin + SELECT_IDS])
            chunk += chunk[:1] * (SELECT_IDS - len(chunk))
            cursor.execute(statement.sql, statement.params({f"id{i}": v for i, v in enumerate(chunk)}))
            rows.extend(cursor.fetchall())
        return rows

    def _execute_many(self, cursor: Any, name: str, rows: Iterable[Mapping[str, Any]]) -> None:
        statement = self._sql[name]
        cursor.executemany(statement.sql, [statement.params(values) for values in rows])

    def claim(self, task_ids: Sequence[str], worker: str) -> list[ClaimedTask | None]:
        """Claim a delivery of each task for `worker` in one transaction: running, attempts += 1, a new
        fencing version, "attempt N on worker" logged, its document marked running. Returns each task
        with its document and knowledge base, or None where the task is terminal or gone.

        A task named twice is claimed twice (an entry delivered twice): the later claim fences out the
        earlier, as two separate deliveries would.
        """
        results: list[ClaimedTask | None] = [None] * len(task_ids)
        rounds: list[dict[str, int]] = []  # task id -> index, one claim per task per round
        for index, task_id in enumerate(task_ids):
            free = next((r for r in rounds if task_id not in r), None)
            if free is None:
                free = {}
                rounds.append(free)
            free[task_id] = index
        with self.session.transaction():
            for claims in rounds:
                for claimed in self._claim_round(list(claims), worker):
                    results[claims[claimed.task.id]] = claimed
        return results

    def _claim_round(self, task_ids: list[str], worker: str) -> list[ClaimedTask]:
        now = time.time()
        cursor = self.session.db.cursor()
        before, after = f"{stamp(int(now))} attempt ", f" on {' '.join(worker.splitlines())}\n"
        self._execute_many(cursor, "claim", (
            {"id": task_id, "worker": worker, "now": now, "before": before, "after": after} for task_id in task_ids
        ))
        # Every active task named is now running for this worker; the others are terminal or gone.
        task_row, doc_row, kb_row = self._row_types
        doc_at = len(task_row._fields)
        kb_at = doc_at + len(doc_row._fields)
        doc_status, doc_updated = doc_row._fields.index("status"), doc_row._fields.index("updated_at")
        out: list[ClaimedTask] = []
        found = {row[0]: row for row in self._select_ids(cursor, "claimed", task_ids)}  # the task's id first
        for task_id in task_ids:
            values = found.get(task_id)
            if values is None:
                continue
            t = task_row._make(values[:doc_at])
            doc_values = list(values[doc_at:kb_at])
            doc_values[doc_status], doc_values[doc_updated] = TaskStatus.RUNNING.value, now  # as just written
            d = doc_row._make(doc_values)
            k = kb_row._make(values[kb_at:])
            out.append(ClaimedTask(task_record(t), document_record(d), kb_record(k)))
        self._execute_many(cursor, "document_running", ({"id": c.document.id, "now": now} for c in out))
        return out

    def write(self, writes: Sequence[TaskWrite]) -> list[bool | Completion | None]:
        """Apply workers' progress writes and completions in one transaction, in order. Each result is
        what `append_progress` / `complete_task` would return for it alone.

        Consecutive writes of one delivery (same task and version) collapse into one UPDATE: progress
        writes into the next progress write or completion of that task, their log lines kept in order.
        The fence is the same for all of them, so they succeed or fail together as they would alone.
        """
        now = time.time()
        results: list[bool | Completion | None] = [None] * len(writes)
        completed: dict[str, tuple[int, CompleteWrite]] = {}  # task id -> (result index, write)
        carried: dict[str, _Carried] = {}  # task id -> its progress writes not executed yet
        with self.session.transaction():
            cursor = self.session.db.cursor()

            def flush(carry: _Carried) -> None:
                written = self._execute(
                    cursor, "progress", id=carry.task_id, version=carry.version, now=now, progress=carry.progress,
                    stage=carry.stage, line="".join(carry.lines), timings=carry.timings,
                ) == 1
                for index in carry.indices:
                    results[index] = written

            for index, write in enumerate(writes):
                carry = carried.pop(write.task_id, None)
                if carry is not None and carry.version != write.version:
                    flush(carry)
                    carry = None
                timings = None if write.stage_timings is None else timings_json(write.stage_timings)
                if isinstance(write, ProgressWrite):
                    carry = carry or _Carried(write.task_id, write.version)
                    carry.add(index, write, timings, now)
                    carried[write.task_id] = carry
                    continue
                lines = [] if carry is None else carry.lines
                done = self._execute(
                    cursor, "complete", id=write.task_id, version=write.version, now=now,
                    chunks=write.chunk_count, tokens=write.token_count, embedded=write.chunks_embedded,
                    reused=write.chunks_reused, line="".join([*lines, log_line("done", now)]),
                    timings=timings if timings is not None or carry is None else carry.timings,
                ) == 1
                for carried_index in [] if carry is None else carry.indices:
                    results[carried_index] = done
                if done:
                    completed[write.task_id] = (index, write)
            for carry in carried.values():
                flush(carry)
            if completed:
                for index, completion in self._finish_documents(cursor, completed, now).items():
                    results[index] = completion
        return results

    def _finish_documents(self, cursor: Any, completed: dict[str, tuple[int, CompleteWrite]],
                          now: float) -> dict[int, Completion]:
        """Make the parse of each just-completed task live on its document (for a page-range part: once
        every part of its parse is done)."""
        task, doc = self.m.task, self.m.document
        out: dict[int, Completion] = {}
        finished: set[tuple[str, int]] = set()  # (document, parse version) made live in this transaction
        live: list[dict[str, Any]] = []
        found = {row[0]: row[1:] for row in self._select_ids(cursor, "completed", list(completed))}
        for task_id, (index, write) in completed.items():  # in the order of the writes
            document_id, parse_version, parts, live_version, kb_id, collection = found[task_id]
            counts = (write.chunk_count, write.token_count, write.chunks_embedded, write.chunks_reused)
            if parts > 1:
                if (document_id, parse_version) in finished:  # a sibling part of this round got there first
                    out[index] = Completion(document_done=False)
                    continue
                # Lock the document row first: concurrent last parts serialise here, and the one that
                # comes second sees the other's commit.
                doc.update(updated_at=now).where(doc.id == document_id).execute()
                siblings = list(
                    task.select(task.status, task.chunk_count, task.token_count, task.chunks_embedded,
                                task.chunks_reused).where(
                        (task.document == document_id) & (task.parse_version == parse_version)
                    ).tuples()
                )
                if len(siblings) < parts or any(row[0] != TaskStatus.DONE.value for row in siblings):
                    out[index] = Completion(document_done=False)
                    continue
                totals = [sum(int(row[k]) for row in siblings) for k in range(1, 5)]
                counts = (totals[0], totals[1], totals[2], totals[3])
            chunk_count, token_count, embedded, reused = counts
            live.append({"id": document_id, "chunks": chunk_count, "tokens": token_count, "format": write.format,
                         "embedded": embedded, "reused": reused, "parse_version": parse_version, "now": now})
            replaced = live_version if live_version and live_version != parse_version else 0
            if replaced:  # the version it replaces is garbage now
                self._garbage.chunks(kb_id, collection, document_id, replaced,
                                    f"replaced by parse version {parse_version}", now)
            finished.add((document_id, parse_version))
            out[index] = Completion(document_done=True, replaced_version=replaced)
        self._execute_many(cursor, "document_done", live)
        return out

    def split(self, task_id: str, version: int, ranges: list[tuple[int, int]]) -> list[TaskRecord]:
        """Split a running whole-document task into page-range parts: it keeps `ranges[0]`, a new queued
        task is created for each other range (same parse version, same priority). Returns the new tasks
        (to be enqueued by the caller; the janitor enqueues any it missed). `Conflict` if fenced out.
        """
        if len(ranges) < 2:
            raise InvalidRequest("a split needs at least two page ranges")
        task = self.m.task
        now = time.time()
        with self.session.transaction():
            row = self.locked_task(self.fenced(task_id, version))
            if row is None:
                raise Conflict(f"task {task_id} was cancelled or superseded before it could be split")
            if row.parts > 1:
                raise Conflict(f"task {task_id} is already part {row.part + 1} of {row.parts}")
            first, last = ranges[0]
            line = log_line(f"split into {len(ranges)} page-range tasks; this one reads pages {first}-{last}", now)
            task.update(
                part=0, parts=len(ranges), page_from=first, page_to=last, updated_at=now,
                progress_msg=task.progress_msg.concat(line),
            ).where(self.fenced(task_id, version)).execute()
            children = [
                self.insert_task(
                    row.document_id, row.kb_id, row.tenant, parse_version=row.parse_version,
                    priority=row.priority, now=now, part=(k, len(ranges), page_from, page_to),
                )
                for k, (page_from, page_to) in enumerate(ranges[1:], start=1)
            ]
        return [task_record(c) for c in children]

    def cancel_parts(self, document_id: str, parse_version: int, reason: str,
                     document_status: TaskStatus) -> list[str]:
        """Cancel the queued or running page-range parts of one parse (a sibling part failed or was
        cancelled); return their ids so the caller can flag them in Redis. If any was still active,
        the document's status is set (again) to `document_status` (the sibling's verdict): a part
        that started between that verdict and this call wrote `running` over it."""
        task = self.m.task
        now = time.time()
        same_parse = (
            (task.document == document_id)
            & (task.parse_version == parse_version)
            & task.status.in_([s.value for s in ACTIVE_STATUSES])
        )
        with self.session.transaction():
            ids = [r.id for r in task.select(task.id).where(same_parse)]
            if ids:
                task.update(
                    status=TaskStatus.CANCELLED.value,
                    version=task.version + 1,
                    stage=None,
                    finished_at=now,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(log_line(f"cancelled: {reason}", now)),
                ).where(same_parse & task.id.in_(ids)).execute()
                self.set_doc_status(document_id, document_status, now)
                self._garbage.version_of(self.task_row(ids[0]), f"parse cancelled: {reason}", now)
        return ids

    def fail(self, task_id: str, version: int, error: str) -> bool:
        """Fail a queued or running task for good (document failed too); False if fenced out."""
        task = self.m.task
        now = time.time()
        with self.session.transaction():
            changed = (
                task.update(
                    status=TaskStatus.FAILED.value,
                    error=error,
                    finished_at=now,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(log_line(f"failed: {error}", now)),
                )
                .where(self.fenced(task_id, version, ACTIVE_STATUSES))
                .execute()
            )
            if changed == 0:
                return False
            row = self.task_row(task_id)
            self.set_doc_status(row.document_id, TaskStatus.FAILED, now)
            self._garbage.version_of(row, f"task {task_id} failed", now)
        return True

    def requeue(self, task_id: str, version: int, error: str) -> bool:
        """Put a running task back to queued after a transient failure (its stream entry stays pending)."""
        task = self.m.task
        now = time.time()
        with self.session.transaction():
            row = self.locked_task(self.fenced(task_id, version))
            if row is None:
                return False
            line = log_line(f"attempt {row.attempts} failed: {error}; will retry", now)
            changed = (
                task.update(
                    status=TaskStatus.QUEUED.value,
                    error=error,
                    stage=None,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(line),
                )
                .where(self.fenced(task_id, version))
                .execute()
            )
            if changed == 0:
                return False
            self.set_doc_status(row.document_id, TaskStatus.QUEUED, now)
        return True

    def refund_lost_delivery(self, task_id: str, version: int) -> bool:
        """The delivery `version` of a running task was lost with Redis's data (its stream entry is gone):
        that attempt was not the document's doing, so it is not counted (the next claim counts anew).
        False if the task moved on meanwhile (fenced)."""
        return self._refund_attempt(task_id, version, LOST_DELIVERY_LINE)

    def return_interrupted(self, task_id: str, version: int) -> bool:
        """The worker running delivery `version` is stopping gracefully (SIGTERM/SIGINT, its grace over) and
        leaves the task's entry unacked for replay: the task is queued again and this attempt is not counted,
        as the document did not end it (a crash runs no code, so a document that kills its worker every time
        still spends its attempts). False if the task moved on meanwhile (fenced)."""
        return self._refund_attempt(task_id, version, RETURNED_LINE, requeue=True)

    def _refund_attempt(self, task_id: str, version: int, reason: str, *, requeue: bool = False) -> bool:
        """Give back the attempt of delivery `version` of a running task (and with `requeue`, mark it and its
        document queued), logging `reason`; fenced by the version, so a straggler cannot undo a newer claim."""
        task = self.m.task
        now = time.time()
        values: dict[Any, Any] = {
            task.attempts: task.attempts - 1,
            task.updated_at: now,
            task.progress_msg: task.progress_msg.concat(log_line(reason, now)),
        }
        if requeue:
            values |= {task.status: TaskStatus.QUEUED.value, task.stage: None}
        with self.session.transaction():
            row = self.locked_task(self.fenced(task_id, version))
            if row is None:
                return False
            changed = task.update(values).where(self.fenced(task_id, version) & (task.attempts > 0)).execute()
            if changed == 1 and requeue:
                self.set_doc_status(row.document_id, TaskStatus.QUEUED, now)
        return changed == 1
