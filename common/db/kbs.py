"""Knowledge bases: create, read, delete (the collection and every blob become garbage)."""

from __future__ import annotations

import time

import peewee

from common.db.garbage import GarbageStore
from common.db.listing import KbSummary
from common.db.records import ACTIVE_STATUSES, KB_NAME_RE, GarbageKind, KbRecord
from common.db.store import IN_LIST_MAX, Store, kb_record, new_id
from common.errors import Conflict, InvalidRequest, NotFound


class KnowledgeBases(Store):
    """The `knowledge_base` table."""

    def __init__(self, *args: object, garbage: GarbageStore) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self._garbage = garbage

    def create(self, name: str, *, tenant: str = "default", chunk_tokens: int, overlap_tokens: int,
               embedding_model: str, dim: int) -> KbRecord:
        """Create a knowledge base; `Conflict` if the tenant already has one with this name."""
        if not KB_NAME_RE.fullmatch(name):
            raise InvalidRequest(
                f"invalid knowledge base name {name!r}: use 1-64 letters, digits, '_' or '-', "
                "starting with a letter or digit"
            )
        kb = self.m.kb
        kb_id = new_id()
        try:
            with self.session.transaction():
                if kb.get_or_none((kb.tenant == tenant) & (kb.name == name)) is not None:
                    raise Conflict(f"knowledge base {name!r} already exists")
                row = kb.create(id=kb_id, tenant=tenant, name=name, collection=f"kb_{kb_id}",
                                chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens,
                                embedding_model=embedding_model, dim=dim, created_at=time.time())
        except peewee.IntegrityError as exc:  # a concurrent create won the unique index
            raise Conflict(f"knowledge base {name!r} already exists") from exc
        return kb_record(row)

    def get(self, name: str, *, tenant: str = "default") -> KbRecord:
        kb = self.m.kb
        with self.session.read():
            row = kb.get_or_none((kb.tenant == tenant) & (kb.name == name))
        if row is None:
            raise NotFound(f"knowledge base {name!r} not found")
        return kb_record(row)

    def get_by_id(self, kb_id: str) -> KbRecord:
        kb = self.m.kb
        with self.session.read():
            row = kb.get_or_none(kb.id == kb_id)
        if row is None:
            raise NotFound(f"knowledge base {kb_id} not found")
        return kb_record(row)

    def of_tenant(self, tenant: str = "default") -> list[KbRecord]:
        kb = self.m.kb
        with self.session.read():
            rows = list(kb.select().where(kb.tenant == tenant).order_by(kb.name))
        return [kb_record(r) for r in rows]

    def summaries(self, tenant: str | None = None, *, name: str | None = None) -> list[KbSummary]:
        """Knowledge bases (of `tenant`, None: of every tenant; named `name`, if given) by tenant and name,
        with the number of their documents and the sums of those documents' chunks, tokens and bytes."""
        kb, doc = self.m.kb, self.m.document
        query = kb.select().order_by(kb.tenant, kb.name)
        if tenant is not None:
            query = query.where(kb.tenant == tenant)
        if name is not None:
            query = query.where(kb.name == name)
        zero = (0, 0, 0, 0)
        with self.session.read():
            records = [kb_record(r) for r in query]
            totals: dict[str, tuple[int, int, int, int]] = {}
            ids = [r.id for r in records]
            for begin in range(0, len(ids), IN_LIST_MAX):
                grouped = doc.select(
                    doc.kb, peewee.fn.COUNT(doc.id), peewee.fn.SUM(doc.chunk_count), peewee.fn.SUM(doc.token_count),
                    peewee.fn.SUM(doc.size_bytes),
                ).where(doc.kb.in_(ids[begin : begin + IN_LIST_MAX])).group_by(doc.kb)
                for kb_id, *sums in grouped.tuples():
                    totals[kb_id] = tuple(int(v or 0) for v in sums)  # type: ignore[assignment]
        return [KbSummary(r, *totals.get(r.id, zero)) for r in records]

    def delete(self, kb_id: str) -> list[str]:
        """Delete a knowledge base with its documents and tasks; its collection and every blob become
        garbage in the same transaction. Returns the ids of the tasks that were queued or running (to flag
        in Redis): their workers are fenced out, their rows are gone."""
        m = self.m
        now = time.time()
        with self.session.transaction():
            row = m.kb.get_or_none(m.kb.id == kb_id)
            if row is None:
                raise NotFound(f"knowledge base {kb_id} not found")
            active = [r.id for r in m.task.select(m.task.id).where(
                (m.task.kb_id == kb_id) & m.task.status.in_([s.value for s in ACTIVE_STATUSES]))]
            self._garbage.add(GarbageKind.COLLECTION, "knowledge base deleted", kb_id=kb_id, now=now,
                              collection=row.collection)
            blobs = [key for (key,) in m.document.select(m.document.blob_key).where(m.document.kb == kb_id).tuples()]
            for begin in range(0, len(blobs), IN_LIST_MAX):
                m.garbage.insert_many([
                    self._garbage.row(GarbageKind.BLOB, "knowledge base deleted", kb_id=kb_id, now=now, blob_key=key)
                    for key in blobs[begin : begin + IN_LIST_MAX]
                ]).execute()
            m.task.delete().where(m.task.kb_id == kb_id).execute()
            m.document.delete().where(m.document.kb == kb_id).execute()
            m.kb.delete().where(m.kb.id == kb_id).execute()
        return active
