"""What the API returns, as typed, frozen records (unknown fields a newer server adds are ignored)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})


def parse(cls: type[T], data: Any) -> T:
    """A record of `cls` from an API object: its known fields, datetimes parsed."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data:
            continue
        value = data[f.name]
        if value is not None and hints[f.name] in (datetime, datetime | None):
            value = datetime.fromisoformat(value)
        values[f.name] = value
    return cls(**values)


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
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
class Document:
    id: str
    kb_id: str
    filename: str
    size_bytes: int
    sha256: str
    status: str
    chunk_count: int
    token_count: int
    parse_version: int
    created_at: datetime
    updated_at: datetime
    format: str | None = None
    source_id: str | None = None
    chunks_embedded: int = 0
    chunks_reused: int = 0


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    document_id: str
    kb_id: str
    status: str
    priority: str
    parse_version: int
    progress: float
    progress_msg: str
    stage: str | None
    attempts: int
    error: str | None
    worker: str | None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    stage_timings: dict[str, float] = field(default_factory=dict)
    part: int = 0
    parts: int = 1
    chunk_count: int = 0
    token_count: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    filename: str | None = None  # in lists: the document's file name
    kb_name: str | None = None  # in lists: the knowledge base's name

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class Submitted:
    """One file of an upload: its document, the task that parses it (None when unchanged), the outcome."""

    document_id: str
    task_id: str | None
    filename: str
    size_bytes: int
    source_id: str | None
    outcome: str  # added | updated | unchanged


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: a chunk, its document and its score (higher is closer)."""

    chunk_id: str
    document_id: str
    filename: str
    title: str
    text: str
    score: float
    page: int | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a document's live version: its heading path, page, character offsets and text."""

    chunk_id: str
    ordinal: int
    title: str
    text: str
    start_char: int
    end_char: int
    token_count: int
    page: int | None = None


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """One event of a task's stream: `state` (data is the task), `progress`, `retry`, `done`, `failed`,
    `cancelled`, `deleted` or `error`."""

    event: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event in TERMINAL_STATUSES or self.event == "deleted" or (
            self.event == "state" and self.data.get("status") in TERMINAL_STATUSES)


@dataclass(slots=True)
class SyncPlan:
    """Source keys by what ingesting them does; `deleted` only when missing keys are deleted. `unfinished`:
    the keys whose content the knowledge base has but whose latest version is still queued or running (an
    earlier ingest's, not done yet: not `unchanged`), each with the tasks that will finish it."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unfinished: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        unfinished = f"{len(self.unfinished)} unfinished from an earlier ingest, " if self.unfinished else ""
        return (f"{len(self.added)} added, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
                f"{unfinished}{len(self.deleted)} deleted")


@dataclass(frozen=True, slots=True)
class Progress:
    """Where an `ingest` or `wait` stands: `phase` is "upload" (files sent of those to send) or "wait"
    (tasks finished of those queued); `item` the file or task just counted."""

    phase: str
    done: int
    total: int
    item: str = ""
