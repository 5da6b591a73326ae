"""Prometheus scrape endpoint (unauthenticated, like /healthz: bind the API privately or filter it)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import Services
from api.metrics import render

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text exposition format",
                     "content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, svc: Services) -> Response:
    """API request metrics, per-worker metrics (label `worker`), task streams and task counts."""
    return Response(await render(request.app.state.metrics, svc.core), media_type=CONTENT_TYPE_LATEST)
