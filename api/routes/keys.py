"""API keys: who am I (any key), and key management (admin keys only)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import Admin, CallerDep, Services
from api.errors import error_responses
from api.schemas import CallerOut, KeyCreate, KeyCreated, KeyOut
from common.apikeys import ApiKeyRecord

router = APIRouter(tags=["keys"], responses=error_responses(401, 422, 503))


def key_out(record: ApiKeyRecord) -> KeyOut:
    return KeyOut(**asdict(record))


@router.get("/me", response_model=CallerOut)
async def whoami(who: CallerDep) -> CallerOut:
    """The tenant and role of the calling key."""
    return CallerOut(tenant=who.tenant, is_admin=who.is_admin, key_id=who.key_id)


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=KeyCreated,
             responses=error_responses(400, 403))
async def create_key(body: KeyCreate, svc: Services, _: Admin) -> KeyCreated:
    """Create a key for any tenant (admin). The raw key is in this response only."""
    issued = await asyncio.to_thread(svc.apikeys.create, body.tenant, admin=body.admin, name=body.name)
    return KeyCreated(**asdict(issued.record), key=issued.secret)


@router.get("/keys", response_model=list[KeyOut], responses=error_responses(403))
async def list_keys(svc: Services, _: Admin,
                    tenant: Annotated[str | None, Query(description="only keys of this tenant")] = None,
                    revoked: Annotated[bool, Query(description="include revoked keys")] = False) -> list[KeyOut]:
    """Every key (admin): ids, tenants and display prefixes."""
    records = await asyncio.to_thread(svc.apikeys.list_keys, tenant=tenant, include_revoked=revoked)
    return [key_out(r) for r in records]


@router.delete("/keys/{key_id}", response_model=KeyOut, responses=error_responses(403, 404))
async def revoke_key(key_id: str, svc: Services, _: Admin) -> KeyOut:
    """Revoke a key at once (admin); revoking a revoked key is a no-op."""
    return key_out(await asyncio.to_thread(svc.apikeys.revoke, key_id))
