"""Metadata database (peewee): knowledge bases, documents and tasks.

`open_database(url)` opens SQLite (default, WAL), PostgreSQL or MySQL/MariaDB. `Repository(database)` binds
its own model classes to that database (no shared proxy, so two repositories on two databases coexist in
one process) and exposes synchronous methods returning frozen records; async callers wrap them in
`asyncio.to_thread`.

Fencing: a task carries a `version`. Writes made on behalf of a worker (`append_progress`,
`complete_task`, ...) are `UPDATE ... WHERE id=? AND version=? AND status=?` and report whether a row
changed; `claim_task` (every delivery), `cancel_task` and `retry_task` bump the version, so a worker
holding a stale version is fenced out. Timestamps are stored as UTC unix seconds (DOUBLE) and exposed as
aware UTC datetimes.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import peewee
from playhouse.migrate import SchemaMigrator, migrate
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase, PooledSqliteDatabase

from common.dependencies import Dependency
from common.errors import Conflict, DependencyUnavailable, InvalidRequest, NotFound

KB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
PRIORITIES = ("high", "normal")
SQLITE_BUSY_TIMEOUT_MS = 10_000
POOL_MAX_CONNECTIONS = 32
POOL_STALE_TIMEOUT_S = 300
POOL_WAIT_TIMEOUT_S = 30
IN_LIST_MAX = 500  # ids per IN (...) list: far below every database's limit on bound parameters
SELECT_IDS = 64  # ids per execution of the worker's prepared IN (...) reads


class TaskStatus(StrEnum):
    """Lifecycle of a task (and of its document): queued -> running -> done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (TaskStatus.QUEUED, TaskStatus.RUNNING)
TERMINAL_STATUSES = (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)


# --------------------------------------------------------------------------------------------- opening


def open_database(url: str) -> peewee.Database:
    """Open a pooled peewee database for `sqlite:///path.db`, `postgresql://...` or `mysql://...`.

    SQLite: `sqlite:////abs/path.db` (or `sqlite:///rel/path.db`, relative to the working directory);
    the parent directory is created; WAL mode, foreign keys on, a busy timeout, and write transactions
    take the lock up front (`BEGIN IMMEDIATE`) so read-then-write transactions never deadlock.
    PostgreSQL / MySQL: `scheme://user:password@host:port/dbname?param=value`; query parameters are
    passed to the driver (e.g. `?options=-csearch_path%3Dmyschema` for PostgreSQL).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        return _open_sqlite(url)
    params: dict[str, Any] = dict(parse_qsl(parts.query))
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise ValueError(f"database URL {_redact(url)} names no database")
    if parts.username:
        params["user"] = unquote(parts.username)
    if parts.password:
        params["password"] = unquote(parts.password)
    if parts.hostname:
        params["host"] = parts.hostname
    if parts.port:
        params["port"] = parts.port
    pool = {
        "max_connections": POOL_MAX_CONNECTIONS,
        "stale_timeout": POOL_STALE_TIMEOUT_S,
        "timeout": POOL_WAIT_TIMEOUT_S,
    }
    if scheme in ("postgres", "postgresql"):
        return PooledPostgresqlDatabase(dbname, **pool, **params)
    if scheme in ("mysql", "mariadb"):
        from pymysql.constants import CLIENT

        params.setdefault("charset", "utf8mb4")
        # Report matched rows, not changed rows, so a fenced UPDATE that writes equal values still counts.
        params["client_flag"] = CLIENT.FOUND_ROWS
        return PooledMySQLDatabase(dbname, **pool, **params)
    raise ValueError(f"unsupported database URL scheme {scheme!r} (expected sqlite, postgresql or mysql)")


def _open_sqlite(url: str) -> peewee.Database:
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        raise ValueError(f"SQLite URL must look like sqlite:////abs/path.db, got {url!r}")
    raw_path = url[len(prefix) :].split("?", 1)[0]
    if not raw_path or raw_path == ":memory:":
        raise ValueError(
            "in-memory SQLite is not supported: each pooled connection would see its own database"
        )
    path = Path(unquote(raw_path)).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return PooledSqliteDatabase(
        str(path),
        pragmas={
            "journal_mode": "wal",
            "foreign_keys": 1,
            "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
            "synchronous": "normal",
        },
        lock_type="IMMEDIATE",
        check_same_thread=False,
        max_connections=POOL_MAX_CONNECTIONS,
        stale_timeout=POOL_STALE_TIMEOUT_S,
        timeout=POOL_WAIT_TIMEOUT_S,
    )


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


# --------------------------------------------------------------------------------------------- records


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True)
class KbRecord:
    """A knowledge base: one vector collection plus its chunking and embedding settings."""

    id: str
    tenant: str
    name: str
    collection: str
    chunk_tokens: int
    overlap_tokens: int
    embedding_model: str
    dim: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    """An uploaded document; `parse_version` is the chunk-set version currently live (0 = none)."""

    id: str
    kb_id: str
    tenant: str
    filename: str
    format: str | None
    size_bytes: int
    sha256: str
    blob_key: str
    status: TaskStatus
    chunk_count: int
    token_count: int
    parse_version: int
    next_parse_version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """One parse of one document; `version` is the fencing token for worker writes."""

    id: str
    document_id: str
    kb_id: str
    tenant: str
    status: TaskStatus
    priority: str
    parse_version: int
    version: int
    progress: float
    progress_msg: str
    stage: str | None
    stage_timings: dict[str, float] = field(hash=False)
    attempts: int
    error: str | None
    worker: str | None
    stream_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    part: int = 0
    parts: int = 1
    page_from: int | None = None
    page_to: int | None = None
    chunk_count: int = 0
    token_count: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def progress_lines(self) -> list[str]:
        return self.progress_msg.splitlines()

    @property
    def is_split(self) -> bool:
        """One of several page-range tasks sharing one parse of a large document."""
        return self.parts > 1


class GarbageKind(StrEnum):
    CHUNKS = "chunks"  # a document's chunks: one parse version, or every version
    COLLECTION = "collection"  # a deleted knowledge base's collection
    BLOB = "blob"  # a stored upload


@dataclass(frozen=True, slots=True)
class GarbageRecord:
    """One thing to remove (see the `garbage` model)."""

    id: str
    kind: GarbageKind
    reason: str
    kb_id: str
    collection: str | None
    document_id: str | None
    parse_version: int | None
    blob_key: str | None
    created_at: float
    attempts: int
    removed: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Completion:
    """A completed task: `document_done` when its parse version became the document's live chunk set
    (always for a whole-document task; for a page-range part, when it was the last part to finish);
    `replaced_version`, the live version that it replaced (0: none), now garbage."""

    document_done: bool
    replaced_version: int = 0


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task just claimed for a delivery, with the document and knowledge base it works on."""

    task: TaskRecord
    document: DocumentRecord
    kb: KbRecord


