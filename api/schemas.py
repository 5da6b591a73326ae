"""Request and response bodies of the HTTP API (pydantic at the edge only)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from common.apikeys import TENANT_RE


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable error code, e.g. not_found")
    message: str = Field(description="what went wrong and how to fix it")


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class KbCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
    chunk_tokens: int | None = Field(default=None, ge=16, le=8192)
    overlap_tokens: int | None = Field(default=None, ge=0, le=4096)


class KbOut(BaseModel):
    id: str
    name: str
    tenant: str
    collection: str
    chunk_tokens: int
    overlap_tokens: int
    embedding_model: str
    dim: int
    created_at: datetime


class DocumentOut(BaseModel):
    id: str
    kb_id: str
    filename: str
    format: str | None
    size_bytes: int
    sha256: str
    status: str
    chunk_count: int
    token_count: int
    parse_version: int
    created_at: datetime
    updated_at: datetime


class TaskOut(BaseModel):
    id: str
    document_id: str
    kb_id: str
    status: str
    priority: str
    parse_version: int
    version: int
    progress: float
    progress_msg: str
    stage: str | None
    stage_timings: dict[str, float]
    attempts: int
    error: str | None
    worker: str | None
    stream_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    part: int = Field(0, description="page-range part of a split PDF (0-based); 0 for a whole-document task")
    parts: int = Field(1, description="how many page-range tasks share this parse of the document")
    page_from: int | None = Field(None, description="first page this part reads (1-based), if split")
    page_to: int | None = Field(None, description="last page this part reads (inclusive), if split")
    chunk_count: int = Field(0, description="chunks this task wrote (set when it is done)")
    token_count: int = Field(0, description="tokens in those chunks")


class Submitted(BaseModel):
    document_id: str
    task_id: str
    filename: str
    size_bytes: int


class SubmitResponse(BaseModel):
    documents: list[Submitted]


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
