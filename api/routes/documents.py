"""Documents: multipart upload (one or many files), list, get, delete, reparse."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile, status

from api.deps import Services, Tenant
from api.errors import error_responses
from api.schemas import DocumentOut, SubmitResponse, Submitted, TaskOut
from common.db import PRIORITIES, DocumentRecord
from common.errors import InvalidRequest, NotFound
from common.uploads import check_upload_size
from lifecycle import documents as lifecycle

router = APIRouter(tags=["documents"], responses=error_responses(401, 422, 503))

MAX_OFFSET = 1_000_000_000

READ_CHUNK_BYTES = 1024 * 1024


async def _read_limited(upload: UploadFile, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while chunk := await upload.read(READ_CHUNK_BYTES):
        size += len(chunk)
        check_upload_size(upload.filename, size, limit)
        parts.append(chunk)
    return b"".join(parts)


@router.post("/kbs/{kb}/documents", status_code=status.HTTP_202_ACCEPTED, response_model=SubmitResponse,
             responses=error_responses(400, 404, 413))
async def upload_documents(
    kb: str,
    svc: Services,
    tenant: Tenant,
    files: Annotated[list[UploadFile], File(description="one or more documents")],
    source_id: Annotated[list[str] | None, Form(
        description="each file's key in the knowledge base, in the order of the files (default: its file name); "
                    "a key submitted again updates its document, or leaves it unchanged if the content is the same"
    )] = None,
    priority: Annotated[str, Query(pattern=f"^({'|'.join(PRIORITIES)})$")] = "normal",
) -> SubmitResponse:
    core = svc.core
    record = await asyncio.to_thread(core.repo.kbs.get, kb, tenant=tenant)
    if not files:
        raise InvalidRequest("no files in the upload: send them as multipart field 'files'")
    if source_id is not None and len(source_id) != len(files):
        raise InvalidRequest(f"{len(source_id)} source_id fields for {len(files)} files: give one per file, "
                             "in the order of the files, or none")
    keys: list[str | None] = list(source_id) if source_id is not None else [None] * len(files)
    limit = core.settings.limits.max_upload_bytes
    payloads = [(f.filename or "document", await _read_limited(f, limit)) for f in files]
    submitted: list[Submitted] = []
    for (filename, data), key in zip(payloads, keys, strict=True):
        submission = await lifecycle.submit(core, record, filename, data, source_id=key, priority=priority)
        document = submission.document
        submitted.append(Submitted(
            document_id=document.id, task_id=submission.task.id if submission.task else None,
            filename=document.filename, size_bytes=document.size_bytes, source_id=document.source_id,
            outcome=submission.outcome,
        ))
    return SubmitResponse(documents=submitted)


async def _owned_document(svc: Services, tenant: str, document_id: str) -> DocumentRecord:
    document = await asyncio.to_thread(svc.core.repo.documents.get, document_id)
    if document.tenant != tenant:
        raise NotFound(f"document {document_id} not found")
    return document


@router.get("/kbs/{kb}/documents", response_model=list[DocumentOut], responses=error_responses(404))
async def list_documents(kb: str, svc: Services, tenant: Tenant, limit: int = Query(100, ge=1, le=1000),
                         offset: int = Query(0, ge=0, le=MAX_OFFSET)) -> list[DocumentOut]:
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    documents = await asyncio.to_thread(svc.core.repo.documents.of_kb, record.id, limit=limit, offset=offset)
    return [DocumentOut(**asdict(d)) for d in documents]


@router.get("/documents/{document_id}", response_model=DocumentOut, responses=error_responses(404))
async def get_document(document_id: str, svc: Services, tenant: Tenant) -> DocumentOut:
    return DocumentOut(**asdict(await _owned_document(svc, tenant, document_id)))


@router.delete("/documents/{document_id}", status_code=status.HTTP_204_NO_CONTENT,
               responses=error_responses(404, 409))
async def delete_document(document_id: str, svc: Services, tenant: Tenant) -> None:
    """Delete a document: gone from search at once; its tasks are cancelled, its chunks and file removed
    in the background."""
    document = await _owned_document(svc, tenant, document_id)
    await lifecycle.delete_document(svc.core, document.id)


@router.post("/documents/{document_id}/reparse", status_code=status.HTTP_202_ACCEPTED, response_model=TaskOut,
             responses=error_responses(404, 409))
async def reparse_document(document_id: str, svc: Services, tenant: Tenant) -> TaskOut:
    document = await _owned_document(svc, tenant, document_id)
    return TaskOut(**asdict(await lifecycle.reparse(svc.core, document.id)))
