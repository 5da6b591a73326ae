"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Services
from api.schemas import Health
from common.dependencies import run_probe

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(svc: Services) -> Health | JSONResponse:
    """Every dependency the API needs answers: Redis, the database, the object store, the vector store
    (and an embedding endpoint, when one is configured). One that does not is reported with the time it
    was first seen down by this API process."""
    board = svc.readiness
    errors = await asyncio.gather(*(run_probe(probe) for probe in svc.probes.values()))
    checks: dict[str, object] = {}
    for dependency, error in zip(svc.probes, errors, strict=True):
        if error is None:
            board.up(dependency)
            checks[dependency.value] = True
            continue
        board.down(dependency, error)
        outage = board.outage(dependency)
        since = outage.since if outage is not None else time.time()
        checks[dependency.value] = (
            f"unavailable since {datetime.fromtimestamp(since, tz=UTC).isoformat(timespec='seconds')} "
            f"({time.time() - since:.0f}s): {error}"
        )
    ready = all(v is True for v in checks.values())
    body = Health(status="ready" if ready else "not ready", checks=checks)
    return body if ready else JSONResponse(status_code=503, content=body.model_dump())
