"""Request and response bodies of the HTTP API (pydantic at the edge only)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, create_model

from common.apikeys import TENANT_RE
from common.db import KB_NAME_RE, DocumentRecord, KbRecord, Outcome, TaskRecord


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable error code, e.g. not_found")
    message: str = Field(description="what went wrong and how to fix it")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class KbCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=f"^{KB_NAME_RE.pattern}$")
    chunk_tokens: int | None = Field(default=None, ge=16, le=8192)
    overlap_tokens: int | None = Field(default=None, ge=0, le=4096)


def _out(record: type[Any], name: str, *, hide: frozenset[str] = frozenset(),
         descriptions: Mapping[str, str] | None = None) -> type[BaseModel]:
    """A response model with a record's fields (less `hide`): the record declares them once."""
    hints = typing.get_type_hints(record)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in hide:
            continue
        default = f.default if f.default is not dataclasses.MISSING else ...
        fields[f.name] = (hints[f.name], Field(default, description=(descriptions or {}).get(f.name)))
    return create_model(name, **fields)


if TYPE_CHECKING:  # built at run time from the records; to a type checker, response models

    class KbOut(BaseModel): ...

    class DocumentOut(BaseModel): ...

    class TaskOut(BaseModel): ...

else:
    KbOut = _out(KbRecord, "KbOut")
    DocumentOut = _out(DocumentRecord, "DocumentOut", hide=frozenset({"tenant", "blob_key", "next_parse_version"}),
                       descriptions={
        "source_id": "the document's key in its knowledge base: submitting it again updates this document",
        "chunks_embedded": "of the live version's chunks, how many were embedded",
        "chunks_reused": "of the live version's chunks, how many reused the vector of an unchanged chunk",
    })
    TaskOut = _out(TaskRecord, "TaskOut", hide=frozenset({"tenant", "updated_at"}), descriptions={
        "part": "page-range part of a split PDF (0-based); 0 for a whole-document task",
        "parts": "how many page-range tasks share this parse of the document",
        "page_from": "first page this part reads (1-based), if split",
        "page_to": "last page this part reads (inclusive), if split",
        "chunk_count": "chunks this task wrote (set when it is done)",
        "token_count": "tokens in those chunks",
        "chunks_embedded": "of those chunks, how many were embedded",
        "chunks_reused": "of those chunks, how many reused the vector of an unchanged chunk",
    })


class TaskListed(TaskOut):
    """A task in a list: with its tenant, its document's file name and its knowledge base's name."""

    tenant: str
    filename: str = Field(description="the file name of the task's document")
    kb_name: str = Field(description="the name of the task's knowledge base")


class KbSummaryOut(KbOut):
    """A knowledge base with the totals of its documents."""

    document_count: int
    chunk_count: int = Field(description="chunks of the documents' live versions")
    token_count: int
    size_bytes: int = Field(description="the documents' uploaded bytes")


class ChunkOut(BaseModel):
    """One chunk of a document's live parse version."""

    chunk_id: str
    ordinal: int = Field(description="position in the document (page-range parts start far apart)")
    title: str = Field(description="the chunk's heading path")
    text: str
    page: int | None = Field(description="the PDF page the chunk starts on")
    start_char: int = Field(description="offset of the chunk's first character in the parsed text")
    end_char: int = Field(description="offset just past its last character")
    token_count: int


class ChunkPageOut(BaseModel):
    document_id: str
    parse_version: int = Field(description="the live parse version the chunks belong to (0: none is live yet)")
    total: int = Field(description="chunks in that version")
    offset: int
    chunks: list[ChunkOut]


class Submitted(BaseModel):
    document_id: str
    task_id: str | None = Field(description="the task that parses this upload; null when it is unchanged")
    filename: str
    size_bytes: int
    source_id: str | None = Field(description="the document's key in its knowledge base")
    outcome: Outcome = Field(description="added: a new document; updated: a new version of the document with "
                                         "this source id; unchanged: the document already has this content")


class SubmitResponse(BaseModel):
    documents: list[Submitted]


class SyncRequest(BaseModel):
    sources: dict[str, str] = Field(description="source id -> SHA-256 (hex) of its content, for every document "
                                                "the caller has")
    delete_missing: bool = Field(True, description="delete the documents whose source id is not in `sources`")
    dry_run: bool = Field(False, description="only report what would happen")


class SyncResponse(BaseModel):
    added: list[str] = Field(description="source ids the knowledge base does not have: upload them")
    updated: list[str] = Field(description="source ids whose content changed: upload them")
    unchanged: list[str] = Field(description="source ids whose content the knowledge base already has")
    deleted: list[str] = Field(description="source ids whose documents were deleted (would be, with dry_run)")
    unfinished: dict[str, list[str]] = Field(
        default_factory=dict, description="source ids whose content the knowledge base has but whose latest "
                                          "version is still queued or running (not done: no upload needed), "
                                          "each with the ids of the tasks that finish it")
    dry_run: bool


class ReindexRequest(BaseModel):
    chunk_tokens: int | None = Field(default=None, ge=16, le=8192)
    overlap_tokens: int | None = Field(default=None, ge=0, le=4096)


class ReindexResponse(BaseModel):
    kb: KbOut
    task_ids: list[str] = Field(description="the queued task of every document's new parse version")


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=10_000)
    top_k: int = Field(default=5, ge=1, le=1000)
    filter: str | None = Field(default=None, max_length=4096)


class SearchHit(BaseModel):
    chunk_id: str
    document_id: str
    filename: str
    title: str
    text: str
    score: float
    page: int | None = None


class SearchResponse(BaseModel):
    hits: list[SearchHit]


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = {}


class KeyCreate(BaseModel):
    tenant: str = Field(min_length=1, max_length=64, pattern=f"^{TENANT_RE.pattern}$")
    admin: bool = False
    name: str = Field(default="", max_length=128)


class KeyOut(BaseModel):
    """An API key as stored: its id, tenant and a display prefix, never the key itself."""

    id: str
    tenant: str
    is_admin: bool
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="the raw API key; shown only in this response")


class CallerOut(BaseModel):
    tenant: str
    is_admin: bool
    key_id: str
