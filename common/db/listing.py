"""Paged, filtered listings for people browsing (the dashboard, `GET /tasks`): one page of rows plus how
many rows match in all, and a file-name search that means the same on SQLite, PostgreSQL and MySQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import peewee

from common.db.records import KbRecord, TaskRecord

T = TypeVar("T")

LIKE_ESCAPE = "!"  # not a backslash: MySQL reads one in a string literal as an escape of its own


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """Rows `offset .. offset + len(items)` of `total` rows that match."""

    items: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class TaskListing:
    """A task as a list shows it: with its document's file name and its knowledge base's name."""

    task: TaskRecord
    filename: str
    kb_name: str


@dataclass(frozen=True, slots=True)
class KbSummary:
    """A knowledge base with the totals of its documents."""

    kb: KbRecord
    document_count: int
    chunk_count: int
    token_count: int
    size_bytes: int


def contains_ignoring_case(column: Any, text: str) -> Any:
    """`column` holds `text` anywhere, ignoring case: `LOWER(column) LIKE '%text%' ESCAPE '!'`, with the
    LIKE wildcards of `text` escaped so that `_` and `%` match only themselves. (SQLite's LOWER folds ASCII
    letters only.)"""
    escaped = "".join(LIKE_ESCAPE + c if c in ("%", "_", LIKE_ESCAPE) else c for c in text.lower())
    return peewee.NodeList((
        peewee.fn.LOWER(column), peewee.SQL("LIKE"), peewee.Value(f"%{escaped}%", converter=False),
        peewee.SQL(f"ESCAPE '{LIKE_ESCAPE}'"),
    ))
