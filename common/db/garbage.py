"""Garbage: what can never be live again, recorded in the same transaction as the change that made it
so, until `lifecycle.garbage` has removed it from the stores and confirmed it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import peewee

from common.db.records import GarbageKind, GarbageRecord
from common.db.store import IN_LIST_MAX, Store, garbage_record, new_id


class GarbageStore(Store):
    """Garbage rows: written by the other stores' transitions, worked off by the garbage collector."""

    def row(self, kind: GarbageKind, reason: str, *, kb_id: str, now: float, collection: str | None = None,
            document_id: str | None = None, parse_version: int | None = None, blob_key: str | None = None,
            not_before: float | None = None) -> dict[str, Any]:
        """The values of one new garbage row (for `add` or a batch insert)."""
        return {"id": new_id(), "kind": kind.value, "reason": reason[:128], "kb_id": kb_id,
                "collection": collection, "document_id": document_id, "parse_version": parse_version,
                "blob_key": blob_key, "created_at": now, "next_at": now if not_before is None else not_before,
                "attempts": 0, "removed": 0}

    def add(self, kind: GarbageKind, reason: str, **fields: Any) -> None:
        """Record one piece of garbage (inside the caller's transaction)."""
        self.m.garbage.insert(self.row(kind, reason, **fields)).execute()

    def chunks(self, kb_id: str, collection: str, document_id: str, parse_version: int, reason: str,
               now: float) -> None:
        """Record one parse version's chunks as garbage (once: a failed part and its cancelled siblings
        name the same version)."""
        g = self.m.garbage
        recorded = g.select(g.id).where(
            (g.document_id == document_id) & (g.parse_version == parse_version) & (g.kind == GarbageKind.CHUNKS.value)
        ).exists()
        if not recorded:
            self.add(GarbageKind.CHUNKS, reason, kb_id=kb_id, now=now, collection=collection,
                     document_id=document_id, parse_version=parse_version)

    def version_of(self, task_row: Any, reason: str, now: float) -> None:
        """The chunk set of `task_row`'s parse version will never be live: garbage."""
        kb_row = self.m.kb.get_or_none(self.m.kb.id == task_row.kb_id)
        if kb_row is not None:
            self.chunks(kb_row.id, kb_row.collection, task_row.document_id, task_row.parse_version, reason, now)

    def intend_blob(self, kb_id: str, blob_key: str, *, commit_within_s: float) -> None:
        """Before storing an upload: its blob is garbage unless `Documents.create` claims it within
        `commit_within_s` (a crash between the two leaves no orphan blob)."""
        now = time.time()
        with self.session.transaction():
            self.add(GarbageKind.BLOB, "upload never committed", kb_id=kb_id, now=now, blob_key=blob_key,
                     not_before=now + commit_within_s)

    def release_blobs(self, blob_keys: Sequence[str], reason: str) -> None:
        """Stored uploads that no document will claim (their content was unchanged, or their request was
        refused after they were stored): their intent rows are due now instead of at the end of their window."""
        g = self.m.garbage
        with self.session.transaction():
            for begin in range(0, len(blob_keys), IN_LIST_MAX):
                g.update(next_at=time.time(), reason=reason[:128]).where(
                    (g.kind == GarbageKind.BLOB.value) & g.blob_key.in_(list(blob_keys[begin:begin + IN_LIST_MAX]))
                ).execute()

    def claim_blob(self, blob_key: str) -> None:
        """The upload's rows are written: its blob is not garbage (inside the caller's transaction)."""
        g = self.m.garbage
        g.delete().where((g.kind == GarbageKind.BLOB.value) & (g.blob_key == blob_key)).execute()

    def due(self, limit: int, *, document_id: str | None = None, now: float | None = None,
            any_time: bool = False) -> list[GarbageRecord]:
        """Garbage whose next try is due at `now` (default: now), or all of it with `any_time`, oldest due
        first; optionally only one document's."""
        g = self.m.garbage
        query = g.select()
        if not any_time:
            query = query.where(g.next_at <= (time.time() if now is None else now))
        if document_id is not None:
            query = query.where(g.document_id == document_id)
        with self.session.read():
            rows = list(query.order_by(g.next_at).limit(limit))
        return [garbage_record(r) for r in rows]

    def tried(self, garbage_id: str, *, removed: int, error: str | None, retry_at: float) -> None:
        """Record one removal pass over a garbage row (what it removed, or why it failed)."""
        g = self.m.garbage
        with self.session.transaction():
            g.update(attempts=g.attempts + 1, removed=g.removed + removed, last_error=error,
                     next_at=retry_at).where(g.id == garbage_id).execute()

    def drop(self, garbage_id: str) -> None:
        """The store confirmed the removal: forget the row."""
        with self.session.transaction():
            self.m.garbage.delete().where(self.m.garbage.id == garbage_id).execute()

    def stats(self) -> tuple[int, float | None]:
        """(rows of garbage not yet confirmed removed, creation time of the oldest)."""
        g = self.m.garbage
        with self.session.read():
            count, oldest = g.select(peewee.fn.COUNT(g.id), peewee.fn.MIN(g.created_at)).tuples().get()
        return int(count), None if oldest is None else float(oldest)
