"""Shared fixtures: a real redis-server (the bundled one, or REDIS_URL), settings on a temp data
dir, and a `Core` wired to them. Each test gets its own key prefix, so tests never see each
other's streams."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

import vectordb
from common.redisconn import EmbeddedRedis
from common.runtime import Core, open_core
from common.settings import Settings
from tests.fakes import HashEmbedder
from tests.worker.fleet import Fleet


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL when given, else a bundled redis-server started for this test session."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def make_settings(data_dir: Path, redis_url: str, **worker: object) -> Settings:
    """Settings for one test: own data dir, own key prefix, fast worker loops."""
    worker_settings: dict[str, object] = {
        "heartbeat_interval_s": 0.5, "heartbeat_timeout_s": 5.0, "block_ms": 100,
        "retry_backoff_s": 0.05, "shutdown_grace_s": 5.0,
    }
    worker_settings.update(worker)
    return Settings(
        data_dir=str(data_dir),
        redis={"url": redis_url, "prefix": f"t{uuid.uuid4().hex[:10]}"},
        chunking={"chunk_tokens": 64, "overlap_tokens": 8},
        worker=worker_settings,
    )


@pytest.fixture
def settings(tmp_path: Path, redis_url: str) -> Settings:
    return make_settings(tmp_path / "data", redis_url)


@pytest.fixture
async def vectors(tmp_path: Path) -> AsyncIterator[Any]:
    """An embedded vector store client on the test's own directory."""
    client = vectordb.connect(str(tmp_path / "vectors"))
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def core(settings: Settings) -> AsyncIterator[Core]:
    async with open_core(settings, embedder=HashEmbedder()) as opened:
        yield opened


@pytest.fixture
async def fleet(tmp_path: Path, redis_url: str) -> AsyncIterator[Fleet]:
    """A `docvec vectordb` server process on this test's data dir; workers are started by the test."""
    fleet = Fleet(tmp=tmp_path, redis_url=redis_url)
    fleet.start_server()
    try:
        yield fleet
    finally:
        fleet.stop()
