"""The frozen records the stores return, the writes the worker makes, and the rules on their values.

A record's fields are its table's columns (a test checks that the two stay the same): `builder(cls)`
derives how to read a record from a row from the field types alone — timestamps (stored as UTC unix
seconds) become aware datetimes, statuses enums, JSON columns dicts — so each field is written here and
in its model, nowhere else (the API's response models are derived from these records too).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from common.errors import InvalidRequest

KB_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
PRIORITIES = ("high", "normal")


def check_priority(priority: str) -> str:
    """`priority` if it is one of PRIORITIES, else InvalidRequest."""
    if priority not in PRIORITIES:
        raise InvalidRequest(f"priority must be one of {list(PRIORITIES)}, got {priority!r}")
    return priority


class TaskStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_STATUSES = (TaskStatus.QUEUED, TaskStatus.RUNNING)
TERMINAL_STATUSES = (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)


class GarbageKind(StrEnum):
    CHUNKS = "chunks"  # a document's chunks: one parse version, or every version
    COLLECTION = "collection"  # a deleted knowledge base's collection
    BLOB = "blob"  # a stored upload


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
    source_id: str | None
    chunks_embedded: int
    chunks_reused: int
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
    chunks_embedded: int = 0
    chunks_reused: int = 0

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


@dataclass(frozen=True, slots=True)
class GarbageRecord:
    """Something to remove from the vector store or the object store (see `common.db.garbage`)."""

    id: str
    kind: GarbageKind
    reason: str
    kb_id: str
    collection: str | None
    document_id: str | None
    parse_version: int | None
    blob_key: str | None
    created_at: float
    next_at: float
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
    chunks_embedded: int = 0  # of `chunk_count`: embedded now; the rest reused stored vectors
    chunks_reused: int = 0


TaskWrite = ProgressWrite | CompleteWrite
WriteResult = bool | Completion | None

R = TypeVar("R")


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC)


def _converter(annotation: Any) -> Callable[[Any], Any] | None:
    """How a column value becomes a field of type `annotation` (None: as it is)."""
    optional = False
    if isinstance(annotation, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = len(args) < len(typing.get_args(annotation)), args[0]
    if annotation is datetime:
        return _dt
    if isinstance(annotation, type) and issubclass(annotation, StrEnum):
        return annotation
    if typing.get_origin(annotation) is dict:
        return lambda raw: json.loads(raw or "{}")
    if annotation is str and not optional:
        return lambda raw: raw or ""
    return None


def builder(cls: type[R]) -> Callable[[Any], R]:
    """A function reading a `cls` record from a row (a model instance or a named tuple of its columns)."""
    hints = typing.get_type_hints(cls)
    fields_ = tuple((f.name, _converter(hints[f.name])) for f in dataclasses.fields(cls))  # type: ignore[arg-type]

    def build(row: Any) -> R:
        return cls(**{name: convert(getattr(row, name)) if convert else getattr(row, name)
                      for name, convert in fields_})

    return build


def columns(cls: type[Any]) -> list[str]:
    """The record's fields, i.e. its table's columns, in order."""
    return [f.name for f in dataclasses.fields(cls)]
