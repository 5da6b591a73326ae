"""Semantic search over one knowledge base."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter

from api.deps import Services, Tenant
from api.errors import error_responses
from api.schemas import SearchHit, SearchRequest, SearchResponse
from lifecycle import documents as lifecycle

router = APIRouter(tags=["search"], responses=error_responses(401, 422, 503))


@router.post("/kbs/{kb}/search", response_model=SearchResponse, responses=error_responses(400, 404))
async def search(kb: str, body: SearchRequest, svc: Services, tenant: Tenant) -> SearchResponse:
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    vectors = await svc.queries.embed([""], [body.query])
    hits = await lifecycle.search(svc.core.repo, svc.chunks, record, vectors[0], body.top_k, filter=body.filter)
    return SearchResponse(hits=[SearchHit(**asdict(h)) for h in hits])
