"""API fixtures: the app on the test's `core`, and HTTP clients that authenticate with API keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from common.apikeys import IssuedKey
from common.runtime import Core
from common.settings import Settings
from tests.api.live import LiveApi

BASE_URL = "http://docvec.test"
TENANT = "default"

ClientFactory = Callable[..., Awaitable[httpx.AsyncClient]]


async def issue_key(app: FastAPI, tenant: str, *, admin: bool = False) -> IssuedKey:
    """Create an API key in the app's key store."""
    return await asyncio.to_thread(app.state.services.apikeys.create, tenant, admin=admin)


@pytest.fixture
async def app(core: Core, vectors: Any) -> AsyncIterator[FastAPI]:
    """The API on the test's core and vector store, its lifespan entered."""
    application = create_app(core.settings, core=core, vectors=vectors)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def make_client(app: FastAPI) -> AsyncIterator[ClientFactory]:
    """`await make_client(tenant, admin=False)`: a client holding a new key of `tenant`
    (`tenant=None`: no key at all). Closed at teardown."""
    opened: list[httpx.AsyncClient] = []

    async def make(tenant: str | None = TENANT, *, admin: bool = False) -> httpx.AsyncClient:
        headers = {}
        if tenant is not None:
            headers["Authorization"] = f"Bearer {(await issue_key(app, tenant, admin=admin)).secret}"
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        http = httpx.AsyncClient(transport=transport, base_url=BASE_URL, headers=headers)
        opened.append(http)
        return http

    try:
        yield make
    finally:
        for http in opened:
            await http.aclose()


@pytest.fixture
async def client(make_client: ClientFactory) -> httpx.AsyncClient:
    """A client with a (non-admin) key of the tenant `default`."""
    return await make_client(TENANT)


@pytest.fixture
async def admin_client(make_client: ClientFactory) -> httpx.AsyncClient:
    return await make_client(TENANT, admin=True)


@pytest.fixture
async def anon_client(make_client: ClientFactory) -> httpx.AsyncClient:
    """A client without any API key."""
    return await make_client(None)


@pytest.fixture
def live_api(settings: Settings, tmp_path: Path) -> Iterator[LiveApi]:
    """A real uvicorn on 127.0.0.1 (free port) in its own thread; `live_api.start_worker()` adds a worker."""
    server = LiveApi(settings, tmp_path / "live-vectors").start()
    try:
        yield server
    finally:
        server.stop()
