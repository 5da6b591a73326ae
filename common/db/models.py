"""The peewee models, built per database (fresh classes bound to it: no shared proxy, so two
repositories on two databases coexist in one process), and the additive migration of older tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import peewee
from playhouse.migrate import SchemaMigrator, migrate

from common.uploads import MAX_FILENAME_CHARS, MAX_SOURCE_ID_CHARS


@dataclass(frozen=True, slots=True)
class Models:
    # Typed Any: the classes are built at run time per database, so their fields are invisible to mypy.
    kb: Any
    document: Any
    task: Any
    garbage: Any
    embedding: Any

    @property
    def all(self) -> list[type[peewee.Model]]:
        return [self.kb, self.document, self.task, self.garbage, self.embedding]


def build_models(database: peewee.Database) -> Models:
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
        filename = peewee.CharField(max_length=MAX_FILENAME_CHARS)
        format = peewee.CharField(max_length=32, null=True)
        size_bytes = peewee.BigIntegerField()
        sha256 = peewee.CharField(max_length=64)
        blob_key = peewee.CharField(max_length=512)
        status = peewee.CharField(max_length=16)
        chunk_count = peewee.IntegerField(default=0)
        token_count = peewee.BigIntegerField(default=0)
        parse_version = peewee.IntegerField(default=0)
        next_parse_version = peewee.IntegerField(default=1)
        # The document's key within its knowledge base (a path under the ingest root, a file name, or
        # the caller's own id): submitting it again updates this document. None: a document without one.
        source_id = peewee.CharField(max_length=MAX_SOURCE_ID_CHARS, null=True)
        # Of the live version's chunks: how many were embedded, how many reused stored vectors.
        chunks_embedded = peewee.IntegerField(default=0)
        chunks_reused = peewee.IntegerField(default=0)
        created_at = peewee.DoubleField()
        updated_at = peewee.DoubleField()

        class Meta:
            table_name = "document"
            indexes = ((("kb", "source_id"), True),)

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
        chunks_embedded = peewee.IntegerField(default=0)
        chunks_reused = peewee.IntegerField(default=0)
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

    class Embedding(_Base):
        """A chunk's vector by what determines it (`common.embedding.cache.embedding_key`: the model, the
        title weighting, the title and the text), shared by every worker: an unchanged chunk is not
        embedded again."""

        key = peewee.CharField(max_length=64, primary_key=True)
        dim = peewee.IntegerField()
        vector = peewee.BlobField()  # float32, little-endian
        created_at = peewee.DoubleField()

        class Meta:
            table_name = "embedding"

    return Models(kb=KnowledgeBase, document=Document, task=Task, garbage=Garbage, embedding=Embedding)




def create_or_upgrade(database: peewee.Database, models: Models) -> None:
    """Create missing tables; upgrade tables created by an older docvec: add the columns it did not have
    (all nullable or defaulted, so existing rows stay valid), then the indexes. Documents that predate
    source keys get their file name as key where it is unique in their knowledge base."""
    existing = set(database.get_tables())
    added: set[tuple[str, str]] = set()
    for model in models.all:
        table = model._meta.table_name
        if table not in existing:
            continue
        present = {c.name for c in database.get_columns(table)}
        missing = [f for f in model._meta.sorted_fields if f.column_name not in present]
        if missing:
            migrator = SchemaMigrator.from_database(database)
            migrate(*(migrator.add_column(table, f.column_name, f) for f in missing))
            added.update((table, f.column_name) for f in missing)
    if ("document", "source_id") in added:
        _backfill_source_ids(models)
    database.create_tables(models.all, safe=True)


def _backfill_source_ids(models: Models) -> None:
    doc = models.document
    unique_names = (
        doc.select(doc.kb, doc.filename).group_by(doc.kb, doc.filename).having(peewee.fn.COUNT(doc.id) == 1)
    )
    for kb_id, filename in list(unique_names.tuples()):
        doc.update(source_id=filename).where((doc.kb == kb_id) & (doc.filename == filename)).execute()
