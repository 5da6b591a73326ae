"""The metadata database (peewee): knowledge bases, documents, tasks, garbage.

`open_database(url)` opens SQLite (default, WAL), PostgreSQL or MySQL/MariaDB; `Repository(database)`
binds its own model classes to that database and exposes one store per aggregate (see
`common.db.repository`), each returning frozen records (`common.db.records`).

Fencing: a task carries a `version`. Writes made on behalf of a worker (`repo.ledger`) are
`UPDATE ... WHERE id=? AND version=? AND status=?` and report whether a row changed; every claim of a
delivery, `cancel` and `retry` bump the version, so a worker holding a stale version is fenced out.
Timestamps are stored as UTC unix seconds (DOUBLE) and exposed as aware UTC datetimes.

Layout: `connection` (URLs, pools, the shared `Session`), `records`, `models`, `statements` (the worker's
prepared writes), `store` (shared row helpers), then one store per aggregate: `kbs`, `documents`, `tasks`,
`ledger`, `garbage`; `repository` puts them together.
"""

from common.db.connection import open_database
from common.db.documents import Outcome, SourceState, Submission
from common.db.records import (
    ACTIVE_STATUSES,
    KB_NAME_RE,
    PRIORITIES,
    TERMINAL_STATUSES,
    ClaimedTask,
    CompleteWrite,
    Completion,
    DocumentRecord,
    GarbageKind,
    GarbageRecord,
    KbRecord,
    ProgressWrite,
    TaskRecord,
    TaskStatus,
    TaskWrite,
    WriteResult,
    check_priority,
)
from common.db.repository import Repository

__all__ = [
    "ACTIVE_STATUSES", "KB_NAME_RE", "PRIORITIES", "TERMINAL_STATUSES", "ClaimedTask", "CompleteWrite", "Completion",
    "DocumentRecord", "GarbageKind", "GarbageRecord", "KbRecord", "Outcome", "ProgressWrite", "Repository",
    "SourceState", "Submission", "TaskRecord", "TaskStatus", "TaskWrite", "WriteResult", "check_priority",
    "open_database",
]
