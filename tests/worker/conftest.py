"""Fixtures for worker tests that run without a Redis server: a `Core` on the test's own SQLite database
and blob directory whose Redis client and queue fail the test if anything uses them (`Unusable`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.db import Repository, open_database
from common.keys import Keys
from common.runtime import Core, EmbedderLoader
from common.storage.factory import build_object_store
from tests.conftest import make_settings
from tests.fakes import HashEmbedder, Unusable

# Nothing listens here; `Unusable` stands in for the client, so the URL is never dialled.
UNUSED_REDIS_URL = "redis://127.0.0.1:9/0"


@pytest.fixture
async def local_core(tmp_path: Path) -> AsyncIterator[Core]:
    """A `Core` with a real database and blob store and no Redis."""
    settings = make_settings(tmp_path / "data", UNUSED_REDIS_URL)
    settings.data_path.mkdir(parents=True, exist_ok=True)
    database = await asyncio.to_thread(open_database, settings.db_url)
    store = build_object_store(settings)
    try:
        repo = await asyncio.to_thread(Repository, database)
        yield Core(
            settings=settings,
            keys=Keys(prefix=settings.redis.prefix, hash_tag=settings.redis.hash_tag),
            redis=Unusable("Redis"),  # type: ignore[arg-type]
            redis_url="",
            queue=Unusable("Redis"),  # type: ignore[arg-type]
            repo=repo,
            store=store,
            embedders=EmbedderLoader(settings.embedding, HashEmbedder()),
        )
    finally:
        await store.close()
        database.close()
