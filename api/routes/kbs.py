"""Knowledge bases: a vector collection plus its chunking and embedding settings."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, status

from api.deps import Services, Tenant, TenantScope
from api.errors import error_responses
from api.schemas import KbCreate, KbOut, KbSummaryOut, ReindexRequest, ReindexResponse, SyncRequest, SyncResponse
from common.db.listing import KbSummary
from common.errors import NotFound
from lifecycle import documents as lifecycle
from lifecycle import sync

router = APIRouter(tags=["knowledge bases"], responses=error_responses(401, 403, 422, 503))


def kb_summary_out(summary: KbSummary) -> KbSummaryOut:
    return KbSummaryOut(**asdict(summary.kb), document_count=summary.document_count, chunk_count=summary.chunk_count,
                        token_count=summary.token_count, size_bytes=summary.size_bytes)


@router.post("/kbs", status_code=status.HTTP_201_CREATED, response_model=KbOut,
             responses=error_responses(400, 409))
async def create_kb(body: KbCreate, svc: Services, tenant: Tenant) -> KbOut:
    kb = await lifecycle.create_kb(svc.core, body.name, tenant=tenant, chunk_tokens=body.chunk_tokens,
                                   overlap_tokens=body.overlap_tokens, chunks=svc.chunks)
    return KbOut(**asdict(kb))


@router.get("/kbs", response_model=list[KbSummaryOut])
async def list_kbs(svc: Services, scope: TenantScope) -> list[KbSummaryOut]:
    """The knowledge bases of the caller's tenant (an admin's `tenant=T`: of T; `tenant=*`: of every
    tenant), by tenant and name, with their documents' totals."""
    summaries = await asyncio.to_thread(svc.core.repo.kbs.summaries, scope.tenant)
    return [kb_summary_out(s) for s in summaries]


@router.get("/kbs/{kb}", response_model=KbSummaryOut, responses=error_responses(404))
async def get_kb(kb: str, svc: Services, tenant: Tenant) -> KbSummaryOut:
    summaries = await asyncio.to_thread(svc.core.repo.kbs.summaries, tenant, name=kb)
    if not summaries:
        raise NotFound(f"knowledge base {kb!r} not found")
    return kb_summary_out(summaries[0])


@router.delete("/kbs/{kb}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404))
async def delete_kb(kb: str, svc: Services, tenant: Tenant) -> None:
    """Delete a knowledge base: gone at once; its tasks are cancelled, its collection and files removed in
    the background."""
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    await lifecycle.delete_kb(svc.core, record)


@router.post("/kbs/{kb}/sync", response_model=SyncResponse, responses=error_responses(400, 404))
async def sync_kb(kb: str, body: SyncRequest, svc: Services, tenant: Tenant) -> SyncResponse:
    """Compare the caller's sources (source id -> SHA-256 of the content) with the knowledge base: which
    are new, changed, unchanged; with `delete_missing`, delete the documents whose source id is not
    listed (not with `dry_run`). Upload the new and changed ones to `/kbs/{kb}/documents`."""
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    result = await sync.sync(svc.core, record, body.sources, delete_missing=body.delete_missing,
                             dry_run=body.dry_run)
    return SyncResponse(**asdict(result), dry_run=body.dry_run)


@router.post("/kbs/{kb}/reindex", status_code=status.HTTP_202_ACCEPTED, response_model=ReindexResponse,
             responses=error_responses(400, 404, 409))
async def reindex_kb(kb: str, svc: Services, tenant: Tenant, body: ReindexRequest | None = None) -> ReindexResponse:
    """Change the chunking (optional) and take up the configured embedding model: every document gets a
    new parse version; search serves each document's old chunks until its new ones are done. The body
    is optional: none (or an empty one) keeps the chunking."""
    body = body or ReindexRequest()
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    updated, tasks = await sync.reindex(svc.core, record, chunk_tokens=body.chunk_tokens,
                                        overlap_tokens=body.overlap_tokens)
    return ReindexResponse(kb=KbOut(**asdict(updated)), task_ids=[t.id for t in tasks])
