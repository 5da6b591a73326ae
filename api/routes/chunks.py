"""A document's chunks: those of its live parse version (what search serves), in ordinal order, paged."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Services, Tenant
from api.errors import error_responses
from api.schemas import ChunkOut, ChunkPageOut
from lifecycle import chunks as live

router = APIRouter(tags=["documents"], responses=error_responses(401, 403, 422, 503))

MAX_CHUNKS_PER_PAGE = 500
MAX_OFFSET = 1_000_000_000


@router.get("/documents/{document_id}/chunks", response_model=ChunkPageOut, responses=error_responses(404))
async def document_chunks(document_id: str, svc: Services, tenant: Tenant,
                          limit: Annotated[int, Query(ge=1, le=MAX_CHUNKS_PER_PAGE)] = 50,
                          offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> ChunkPageOut:
    """Chunks `offset .. offset + limit` of the document's live parse version, with their titles, pages and
    character offsets; none while no version is live."""
    document = await asyncio.to_thread(svc.core.repo.documents.get, document_id, tenant=tenant)
    page = await live.live_chunks(svc.core.repo, svc.chunks, document, limit=limit, offset=offset)
    return ChunkPageOut(document_id=document.id, parse_version=page.parse_version, total=page.total, offset=offset,
                        chunks=[ChunkOut(**asdict(c)) for c in page.chunks])