@dataclass(frozen=True, slots=True)
class ProgressWrite:
    """A worker's progress write (fenced by `version`): any of progress, stage, a log line, timings."""

    task_id: str
    version: int
    progress: float | None = None
    message: str | None = None
    stage: str | None = None
    stage_timings: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class CompleteWrite:
    """A worker's completion of a task (fenced by `version`)."""

    task_id: str
    version: int
    chunk_count: int
    token_count: int
    format: str
    stage_timings: Mapping[str, float] | None = None


TaskWrite = ProgressWrite | CompleteWrite


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
            self.lines.append(_log_line(write.message, now))
        if write.progress is not None:
            self.progress = min(1.0, max(0.0, float(write.progress)))
        self.stage = write.stage if write.stage is not None else self.stage
        self.timings = timings if timings is not None else self.timings


# --------------------------------------------------------------------------------------------- models


@dataclass(frozen=True, slots=True)
class _Models:
    # Typed Any: the classes are built at run time per database, so their fields are invisible to mypy.
    kb: Any
    document: Any
    task: Any
    garbage: Any

    @property
    def all(self) -> list[type[peewee.Model]]:
        return [self.kb, self.document, self.task, self.garbage]


def _build_models(database: peewee.Database) -> _Models:
    """Create model classes bound to `database` (fresh classes per database: no shared proxy)."""

    class _Base(peewee.Model):
        class Meta:
            pass

    _Base._meta.set_database(database)

    class KnowledgeBase(_Base):
        id = peewee.CharField(max_length=32, primary_key=True)
        tenant = peewee.CharField(max_length=64, default="default")
        name = peewee.CharField(max_length=64)
        collection = peewee.CharField(max_length=128)
        chunk_tokens = peewee.IntegerField()
        overlap_tokens = peewee.IntegerField()
        embedding_model = peewee.CharField(max_length=512)
        dim = peewee.IntegerField()
        created_at = peewee.DoubleField()

        class Meta:
            table_name = "knowledge_base"
            indexes = ((("tenant", "name"), True),)

    class Document(_Base):
        id = peewee.CharField(max_length=32, primary_key=True)
        kb = peewee.ForeignKeyField(KnowledgeBase, column_name="kb_id", on_delete="CASCADE", index=True)
        tenant = peewee.CharField(max_length=64, index=True)
        filename = peewee.CharField(max_length=1024)
        format = peewee.CharField(max_length=32, null=True)
        size_bytes = peewee.BigIntegerField()
        sha256 = peewee.CharField(max_length=64)
        blob_key = peewee.CharField(max_length=512)
        status = peewee.CharField(max_length=16)
        chunk_count = peewee.IntegerField(default=0)
        token_count = peewee.BigIntegerField(default=0)
        parse_version = peewee.IntegerField(default=0)
        next_parse_version = peewee.IntegerField(default=1)
        created_at = peewee.DoubleField()
        updated_at = peewee.DoubleField()

        class Meta:
            table_name = "document"

    class Task(_Base):
        id = peewee.CharField(max_length=32, primary_key=True)
        document = peewee.ForeignKeyField(
            Document, column_name="document_id", on_delete="CASCADE", index=True
        )
        kb_id = peewee.CharField(max_length=32, index=True)
        tenant = peewee.CharField(max_length=64, index=True)
        status = peewee.CharField(max_length=16)
        priority = peewee.CharField(max_length=16, default="normal")
        parse_version = peewee.IntegerField()
        version = peewee.IntegerField(default=1)
        progress = peewee.DoubleField(default=0.0)
        progress_msg = peewee.TextField(default="")
        stage = peewee.CharField(max_length=64, null=True)
        stage_timings = peewee.TextField(default="{}")
        attempts = peewee.IntegerField(default=0)
        error = peewee.TextField(null=True)
        worker = peewee.CharField(max_length=255, null=True)
        stream_id = peewee.CharField(max_length=64, null=True)
        # Page-range parts of one parse of a large PDF: part k of `parts`, pages [page_from, page_to].
        part = peewee.IntegerField(default=0)
        parts = peewee.IntegerField(default=1)
        page_from = peewee.IntegerField(null=True)
        page_to = peewee.IntegerField(null=True)
        chunk_count = peewee.IntegerField(default=0)
        token_count = peewee.BigIntegerField(default=0)
        created_at = peewee.DoubleField()
        started_at = peewee.DoubleField(null=True)
        finished_at = peewee.DoubleField(null=True)
        updated_at = peewee.DoubleField()

        class Meta:
            table_name = "task"
            indexes = ((("status", "created_at"), False),)

    class Garbage(_Base):
        """Something to remove from the vector store or the object store, recorded in the same transaction
        as the change that made it garbage; the janitor removes it, then this row (see `lifecycle.garbage`)."""

        id = peewee.CharField(max_length=32, primary_key=True)
        kind = peewee.CharField(max_length=16)  # GarbageKind
        reason = peewee.CharField(max_length=128)
        kb_id = peewee.CharField(max_length=32)
        collection = peewee.CharField(max_length=128, null=True)
        document_id = peewee.CharField(max_length=32, null=True, index=True)
        parse_version = peewee.IntegerField(null=True)  # chunks of this version; None: every version
        blob_key = peewee.CharField(max_length=512, null=True, index=True)
        created_at = peewee.DoubleField()
        next_at = peewee.DoubleField(index=True)
        attempts = peewee.IntegerField(default=0)
        removed = peewee.BigIntegerField(default=0)
        last_error = peewee.TextField(null=True)

        class Meta:
            table_name = "garbage"

    return _Models(kb=KnowledgeBase, document=Document, task=Task, garbage=Garbage)


class _Statement:
    """One parameterised statement, rendered once by the database's own dialect from a peewee query.

    The query names its arguments with `_arg(name)`; constants it holds stay as they are. The hot worker
    writes run these per row: rendering a peewee query costs far more than executing it.
    """

    def __init__(self, query: Any) -> None:
        self.sql, params = query.sql()
        self._spec = [
            (p[len(_ARG):], None) if isinstance(p, str) and p.startswith(_ARG) else (None, p) for p in params
        ]

    def params(self, values: Mapping[str, Any]) -> list[Any]:
        return [const if name is None else values[name] for name, const in self._spec]


_ARG = "\x00arg:"


def _arg(name: str) -> peewee.Value:
    """A named placeholder for `_Statement` (no field conversion: the value is bound as it is)."""
    return peewee.Value(_ARG + name, converter=False)


