"""Knowledge bases: a vector collection plus its chunking and embedding settings."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, status

from api.deps import Services, Tenant
from api.errors import error_responses
from api.schemas import KbCreate, KbOut
from lifecycle import documents as lifecycle

router = APIRouter(tags=["knowledge bases"], responses=error_responses(401, 422, 503))


@router.post("/kbs", status_code=status.HTTP_201_CREATED, response_model=KbOut,
             responses=error_responses(400, 409))
async def create_kb(body: KbCreate, svc: Services, tenant: Tenant) -> KbOut:
    kb = await lifecycle.create_kb(svc.core, body.name, tenant=tenant, chunk_tokens=body.chunk_tokens,
                                   overlap_tokens=body.overlap_tokens, chunks=svc.chunks)
    return KbOut(**asdict(kb))


@router.get("/kbs", response_model=list[KbOut])
async def list_kbs(svc: Services, tenant: Tenant) -> list[KbOut]:
    kbs = await asyncio.to_thread(svc.core.repo.kbs.of_tenant, tenant=tenant)
    return [KbOut(**asdict(kb)) for kb in kbs]


@router.get("/kbs/{kb}", response_model=KbOut, responses=error_responses(404))
async def get_kb(kb: str, svc: Services, tenant: Tenant) -> KbOut:
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    return KbOut(**asdict(record))


@router.delete("/kbs/{kb}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(404))
async def delete_kb(kb: str, svc: Services, tenant: Tenant) -> None:
    """Delete a knowledge base: gone at once; its tasks are cancelled, its collection and files removed in
    the background."""
    record = await asyncio.to_thread(svc.core.repo.kbs.get, kb, tenant=tenant)
    await lifecycle.delete_kb(svc.core, record)
