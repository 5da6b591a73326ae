"""Semantic search over one knowledge base."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from api.deps import Services, Tenant
from api.errors import error_responses
from api.schemas import SearchHit, SearchRequest, SearchResponse
from lifecycle import documents as lifecycle

router = APIRouter(tags=["search"], responses=error_responses(401, 403, 422, 503))


@router.post("/kbs/{kb}/search", response_model=SearchResponse, responses=error_responses(400, 404))
async def search(kb: str, body: SearchRequest, svc: Services, tenant: Tenant) -> SearchResponse:
    # The query is embedded while the knowledge base is looked up (neither needs the other).
    embedding = asyncio.ensure_future(svc.queries.embed([""], [body.query]))
    try:
        record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    except BaseException:
        embedding.cancel()  # a queued query is dropped before it costs model time
        embedding.add_done_callback(_discard_outcome)  # a model failure meanwhile is not this error
        raise
    vectors = await embedding
    hits = await lifecycle.search(svc.core.repo, svc.chunks, record, vectors[0], body.top_k, filter=body.filter)
    return SearchResponse(hits=[SearchHit(**asdict(h)) for h in hits])


def _discard_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved: asyncio does not log it as never retrieved
