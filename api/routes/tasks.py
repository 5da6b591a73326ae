"""Tasks: status, listing, cancel, retry, and live progress as Server-Sent Events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from redis import exceptions as redis_errors
from redis.asyncio.client import PubSub

from api.deps import CallerDep, Scope, Services, Tenant, TenantScope
from api.errors import error_responses
from api.paging import TOTAL_RESPONSE, set_total
from api.schemas import TaskListed, TaskOut
from common import redisconn
from common.db import TaskRecord, TaskStatus
from common.db.listing import Page, TaskListing
from common.errors import NotFound
from lifecycle import documents as lifecycle

router = APIRouter(tags=["tasks"], responses=error_responses(401, 403, 422, 503))

SSE_HEARTBEAT_S = 5.0
"""A comment line this often keeps proxies from closing an idle stream and detects gone clients; the
task's state is re-read from the database at the same time (a cancel of a queued task publishes nothing),
and the caller's key is checked again: a revoked key's stream ends within this long."""
SSE_MAX_LIFETIME_S = 3600.0
"""A stream ends after this long even if its task has not finished; clients reconnect."""
TERMINAL_EVENTS = frozenset({"done", "failed", "cancelled"})
REDIS_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError)
MAX_OFFSET = 1_000_000_000
MAX_TASK_IDS = 100  # ids in one look-up (`id=` repeated): a URL of a few KiB


def task_out(task: TaskRecord) -> TaskOut:
    return TaskOut(**asdict(task))


def task_listed(item: TaskListing) -> TaskListed:
    return TaskListed(**asdict(item.task), filename=item.filename, kb_name=item.kb_name)


async def _owned_task(svc: Services, tenant: str, task_id: str) -> TaskRecord:
    task = await asyncio.to_thread(svc.core.repo.tasks.get, task_id)
    if task.tenant != tenant:
        raise NotFound(f"task {task_id} not found")
    return task


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=error_responses(404))
async def get_task(task_id: str, svc: Services, tenant: Tenant) -> TaskOut:
    return task_out(await _owned_task(svc, tenant, task_id))


@router.get("/tasks", response_model=list[TaskListed], responses={**error_responses(404), **TOTAL_RESPONSE})
async def list_tasks(response: Response, svc: Services, scope: TenantScope,
                     status: Annotated[TaskStatus | None, Query(description="only tasks in this state")] = None,
                     kb: Annotated[str | None, Query(description="only tasks of this knowledge base (by name; with "
                                                                 "tenant=*, of that name in any tenant)")] = None,
                     q: Annotated[str | None, Query(max_length=255, description="only tasks whose document's file name "
                                                                               "contains this (ignoring case)")] = None,
                     document_id: Annotated[str | None, Query(max_length=64, description="only this document's "
                                                                                        "tasks")] = None,
                     task_id: Annotated[list[str] | None, Query(
                         alias="id", max_length=MAX_TASK_IDS,
                         description=f"only these tasks (repeat it: `id=a&id=b`, up to {MAX_TASK_IDS}); one request "
                                     "instead of one per task for a client waiting on many")] = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                     offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0) -> list[TaskListed]:
    """The tasks of the caller's tenant (an admin's `tenant=T`: of T; `tenant=*`: of every tenant), newest
    first, with their file and knowledge base names; `X-Total-Count` says how many match in all."""
    page = await _task_page(svc, scope, status=status, kb=kb, q=q, document_id=document_id, task_ids=task_id,
                            limit=limit, offset=offset)
    set_total(response, page.total)
    return [task_listed(item) for item in page.items]


async def _task_page(svc: Services, scope: Scope, *, status: TaskStatus | None, kb: str | None, q: str | None,
                     document_id: str | None, task_ids: list[str] | None, limit: int,
                     offset: int) -> Page[TaskListing]:
    repo = svc.core.repo
    kb_id = kb_name = None
    if kb is not None and scope.tenant is None:
        kb_name = kb  # every tenant's knowledge bases of that name
    elif kb is not None:
        kb_id = (await asyncio.to_thread(repo.kbs.get, kb, tenant=scope.one_tenant())).id  # 404 if it has none
    return await asyncio.to_thread(
        repo.tasks.listing, tenant=scope.tenant, status=status, kb_id=kb_id, kb_name=kb_name, document_id=document_id,
        filename_contains=q, task_ids=task_ids, limit=limit, offset=offset,
    )


@router.post("/tasks/{task_id}/cancel", response_model=TaskOut, responses=error_responses(404, 409))
async def cancel_task(task_id: str, svc: Services, tenant: Tenant) -> TaskOut:
    """Cancel a queued or running task (409 if it already finished)."""
    await _owned_task(svc, tenant, task_id)
    return task_out(await lifecycle.cancel(svc.core, task_id))


@router.post("/tasks/{task_id}/retry", response_model=TaskOut, responses=error_responses(404, 409))
async def retry_task(task_id: str, svc: Services, tenant: Tenant) -> TaskOut:
    """Re-run a failed or cancelled task from the start (409 otherwise)."""
    await _owned_task(svc, tenant, task_id)
    return task_out(await lifecycle.retry(svc.core, task_id))


EVENTS_DESCRIPTION = """Server-Sent Events: first a `state` event (the task as `GET /tasks/{id}` returns it), then
one event per progress report (`progress`, `retry`, then `done`, `failed` or `cancelled`; data: JSON with
`stage`, `progress`, `message`, `status`, `worker`, `at`), then a final `state` event, and the stream
ends. Comment lines (`: keepalive`) are sent every few seconds; a stream lasts at most an hour."""


@router.get(
    "/tasks/{task_id}/events",
    response_class=StreamingResponse,
    description=EVENTS_DESCRIPTION,
    responses={
        200: {"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
        **error_responses(403, 404),
    },
)
async def task_events(task_id: str, svc: Services, who: CallerDep, tenant: Tenant) -> StreamingResponse:
    await _owned_task(svc, tenant, task_id)
    channel = svc.core.keys.task_events(task_id)
    pubsub = redisconn.pubsub(svc.core.redis, channel)
    try:
        # Subscribe before reading the state, so no event falls between the two.
        await pubsub.subscribe(channel)
        task = await _owned_task(svc, tenant, task_id)
    except BaseException:
        await pubsub.aclose()
        raise
    return StreamingResponse(
        _event_stream(svc, pubsub, task, who.key_id), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


def _state(task: TaskRecord) -> str:
    return _sse("state", task_out(task).model_dump_json())


async def _event_stream(svc: Services, pubsub: PubSub, task: TaskRecord, key_id: str) -> AsyncIterator[str]:
    """Yield the task's events until it is terminal, the stream's lifetime ends, Redis goes away or the
    caller's key (`key_id`) is revoked. Closes `pubsub` in every case (shielded: a client disconnect
    cancels this generator)."""
    repo = svc.core.repo
    loop = asyncio.get_running_loop()
    try:
        yield _state(task)
        if task.is_terminal:
            return
        deadline = loop.time() + SSE_MAX_LIFETIME_S
        next_beat = loop.time() + SSE_HEARTBEAT_S
        while (now := loop.time()) < deadline:
            try:
                message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                   timeout=max(min(next_beat, deadline) - now, 0.0))
            except REDIS_ERRORS as exc:
                yield _sse("error", json.dumps({"message": f"event source unavailable: {exc}; reconnect"}))
                return
            if message is not None:
                event, data = _decode(message)
                yield _sse(event, data)
                if event not in TERMINAL_EVENTS:
                    continue
            elif loop.time() < next_beat:
                continue
            else:
                if not (await asyncio.to_thread(svc.apikeys.get, key_id)).active:
                    yield _sse("error", json.dumps({"message": "the API key of this stream was revoked"}))
                    return
                yield ": keepalive\n\n"
                next_beat = loop.time() + SSE_HEARTBEAT_S
            current = await asyncio.to_thread(repo.tasks.get, task.id)
            if current.is_terminal:
                yield _state(current)
                return
    except NotFound:  # the task (or its document) was deleted while watched
        yield _sse("deleted", json.dumps({"task_id": task.id}))
    finally:
        with anyio.CancelScope(shield=True):
            await pubsub.aclose()


def _decode(message: dict[str, Any]) -> tuple[str, str]:
    raw = message.get("data")
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    try:
        payload = json.loads(text)
    except ValueError:
        return "progress", json.dumps({"message": text})
    event = str(payload.get("event") or "progress") if isinstance(payload, dict) else "progress"
    return event, json.dumps(payload)