def _new_id() -> str:
    return uuid.uuid4().hex


@functools.lru_cache(maxsize=8)
def _stamp(second: int) -> str:
    return datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _log_line(message: str, now: float) -> str:
    one_line = " ".join(message.splitlines()) if "\n" in message or "\r" in message else message
    return f"{_stamp(int(now))} {one_line}\n"


def _timings_json(stage_timings: Mapping[str, float]) -> str:
    return json.dumps({k: round(float(v), 6) for k, v in stage_timings.items()}, sort_keys=True)


def _check_priority(priority: str) -> str:
    if priority not in PRIORITIES:
        raise InvalidRequest(f"priority must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    return priority


# --------------------------------------------------------------------------------------------- repository


@contextmanager
def _database_unavailable() -> Iterator[None]:
    """The driver losing its server (connection refused or dropped, a restart, "database is locked" past
    the busy timeout) is the database being unavailable, not the caller's fault."""
    try:
        yield
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise DependencyUnavailable(Dependency.DATABASE, f"database unavailable: {exc}") from exc


class Repository:
    """Knowledge bases, documents and tasks on one database. All methods are synchronous and thread-safe.

    Raises `DependencyUnavailable` (database) when the database cannot be reached."""

    def __init__(self, database: peewee.Database) -> None:
        self._db = database
        self._m = _build_models(database)
        with self._session():
            database.create_tables(self._m.all, safe=True)
            self._add_missing_columns()
        self._sql = self._worker_statements()

    def _worker_statements(self) -> dict[str, _Statement]:
        """The per-row statements of the worker's writes (`claim_tasks`, `write_tasks`)."""
        task, doc, kb = self._m.task, self._m.document, self._m.kb
        running = TaskStatus.RUNNING.value
        ids = [_arg(f"id{i}") for i in range(SELECT_IDS)]
        fenced = self._fenced(_arg("id"), _arg("version"))
        return {
            "claim": _Statement(task.update({
                task.status: running,
                task.attempts: task.attempts + 1,
                # Each delivery gets its own fencing token: a worker whose entry was reclaimed by another
                # can no longer write progress or complete the task.
                task.version: task.version + 1,
                task.worker: _arg("worker"),
                task.started_at: peewee.fn.COALESCE(task.started_at, _arg("now")),
                task.stage: None,
                task.updated_at: _arg("now"),
                # "<stamp> attempt <N> on <worker>": N is the new attempts count.
                task.progress_msg: task.progress_msg.concat(_arg("before")).concat(task.attempts + 1).concat(
                    _arg("after")
                ),
            }).where((task.id == _arg("id")) & task.status.in_([s.value for s in ACTIVE_STATUSES]))),
            "claimed": _Statement(
                task.select(*self._claimed_fields)
                .join(doc, on=(task.document == doc.id))
                .join(kb, on=(doc.kb == kb.id))
                .where(task.id.in_(ids) & (task.status == running))
            ),
            "document_running": _Statement(
                doc.update({doc.status: running, doc.updated_at: _arg("now")}).where(doc.id == _arg("id"))
            ),
            "completed": _Statement(
                task.select(task.id, task.document, task.parse_version, task.parts, doc.parse_version, doc.kb,
                            kb.collection)
                .join(doc, on=(task.document == doc.id))
                .join(kb, on=(doc.kb == kb.id))
                .where(task.id.in_(ids))
            ),
            "progress": _Statement(task.update({
                task.updated_at: _arg("now"),
                task.progress: peewee.fn.COALESCE(_arg("progress"), task.progress),
                task.stage: peewee.fn.COALESCE(_arg("stage"), task.stage),
                task.progress_msg: task.progress_msg.concat(_arg("line")),
                task.stage_timings: peewee.fn.COALESCE(_arg("timings"), task.stage_timings),
            }).where(fenced)),
            "complete": _Statement(task.update({
                task.status: TaskStatus.DONE.value,
                task.progress: 1.0,
                task.stage: None,
                task.chunk_count: _arg("chunks"),
                task.token_count: _arg("tokens"),
                task.finished_at: _arg("now"),
                task.updated_at: _arg("now"),
                task.progress_msg: task.progress_msg.concat(_arg("line")),
                task.stage_timings: peewee.fn.COALESCE(_arg("timings"), task.stage_timings),
            }).where(fenced)),
            "document_done": _Statement(doc.update({
                doc.status: TaskStatus.DONE.value,
                doc.chunk_count: _arg("chunks"),
                doc.token_count: _arg("tokens"),
                doc.format: _arg("format"),
                doc.parse_version: _arg("parse_version"),
                doc.updated_at: _arg("now"),
            }).where(doc.id == _arg("id"))),
        }

    @property
    def _claimed_models(self) -> tuple[Any, Any, Any]:
        """The models a claimed task's row joins, in the order of its columns."""
        return (self._m.task, self._m.document, self._m.kb)

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

    def _add_missing_columns(self) -> None:
        """Upgrade tables created by an older docvec: add the columns it did not have (all nullable or
        defaulted, so existing rows stay valid)."""
        for model in self._m.all:
            table = model._meta.table_name
            present = {c.name for c in self._db.get_columns(table)}
            missing = [f for f in model._meta.sorted_fields if f.column_name not in present]
            if missing:
                migrator = SchemaMigrator.from_database(self._db)
                migrate(*(migrator.add_column(table, f.column_name, f) for f in missing))

    @property
    def database(self) -> peewee.Database:
        return self._db

    def ping(self) -> None:
        """A round trip to the database (health checks); DependencyUnavailable when it does not answer."""
        with self._read():
            self._db.execute_sql("SELECT 1")

    def close(self) -> None:
        """Close every pooled connection (call once, at shutdown)."""
        close_all = getattr(self._db, "close_all", None)
        if close_all is not None:
            close_all()
        elif not self._db.is_closed():
            self._db.close()

    @contextmanager
    def _read(self) -> Iterator[None]:
        """A pooled connection without a transaction: reads never take SQLite's write lock."""
        with _database_unavailable(), self._db.connection_context():
            yield

    @contextmanager
    def _session(self) -> Iterator[None]:
        """One transaction on a (pooled) connection, returned to the pool afterwards. Inside another
        one it simply joins it (no savepoint: nothing here recovers from an error inside a transaction)."""
        if self._db.in_transaction():
            yield
            return
        with _database_unavailable(), self._db:
            yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run several calls in one transaction (the worker commits a round of writes at once)."""
        with self._session():
            yield

    # ------------------------------------------------------------------ records

    def _kb_record(self, row: Any) -> KbRecord:
        return KbRecord(
            id=row.id,
            tenant=row.tenant,
            name=row.name,
            collection=row.collection,
            chunk_tokens=row.chunk_tokens,
            overlap_tokens=row.overlap_tokens,
            embedding_model=row.embedding_model,
            dim=row.dim,
            created_at=_dt(row.created_at),  # type: ignore[arg-type]
        )

    def _doc_record(self, row: Any) -> DocumentRecord:
        return DocumentRecord(
            id=row.id,
            kb_id=row.kb_id,
            tenant=row.tenant,
            filename=row.filename,
            format=row.format,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            blob_key=row.blob_key,
            status=TaskStatus(row.status),
            chunk_count=row.chunk_count,
            token_count=row.token_count,
            parse_version=row.parse_version,
            next_parse_version=row.next_parse_version,
            created_at=_dt(row.created_at),  # type: ignore[arg-type]
            updated_at=_dt(row.updated_at),  # type: ignore[arg-type]
        )

    def _task_record(self, row: Any) -> TaskRecord:
        return TaskRecord(
            id=row.id,
            document_id=row.document_id,
            kb_id=row.kb_id,
            tenant=row.tenant,
            status=TaskStatus(row.status),
            priority=row.priority,
            parse_version=row.parse_version,
            version=row.version,
            progress=row.progress,
            progress_msg=row.progress_msg or "",
            stage=row.stage,
            stage_timings=json.loads(row.stage_timings or "{}"),
            attempts=row.attempts,
            error=row.error,
            worker=row.worker,
            stream_id=row.stream_id,
            created_at=_dt(row.created_at),  # type: ignore[arg-type]
            started_at=_dt(row.started_at),
            finished_at=_dt(row.finished_at),
            updated_at=_dt(row.updated_at),  # type: ignore[arg-type]
            part=row.part,
            parts=row.parts,
            page_from=row.page_from,
            page_to=row.page_to,
            chunk_count=row.chunk_count,
            token_count=row.token_count,
        )

    def _task_row(self, task_id: str) -> Any:
        row = self._m.task.get_or_none(self._m.task.id == task_id)
        if row is None:
            raise NotFound(f"task {task_id} not found")
        return row

    def _doc_row(self, document_id: str) -> Any:
        row = self._m.document.get_or_none(self._m.document.id == document_id)
        if row is None:
            raise NotFound(f"document {document_id} not found")
        return row

    # ------------------------------------------------------------------ knowledge bases

    def create_kb(
        self,
        name: str,
        *,
        tenant: str = "default",
        chunk_tokens: int,
        overlap_tokens: int,
        embedding_model: str,
        dim: int,
    ) -> KbRecord:
        """Create a knowledge base; `Conflict` if the tenant already has one with this name."""
        if not KB_NAME_RE.fullmatch(name):
            raise InvalidRequest(
                f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '_' or '-', "
                "starting with a letter or digit"
            )
        kb = self._m.kb
        kb_id = _new_id()
        try:
            with self._session():
                if kb.get_or_none((kb.tenant == tenant) & (kb.name == name)) is not None:
                    raise Conflict(f"knowledge base {name!r} already exists")
                row = kb.create(
                    id=kb_id,
                    tenant=tenant,
                    name=name,
                    collection=f"kb_{kb_id}",
                    chunk_tokens=chunk_tokens,
                    overlap_tokens=overlap_tokens,
                    embedding_model=embedding_model,
                    dim=dim,
                    created_at=time.time(),
                )
        except peewee.IntegrityError as exc:  # a concurrent create won the unique index
            raise Conflict(f"knowledge base {name!r} already exists") from exc
        return self._kb_record(row)

    def get_kb(self, name: str, *, tenant: str = "default") -> KbRecord:
        kb = self._m.kb
        with self._read():
            row = kb.get_or_none((kb.tenant == tenant) & (kb.name == name))
        if row is None:
            raise NotFound(f"knowledge base {name!r} not found")
        return self._kb_record(row)

    def get_kb_by_id(self, kb_id: str) -> KbRecord:
        kb = self._m.kb
        with self._read():
            row = kb.get_or_none(kb.id == kb_id)
        if row is None:
            raise NotFound(f"knowledge base {kb_id} not found")
        return self._kb_record(row)

    def list_kbs(self, *, tenant: str = "default") -> list[KbRecord]:
        kb = self._m.kb
        with self._read():
            rows = list(kb.select().where(kb.tenant == tenant).order_by(kb.name))
        return [self._kb_record(r) for r in rows]

    def delete_kb(self, kb_id: str) -> list[str]:
        """Delete a knowledge base with its documents and tasks; its collection and every blob become
        garbage in the same transaction. Returns the ids of the tasks that were queued or running (to flag
        in Redis): their workers are fenced out, their rows are gone."""
        m = self._m
        now = time.time()
        with self._session():
            row = m.kb.get_or_none(m.kb.id == kb_id)
            if row is None:
                raise NotFound(f"knowledge base {kb_id} not found")
            active = [r.id for r in m.task.select(m.task.id).where(
                (m.task.kb_id == kb_id) & m.task.status.in_([s.value for s in ACTIVE_STATUSES]))]
            self._add_garbage(GarbageKind.COLLECTION, "knowledge base deleted", kb_id=kb_id, now=now,
                              collection=row.collection)
            blobs = [key for (key,) in m.document.select(m.document.blob_key).where(m.document.kb == kb_id).tuples()]
            for begin in range(0, len(blobs), IN_LIST_MAX):
                m.garbage.insert_many([
                    self._garbage_row(GarbageKind.BLOB, "knowledge base deleted", kb_id=kb_id, now=now, blob_key=key)
                    for key in blobs[begin : begin + IN_LIST_MAX]
                ]).execute()
            m.task.delete().where(m.task.kb_id == kb_id).execute()
            m.document.delete().where(m.document.kb == kb_id).execute()
            m.kb.delete().where(m.kb.id == kb_id).execute()
        return active

    # ------------------------------------------------------------------ documents

    def create_document(
        self,
        kb: KbRecord,
        *,
        filename: str,
        size_bytes: int,
        sha256: str,
        blob_key: str,
        priority: str = "normal",
    ) -> tuple[DocumentRecord, TaskRecord]:
        """Insert a queued document and its first task (parse_version 1, version 1) in one transaction; the
        upload's blob stops being garbage (see `intend_blob`)."""
        _check_priority(priority)
        now = time.time()
        doc_id = _new_id()
        with self._session():
            if self._m.kb.get_or_none(self._m.kb.id == kb.id) is None:
                raise NotFound(f"knowledge base {kb.name!r} not found")
            doc = self._m.document.create(
                id=doc_id,
                kb=kb.id,
                tenant=kb.tenant,
                filename=filename,
                format=None,
                size_bytes=size_bytes,
                sha256=sha256,
                blob_key=blob_key,
                status=TaskStatus.QUEUED.value,
                chunk_count=0,
                token_count=0,
                parse_version=0,
                next_parse_version=1,
                created_at=now,
                updated_at=now,
            )
            task = self._insert_task(doc_id, kb.id, kb.tenant, parse_version=1, priority=priority, now=now)
            g = self._m.garbage
            g.delete().where((g.kind == GarbageKind.BLOB.value) & (g.blob_key == blob_key)).execute()
        return self._doc_record(doc), self._task_record(task)

    def _insert_task(
        self,
        document_id: str,
        kb_id: str,
        tenant: str,
        *,
        parse_version: int,
        priority: str,
        now: float,
        part: tuple[int, int, int, int] | None = None,
    ) -> Any:
        """Insert a queued task; `part` = (part, parts, page_from, page_to) for a page-range part."""
        index, parts, page_from, page_to = part or (0, 1, None, None)
        return self._m.task.create(
            part=index,
            parts=parts,
            page_from=page_from,
            page_to=page_to,
            id=_new_id(),
            document=document_id,
            kb_id=kb_id,
            tenant=tenant,
            status=TaskStatus.QUEUED.value,
            priority=priority,
            parse_version=parse_version,
            version=1,
            progress=0.0,
            progress_msg=_log_line("queued", now),
            stage=None,
            stage_timings="{}",
            attempts=0,
            created_at=now,
            updated_at=now,
        )

    def reparse_document(self, document_id: str, priority: str = "normal") -> TaskRecord:
        """Queue a new parse of a document with the next parse version; `Conflict` while one is active."""
        _check_priority(priority)
        doc, task = self._m.document, self._m.task
        now = time.time()
        with self._session():
            # The UPDATE comes first: it locks the document row, serialising concurrent reparses.
            bumped = (
                doc.update(
                    next_parse_version=doc.next_parse_version + 1,
                    status=TaskStatus.QUEUED.value,
                    updated_at=now,
                )
                .where(doc.id == document_id)
                .execute()
            )
            if bumped == 0:
                raise NotFound(f"document {document_id} not found")
            active = (
                task.select(task.id)
                .where((task.document == document_id) & (task.status.in_([s.value for s in ACTIVE_STATUSES])))
                .exists()
            )
            if active:
                raise Conflict(f"document {document_id} already has a queued or running task")
            row = self._doc_row(document_id)
            new_task = self._insert_task(
                document_id,
                row.kb_id,
                row.tenant,
                parse_version=row.next_parse_version,
                priority=priority,
                now=now,
            )
        return self._task_record(new_task)

    def get_document(self, document_id: str) -> DocumentRecord:
        with self._read():
            return self._doc_record(self._doc_row(document_id))

    def list_documents(self, kb_id: str, *, limit: int = 100, offset: int = 0) -> list[DocumentRecord]:
        doc = self._m.document
        with self._read():
            rows = list(
                doc.select()
                .where(doc.kb == kb_id)
                .order_by(doc.created_at.desc(), doc.id.desc())
                .limit(limit)
                .offset(offset)
            )
        return [self._doc_record(r) for r in rows]

    def delete_document(self, document_id: str) -> list[str]:
        """Delete a document and its tasks; its chunks (every version) and its blob become garbage in the
        same transaction. Returns the ids of the tasks that were queued or running (to flag in Redis):
        their workers are fenced out, their rows are gone."""
        task, doc = self._m.task, self._m.document
        now = time.time()
        with self._session():
            # The UPDATE locks the document row first: a concurrent completion or reparse serialises here.
            if doc.update(updated_at=now).where(doc.id == document_id).execute() == 0:
                raise NotFound(f"document {document_id} not found")
            row = self._doc_row(document_id)
            kb_row = self._m.kb.get_by_id(row.kb_id)
            active = [r.id for r in task.select(task.id).where(
                (task.document == document_id) & task.status.in_([s.value for s in ACTIVE_STATUSES]))]
            self._add_garbage(GarbageKind.CHUNKS, "document deleted", kb_id=row.kb_id, now=now,
                              collection=kb_row.collection, document_id=document_id)
            self._add_garbage(GarbageKind.BLOB, "document deleted", kb_id=row.kb_id, now=now,
                              blob_key=row.blob_key)
            task.delete().where(task.document == document_id).execute()
            doc.delete().where(doc.id == document_id).execute()
        return active

    # ------------------------------------------------------------------ task queries

    def get_task(self, task_id: str) -> TaskRecord:
        with self._read():
            return self._task_record(self._task_row(task_id))

    def get_tasks(self, task_ids: Sequence[str]) -> dict[str, TaskRecord]:
        """The tasks of `task_ids` that exist, by id."""
        task = self._m.task
        ids = list(task_ids)
        found: dict[str, TaskRecord] = {}
        with self._read():
            for begin in range(0, len(ids), IN_LIST_MAX):
                query = task.select().where(task.id.in_(ids[begin : begin + IN_LIST_MAX]))
                found.update((r.id, self._task_record(r)) for r in query)
        return found

    def list_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        kb_id: str | None = None,
        tenant: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[TaskRecord]:
        """Tasks, newest first, optionally filtered."""
        task = self._m.task
        query = task.select()
        if status is not None:
            query = query.where(task.status == TaskStatus(status).value)
        if kb_id is not None:
            query = query.where(task.kb_id == kb_id)
        if tenant is not None:
            query = query.where(task.tenant == tenant)
        query = query.order_by(task.created_at.desc(), task.id.desc()).limit(limit).offset(offset)
        with self._read():
            rows = list(query)
        return [self._task_record(r) for r in rows]

    def tasks_for_document(self, document_id: str) -> list[TaskRecord]:
        """A document's tasks, newest first."""
        task = self._m.task
        with self._read():
            rows = list(
                task.select()
                .where(task.document == document_id)
                .order_by(task.parse_version.desc(), task.created_at.desc())
            )
        return [self._task_record(r) for r in rows]

    def task_counts(self, *, tenant: str | None = None, kb_id: str | None = None) -> dict[str, int]:
        """Number of tasks per status (every status present, zeros included)."""
        task = self._m.task
        query = task.select(task.status, peewee.fn.COUNT(task.id).alias("n")).group_by(task.status)
        if tenant is not None:
            query = query.where(task.tenant == tenant)
        if kb_id is not None:
            query = query.where(task.kb_id == kb_id)
        counts = {s.value: 0 for s in TaskStatus}
        with self._read():
            for status, n in query.tuples():
                counts[status] = int(n)
        return counts

    def finished_since(self, since: float, until: float, *, limit: int) -> list[tuple[str, float]]:
        """(status, finished_at) of done / failed tasks finished in [since, until), at most `limit`."""
        task = self._m.task
        terminal = (TaskStatus.DONE.value, TaskStatus.FAILED.value)
        query = (
            task.select(task.status, task.finished_at)
            .where((task.finished_at >= since) & (task.finished_at < until) & task.status.in_(terminal))
            .limit(limit)
        )
        with self._read():
            return [(status, float(finished_at)) for status, finished_at in query.tuples()]

    # ------------------------------------------------------------------ enqueue bookkeeping

    def mark_enqueued(self, task_id: str, stream_id: str) -> None:
        """Record the stream entry id after XADD."""
        task = self._m.task
        with self._session():
            changed = task.update(stream_id=stream_id).where(task.id == task_id).execute()
        if changed == 0:
            raise NotFound(f"task {task_id} not found")

    def unenqueued_tasks(self, older_than_s: float) -> list[TaskRecord]:
        """Queued tasks never XADDed whose last change is older than `older_than_s` (for the janitor).

        The age counts from `updated_at` (= `created_at` for a new task) so a task just retried is
        left to the caller that retried it.
        """
        task = self._m.task
        cutoff = time.time() - older_than_s
        with self._read():
            rows = list(
                task.select()
                .where(
                    (task.status == TaskStatus.QUEUED.value)
                    & task.stream_id.is_null()
                    & (task.updated_at < cutoff)
                )
                .order_by(task.created_at)
            )
        return [self._task_record(r) for r in rows]

    def active_stream_entries(self, limit: int) -> list[tuple[str, str, str]]:
        """(task id, priority, stream entry id) of queued and running tasks that were enqueued, oldest
        first, at most `limit` (the janitor checks that each entry still exists)."""
        task = self._m.task
        query = (
            task.select(task.id, task.priority, task.stream_id)
            .where(task.status.in_([s.value for s in ACTIVE_STATUSES]) & task.stream_id.is_null(False))
            .order_by(task.created_at)
            .limit(limit)
        )
        with self._read():
            return list(query.tuples())

    # ------------------------------------------------------------------ worker transitions

    def claim_task(self, task_id: str, worker: str) -> TaskRecord | None:
        """Start (or restart) a delivery: running, attempts += 1; None if the task is terminal or gone."""
        claimed = self.claim_tasks([task_id], worker)[0]
        return None if claimed is None else claimed.task

    def claim_tasks(self, task_ids: Sequence[str], worker: str) -> list[ClaimedTask | None]:
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
        with self._session():
            for claims in rounds:
                for claimed in self._claim_round(list(claims), worker):
                    results[claims[claimed.task.id]] = claimed
        return results

    def _claim_round(self, task_ids: list[str], worker: str) -> list[ClaimedTask]:
        now = time.time()
        cursor = self._db.cursor()
        before, after = f"{_stamp(int(now))} attempt ", f" on {' '.join(worker.splitlines())}\n"
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
            out.append(ClaimedTask(self._task_record(t), self._doc_record(d), self._kb_record(k)))
        self._execute_many(cursor, "document_running", ({"id": c.document.id, "now": now} for c in out))
        return out

    def _fenced(
        self, task_id: str | peewee.Value, version: int | peewee.Value,
        statuses: Iterable[TaskStatus] = (TaskStatus.RUNNING,),
    ) -> Any:
        task = self._m.task
        return (task.id == task_id) & (task.version == version) & task.status.in_([s.value for s in statuses])

    def append_progress(
        self,
        task_id: str,
        version: int,
        *,
        progress: float | None = None,
        message: str | None = None,
        stage: str | None = None,
        stage_timings: Mapping[str, float] | None = None,
    ) -> bool:
        """Update progress / stage / this attempt's stage timings and append a timestamped log line;
        False if fenced out."""
        write = ProgressWrite(task_id, version, progress, message, stage, stage_timings)
        return bool(self.write_tasks([write])[0])

    def complete_task(
        self,
        task_id: str,
        version: int,
        *,
        chunk_count: int,
        token_count: int,
        format: str,
        stage_timings: Mapping[str, float] | None = None,
    ) -> Completion | None:
        """Mark the task done; None if fenced out.

        A whole-document task makes its parse version the live chunk set at once. A page-range part
        does so only when it is the last part of its parse to finish; the document then counts the
        chunks and tokens of every part.
        """
        result = self.write_tasks([CompleteWrite(task_id, version, chunk_count, token_count, format, stage_timings)])[0]
        assert not isinstance(result, bool)
        return result

    def write_tasks(self, writes: Sequence[TaskWrite]) -> list[bool | Completion | None]:
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
        with self._session():
            cursor = self._db.cursor()

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
                timings = None if write.stage_timings is None else _timings_json(write.stage_timings)
                if isinstance(write, ProgressWrite):
                    carry = carry or _Carried(write.task_id, write.version)
                    carry.add(index, write, timings, now)
                    carried[write.task_id] = carry
                    continue
                lines = [] if carry is None else carry.lines
                done = self._execute(
                    cursor, "complete", id=write.task_id, version=write.version, now=now,
                    chunks=write.chunk_count, tokens=write.token_count, line="".join([*lines, _log_line("done", now)]),
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
        task, doc = self._m.task, self._m.document
        out: dict[int, Completion] = {}
        finished: set[tuple[str, int]] = set()  # (document, parse version) made live in this transaction
        live: list[dict[str, Any]] = []
        found = {row[0]: row[1:] for row in self._select_ids(cursor, "completed", list(completed))}
        for task_id, (index, write) in completed.items():  # in the order of the writes
            document_id, parse_version, parts, live_version, kb_id, collection = found[task_id]
            chunk_count, token_count = write.chunk_count, write.token_count
            if parts > 1:
                if (document_id, parse_version) in finished:  # a sibling part of this round got there first
                    out[index] = Completion(document_done=False)
                    continue
                # Lock the document row first: concurrent last parts serialise here, and the one that
                # comes second sees the other's commit.
                doc.update(updated_at=now).where(doc.id == document_id).execute()
                siblings = list(
                    task.select(task.status, task.chunk_count, task.token_count).where(
                        (task.document == document_id) & (task.parse_version == parse_version)
                    ).tuples()
                )
                if len(siblings) < parts or any(status != TaskStatus.DONE.value for status, _, _ in siblings):
                    out[index] = Completion(document_done=False)
                    continue
                chunk_count = sum(chunks for _, chunks, _ in siblings)
                token_count = sum(tokens for _, _, tokens in siblings)
            live.append({"id": document_id, "chunks": chunk_count, "tokens": token_count, "format": write.format,
                         "parse_version": parse_version, "now": now})
            replaced = live_version if live_version and live_version != parse_version else 0
            if replaced:  # the version it replaces is garbage now
                self._chunk_garbage(kb_id, collection, document_id, replaced,
                                    f"replaced by parse version {parse_version}", now)
            finished.add((document_id, parse_version))
            out[index] = Completion(document_done=True, replaced_version=replaced)
        self._execute_many(cursor, "document_done", live)
        return out

    def _locked_task(self, where: Any) -> Any:
        """Read one task row, locking it (FOR UPDATE) where the database supports row locks.

        SQLite has none, but every write transaction there starts with BEGIN IMMEDIATE, which serialises
        writers just as well.
        """
        query = self._m.task.select().where(where)
        if self._db.for_update:
            query = query.for_update()
        return query.first()

    def split_task(self, task_id: str, version: int, ranges: list[tuple[int, int]]) -> list[TaskRecord]:
        """Split a running whole-document task into page-range parts: it keeps `ranges[0]`, a new queued
        task is created for each other range (same parse version, same priority). Returns the new tasks
        (to be enqueued by the caller; the janitor enqueues any it missed). `Conflict` if fenced out.
        """
        if len(ranges) < 2:
            raise InvalidRequest("a split needs at least two page ranges")
        task = self._m.task
        now = time.time()
        with self._session():
            row = self._locked_task(self._fenced(task_id, version))
            if row is None:
                raise Conflict(f"task {task_id} was cancelled or superseded before it could be split")
            if row.parts > 1:
                raise Conflict(f"task {task_id} is already part {row.part + 1} of {row.parts}")
            first, last = ranges[0]
            line = _log_line(f"split into {len(ranges)} page-range tasks; this one reads pages {first}-{last}", now)
            task.update(
                part=0, parts=len(ranges), page_from=first, page_to=last, updated_at=now,
                progress_msg=task.progress_msg.concat(line),
            ).where(self._fenced(task_id, version)).execute()
            children = [
                self._insert_task(
                    row.document_id, row.kb_id, row.tenant, parse_version=row.parse_version,
                    priority=row.priority, now=now, part=(k, len(ranges), page_from, page_to),
                )
                for k, (page_from, page_to) in enumerate(ranges[1:], start=1)
            ]
        return [self._task_record(c) for c in children]

    def cancel_parts(self, document_id: str, parse_version: int, reason: str) -> list[str]:
        """Cancel the queued or running page-range parts of one parse (a sibling part failed or was
        cancelled); return their ids so the caller can flag them in Redis."""
        task = self._m.task
        now = time.time()
        same_parse = (
            (task.document == document_id)
            & (task.parse_version == parse_version)
            & task.status.in_([s.value for s in ACTIVE_STATUSES])
        )
        with self._session():
            ids = [r.id for r in task.select(task.id).where(same_parse)]
            if ids:
                task.update(
                    status=TaskStatus.CANCELLED.value,
                    version=task.version + 1,
                    stage=None,
                    finished_at=now,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(_log_line(f"cancelled: {reason}", now)),
                ).where(same_parse & task.id.in_(ids)).execute()
                self._version_garbage(self._task_row(ids[0]), f"parse cancelled: {reason}", now)
        return ids

    def fail_task(self, task_id: str, version: int, error: str) -> bool:
        """Fail a queued or running task for good (document failed too); False if fenced out."""
        task = self._m.task
        now = time.time()
        with self._session():
            changed = (
                task.update(
                    status=TaskStatus.FAILED.value,
                    error=error,
                    finished_at=now,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(_log_line(f"failed: {error}", now)),
                )
                .where(self._fenced(task_id, version, ACTIVE_STATUSES))
                .execute()
            )
            if changed == 0:
                return False
            row = self._task_row(task_id)
            self._set_doc_status(row.document_id, TaskStatus.FAILED, now)
            self._version_garbage(row, f"task {task_id} failed", now)
        return True

    def requeue_task(self, task_id: str, version: int, error: str) -> bool:
        """Put a running task back to queued after a transient failure (its stream entry stays pending)."""
        task = self._m.task
        now = time.time()
        with self._session():
            row = self._locked_task(self._fenced(task_id, version))
            if row is None:
                return False
            line = _log_line(f"attempt {row.attempts} failed: {error}; will retry", now)
            changed = (
                task.update(
                    status=TaskStatus.QUEUED.value,
                    error=error,
                    stage=None,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(line),
                )
                .where(self._fenced(task_id, version))
                .execute()
            )
            if changed == 0:
                return False
            self._set_doc_status(row.document_id, TaskStatus.QUEUED, now)
        return True

    def refund_lost_delivery(self, task_id: str, version: int) -> bool:
        """The delivery `version` of a running task was lost with Redis's data (its stream entry is gone):
        that attempt was not the document's doing, so it is not counted (the next claim counts anew).
        False if the task moved on meanwhile (fenced)."""
        task = self._m.task
        now = time.time()
        with self._session():
            changed = (
                task.update(
                    attempts=task.attempts - 1,
                    updated_at=now,
                    progress_msg=task.progress_msg.concat(
                        _log_line("its queue entry was lost (Redis restarted without it): this attempt is not "
                                  "counted", now)),
                )
                .where(self._fenced(task_id, version) & (task.attempts > 0))
                .execute()
            )
        return changed == 1

    def _check_latest_parse(self, row: Any) -> None:
        """A retried task must be the document's newest parse and must not run beside an active one."""
        task = self._m.task
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

    def _allocate_parse_version(self, document_id: str, now: float) -> int:
        """Bump and return the document's latest allocated parse version (inside a transaction)."""
        doc = self._m.document
        doc.update(next_parse_version=doc.next_parse_version + 1, updated_at=now).where(
            doc.id == document_id
        ).execute()
        return int(self._doc_row(document_id).next_parse_version)

    def _set_doc_status(self, document_id: str, status: TaskStatus, now: float) -> None:
        doc = self._m.document
        doc.update(status=status.value, updated_at=now).where(doc.id == document_id).execute()

    # ------------------------------------------------------------------ garbage

    def _garbage_row(self, kind: GarbageKind, reason: str, *, kb_id: str, now: float, collection: str | None = None,
                     document_id: str | None = None, parse_version: int | None = None,
                     blob_key: str | None = None, not_before: float | None = None) -> dict[str, Any]:
        return {"id": _new_id(), "kind": kind.value, "reason": reason[:128], "kb_id": kb_id,
                "collection": collection, "document_id": document_id, "parse_version": parse_version,
                "blob_key": blob_key, "created_at": now, "next_at": now if not_before is None else not_before,
                "attempts": 0, "removed": 0}

    def _add_garbage(self, kind: GarbageKind, reason: str, **fields: Any) -> None:
        self._m.garbage.insert(self._garbage_row(kind, reason, **fields)).execute()

    def _chunk_garbage(self, kb_id: str, collection: str, document_id: str, parse_version: int, reason: str,
                       now: float) -> None:
        """Record one parse version's chunks as garbage (once: a failed part and its cancelled siblings
        name the same version)."""
        g = self._m.garbage
        recorded = g.select(g.id).where(
            (g.document_id == document_id) & (g.parse_version == parse_version) & (g.kind == GarbageKind.CHUNKS.value)
        ).exists()
        if not recorded:
            self._add_garbage(GarbageKind.CHUNKS, reason, kb_id=kb_id, now=now, collection=collection,
                              document_id=document_id, parse_version=parse_version)

    def _version_garbage(self, task_row: Any, reason: str, now: float) -> None:
        """The chunk set of `task_row`'s parse version will never be live: garbage."""
        kb_row = self._m.kb.get_or_none(self._m.kb.id == task_row.kb_id)
        if kb_row is not None:
            self._chunk_garbage(kb_row.id, kb_row.collection, task_row.document_id, task_row.parse_version, reason,
                                now)

    def intend_blob(self, kb_id: str, blob_key: str, *, commit_within_s: float) -> None:
        """Before storing an upload: its blob is garbage unless `create_document` claims it within
        `commit_within_s` (a crash between the two leaves no orphan blob)."""
        now = time.time()
        with self._session():
            self._add_garbage(GarbageKind.BLOB, "upload never committed", kb_id=kb_id, now=now, blob_key=blob_key,
                              not_before=now + commit_within_s)

    def live_versions(self, document_ids: Sequence[str]) -> dict[str, int]:
        """The live parse version of each of `document_ids` that exists and has one (search's truth)."""
        doc = self._m.document
        ids = list(dict.fromkeys(document_ids))
        live: dict[str, int] = {}
        with self._read():
            for begin in range(0, len(ids), IN_LIST_MAX):
                query = doc.select(doc.id, doc.parse_version).where(
                    doc.id.in_(ids[begin : begin + IN_LIST_MAX]) & (doc.parse_version > 0)
                )
                live.update((doc_id, int(version)) for doc_id, version in query.tuples())
        return live

    def due_garbage(self, limit: int, *, document_id: str | None = None, now: float | None = None,
                    any_time: bool = False) -> list[GarbageRecord]:
        """Garbage whose next try is due at `now` (default: now), or all of it with `any_time`, oldest due
        first; optionally only one document's."""
        g = self._m.garbage
        query = g.select()
        if not any_time:
            query = query.where(g.next_at <= (time.time() if now is None else now))
        if document_id is not None:
            query = query.where(g.document_id == document_id)
        with self._read():
            rows = list(query.order_by(g.next_at).limit(limit))
        return [self._garbage_record(r) for r in rows]

    def garbage_tried(self, garbage_id: str, *, removed: int, error: str | None, retry_at: float) -> None:
        """Record one removal pass over a garbage row (what it removed, or why it failed)."""
        g = self._m.garbage
        with self._session():
            g.update(attempts=g.attempts + 1, removed=g.removed + removed, last_error=error,
                     next_at=retry_at).where(g.id == garbage_id).execute()

    def drop_garbage(self, garbage_id: str) -> None:
        """The store confirmed the removal: forget the row."""
        with self._session():
            self._m.garbage.delete().where(self._m.garbage.id == garbage_id).execute()

    def garbage_stats(self) -> tuple[int, float | None]:
        """(rows of garbage not yet confirmed removed, creation time of the oldest)."""
        g = self._m.garbage
        with self._read():
            count, oldest = g.select(peewee.fn.COUNT(g.id), peewee.fn.MIN(g.created_at)).tuples().get()
        return int(count), None if oldest is None else float(oldest)

    def _garbage_record(self, row: Any) -> GarbageRecord:
        return GarbageRecord(
            id=row.id, kind=GarbageKind(row.kind), reason=row.reason, kb_id=row.kb_id, collection=row.collection,
            document_id=row.document_id, parse_version=row.parse_version, blob_key=row.blob_key,
            created_at=float(row.created_at), attempts=int(row.attempts), removed=int(row.removed),
            last_error=row.last_error,
        )

    # ------------------------------------------------------------------ user transitions

    def cancel_task(self, task_id: str) -> TaskRecord:
        """Cancel a queued or running task (bumping its version); `Conflict` if it already finished."""
        task = self._m.task
        now = time.time()
        with self._session():
            row = self._locked_task(task.id == task_id)
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
                    progress_msg=task.progress_msg.concat(_log_line("cancelled", now)),
                )
                .where(self._fenced(task_id, row.version, ACTIVE_STATUSES))
                .execute()
            )
            if changed == 0:  # unreachable while the row is locked; kept as a guard
                raise Conflict(f"task {task_id} changed concurrently; try again")
            self._set_doc_status(row.document_id, TaskStatus.CANCELLED, now)
            self._version_garbage(row, f"task {task_id} cancelled", now)
            return self._task_record(self._task_row(task_id))

    def retry_task(self, task_id: str) -> TaskRecord:
        """Queue a failed or cancelled task again with a new version; `Conflict` otherwise."""
        task = self._m.task
        now = time.time()
        retryable = (TaskStatus.FAILED, TaskStatus.CANCELLED)
        with self._session():
            row = self._locked_task(task.id == task_id)
            if row is None:
                raise NotFound(f"task {task_id} not found")
            if row.status not in retryable:
                raise Conflict(
                    f"task {task_id} is {row.status}; only failed or cancelled tasks can be retried"
                )
            # A new parse version: a straggler of the cancelled run can only ever touch (and clean
            # up) its own chunk set, never the one this retry writes. Allocating it first also locks
            # the document row, serialising this check against a concurrent reparse.
            parse_version = self._allocate_parse_version(row.document_id, now)
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
                    progress_msg=task.progress_msg.concat(_log_line("retry requested", now)),
                )
                .where(self._fenced(task_id, row.version, retryable))
                .execute()
            )
            if changed == 0:
                raise Conflict(f"task {task_id} changed concurrently; try again")
            self._set_doc_status(row.document_id, TaskStatus.QUEUED, now)
            return self._task_record(self._task_row(task_id))
