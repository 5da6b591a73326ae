"""Tasks: status, listing, cancel, retry."""

from __future__ import annotations

import asyncio
from dataclasses import asdict

from fastapi import APIRouter, Query

from api.deps import Services, Tenant
from api.schemas import TaskOut
from common import ingest
from common.db import TaskRecord, TaskStatus
from common.errors import NotFound

router = APIRouter(tags=["tasks"])


def task_out(task: TaskRecord) -> TaskOut:
    return TaskOut(**asdict(task))


async def _owned_task(svc: Services, tenant: str, task_id: str) -> TaskRecord:
    task = await asyncio.to_thread(svc.core.repo.get_task, task_id)
    if task.tenant != tenant:
        raise NotFound(f"task {task_id} not found")
    return task


@router.get("/tasks/{task_id}", response_model=TaskOut)
async def get_task(task_id: str, svc: Services, tenant: Tenant) -> TaskOut:
    return task_out(await _owned_task(svc, tenant, task_id))


@router.get("/tasks", response_model=list[TaskOut])
async def list_tasks(svc: Services, tenant: Tenant, status: TaskStatus | None = None,
                     kb: str | None = Query(None, description="knowledge base name"),
                     limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)) -> list[TaskOut]:
    repo = svc.core.repo
    kb_id = (await asyncio.to_thread(repo.get_kb, kb, tenant=tenant)).id if kb else None
    tasks = await asyncio.to_thread(
        repo.list_tasks, status=status, kb_id=kb_id, tenant=tenant, limit=limit, offset=offset
    )
    return [task_out(t) for t in tasks]


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut)
async def cancel_task(task_id: str, svc: Services, tenant: Tenant) -> TaskOut:
    await _owned_task(svc, tenant, task_id)
    return task_out(await ingest.cancel(svc.core, task_id))


@router.post("/tasks/{task_id}/retry", response_model=TaskOut)
async def retry_task(task_id: str, svc: Services, tenant: Tenant) -> TaskOut:
    await _owned_task(svc, tenant, task_id)
    return task_out(await ingest.retry(svc.core, task_id))
