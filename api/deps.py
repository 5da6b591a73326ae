"""Request-scoped access to the process's clients (built once in the app lifespan)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from common.runtime import Core
from vectordb.chunkstore import ChunkStore

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class AppServices:
    core: Core
    chunks: ChunkStore


def services(request: Request) -> AppServices:
    return request.app.state.services


def tenant() -> str:
    """The caller's tenant. Every route is scoped by it; API-key auth maps keys to tenants."""
    return DEFAULT_TENANT


Services = Annotated[AppServices, Depends(services)]
Tenant = Annotated[str, Depends(tenant)]
