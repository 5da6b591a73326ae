"""Documents: multipart upload (one or many files), list, get, delete, reparse."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from api.deps import Services, Tenant
from api.errors import error_responses
from api.multipart import Part, UploadReader
from api.paging import TOTAL_RESPONSE, set_total
from api.schemas import DocumentOut, SubmitResponse, Submitted, TaskOut
from common.db import PRIORITIES, DocumentRecord, KbRecord, TaskStatus
from common.errors import InvalidRequest
from common.runtime import Core
from common.uploads import check_source_id
from lifecycle import documents as lifecycle

router = APIRouter(tags=["documents"], responses=error_responses(401, 422, 503))

MAX_OFFSET = 1_000_000_000

UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "required": ["files"],
        "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "one or more documents"},
            "source_id": {"type": "array", "items": {"type": "string"},
                          "description": "each file's key in the knowledge base, in the order of the files "
                                         "(default: the file name as a relative path, `a/b/c.md`; for a file "
                                         "sent with no name, `upload-` and the start of its SHA-256); a key "
                                         "submitted again updates its document, or leaves it unchanged if the "
                                         "content is the same"},
        },
    }}},
}


@router.post("/kbs/{kb}/documents", status_code=status.HTTP_202_ACCEPTED, response_model=SubmitResponse,
             responses=error_responses(400, 404, 413), openapi_extra={"requestBody": UPLOAD_BODY})
async def upload_documents(
    kb: str,
    request: Request,
    svc: Services,
    tenant: Tenant,
    priority: Annotated[str, Query(pattern=f"^({'|'.join(PRIORITIES)})$")] = "normal",
) -> SubmitResponse:
    """Upload files (multipart fields `files`, optional `source_id` per file). Each file is stored as it
    arrives, one at a time in memory; the documents are created once the whole request is read and checked."""
    core = svc.core
    record = await asyncio.to_thread(core.repo.kbs.get, kb, tenant=tenant)
    staged, keys = await _receive(request, core, record)
    try:
        if not staged:
            raise InvalidRequest("no files in the upload: send them as multipart field 'files'")
        if keys and len(keys) != len(staged):
            raise InvalidRequest(f"{len(keys)} source_id fields for {len(staged)} files: give one per file, "
                                 "in the order of the files, or none")
        for key in keys:
            check_source_id(key)  # every key checked before any document is written
    except InvalidRequest:
        await lifecycle.discard_staged(core, staged, "upload refused")
        raise
    submitted: list[Submitted] = []
    for index, upload in enumerate(staged):
        try:
            submission = await lifecycle.submit_staged(core, record, upload, priority=priority,
                                                       source_id=keys[index] if keys else None)
        except Exception:
            await lifecycle.discard_staged(core, staged[index:], "upload refused")
            raise
        document = submission.document
        submitted.append(Submitted(
            document_id=document.id, task_id=submission.task.id if submission.task else None,
            filename=document.filename, size_bytes=document.size_bytes, source_id=document.source_id,
            outcome=submission.outcome,
        ))
    return SubmitResponse(documents=submitted)


async def _receive(request: Request, core: Core, kb: KbRecord) -> tuple[list[lifecycle.StagedUpload], list[str]]:
    """Read the upload as it streams in: each file is staged (stored) before the next is read; the
    `source_id` fields are collected. A refused or broken body releases what was staged."""
    reader = UploadReader(request.headers.get("content-type", ""), max_file_bytes=core.settings.limits.max_upload_bytes,
                          max_parts=core.settings.api.max_upload_parts)
    staged: list[lifecycle.StagedUpload] = []
    keys: list[str] = []
    try:
        async for chunk in request.stream():
            await _take(core, kb, reader.feed(chunk), staged, keys)
        reader.finish()
    except Exception:
        reader.close()
        await lifecycle.discard_staged(core, staged, "upload refused")
        raise
    return staged, keys


async def _take(core: Core, kb: KbRecord, parts: list[Part], staged: list[lifecycle.StagedUpload],
                keys: list[str]) -> None:
    """Stage the files among `parts`, collect their source ids (other fields are ignored, as a form's extra
    inputs are). A function of its own so that a file's bytes are let go as soon as it is stored, not held
    by a loop variable while the next file streams in."""
    while parts:
        part = parts.pop(0)
        if part.name == "files":
            staged.append(await lifecycle.stage_upload(core, kb, part.filename or "", part.content()))
        elif part.name == "source_id":
            keys.append(part.text())


async def _owned_document(svc: Services, tenant: str, document_id: str) -> DocumentRecord:
    return await asyncio.to_thread(svc.core.repo.documents.get, document_id, tenant=tenant)  # another's: 404


@router.get("/kbs/{kb}/documents", response_model=list[DocumentOut],
            responses={**error_responses(404), **TOTAL_RESPONSE})
async def list_documents(
    kb: str, response: Response, svc: Services, tenant: Tenant,
    limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=MAX_OFFSET),
    state: Annotated[TaskStatus | None, Query(alias="status", description="only documents in this state")] = None,
    q: Annotated[str | None, Query(max_length=255, description="only documents whose file name contains this "
                                                               "(ignoring case)")] = None,
) -> list[DocumentOut]:
    """A knowledge base's documents, newest first; `X-Total-Count` says how many match in all."""
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    page = await asyncio.to_thread(svc.core.repo.documents.listing, record.id, status=state, filename_contains=q,
                                   limit=limit, offset=offset)
    set_total(response, page.total)
    return [DocumentOut(**asdict(d)) for d in page.items]


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
