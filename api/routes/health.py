"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Services
from api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(svc: Services) -> Health | JSONResponse:
    checks: dict[str, object] = {}
    try:
        checks["redis"] = bool(await svc.core.redis.ping())
    except OSError as exc:
        checks["redis"] = f"unavailable: {exc}"
    try:
        await asyncio.to_thread(svc.core.repo.task_counts)
        checks["db"] = True
    except Exception as exc:  # any driver error means "not ready"; reported, not swallowed
        checks["db"] = f"unavailable: {type(exc).__name__}: {exc}"
    ready = all(v is True for v in checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return body if ready else JSONResponse(status_code=503, content=body.model_dump())
