"""The composition root for the parts every docvec process needs: Redis, database, blob store, model.

Entrypoints (`docvec up/worker/api/ingest`, the FastAPI lifespan, tests) open a `Core` once and pass
it down; nothing here is global.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from common import memory
from common.db import Repository, open_database
from common.dependencies import Dependency, Probe
from common.embedding.base import Embedder
from common.embedding.factory import build_embedder
from common.keys import Keys
from common.queue import TaskQueue
from common.redisconn import RedisClient, redis_for
from common.settings import EmbeddingSettings, Settings
from common.storage.base import ObjectStore
from common.storage.factory import build_object_store

log = logging.getLogger(__name__)


class EmbedderLoader:
    """Loads the embedding model once, off the event loop, on first use; shared by API and worker."""

    def __init__(self, settings: EmbeddingSettings, embedder: Embedder | None = None, *,
                 onnx_cache_dir: Path | None = None, freeze_heap: bool = False) -> None:
        self._settings = settings
        self._embedder = embedder
        self._onnx_cache_dir = onnx_cache_dir
        self._freeze_heap = freeze_heap  # a serving process: `memory.freeze_heap` once loaded
        self._lock = asyncio.Lock()
        self._built = False

    async def get(self) -> Embedder:
        if self._embedder is None:
            async with self._lock:
                if self._embedder is None:
                    self._embedder = await asyncio.to_thread(
                        build_embedder, self._settings, onnx_cache_dir=self._onnx_cache_dir
                    )
                    self._built = True
                    if self._freeze_heap:
                        frozen = await asyncio.to_thread(memory.freeze_heap)
                        log.info("model loaded; %d objects frozen out of the garbage collector's walks", frozen)
        return self._embedder

    def close(self) -> None:
        """Release what a model built here holds (the openai backend's HTTP connections); one given is the
        caller's to close."""
        close = getattr(self._embedder, "close", None)
        if self._built and close is not None:
            close()


@dataclass(slots=True)
class Core:
    """Clients shared by one docvec process."""

    settings: Settings
    keys: Keys
    redis: RedisClient
    redis_url: str
    queue: TaskQueue
    repo: Repository
    store: ObjectStore
    embedders: EmbedderLoader


@asynccontextmanager
async def open_core(settings: Settings, *, embedder: Embedder | None = None,
                    freeze_heap: bool = False) -> AsyncIterator[Core]:
    """Open Redis (embedded when `redis.url` is empty), the database and the blob store. `freeze_heap`:
    a serving process, whose heap is frozen out of full collections once the model is loaded."""
    settings.data_path.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        redis, url = await stack.enter_async_context(redis_for(settings))
        database = await asyncio.to_thread(open_database, settings.db_url)
        stack.callback(database.close)
        repo = await asyncio.to_thread(Repository, database)
        store = build_object_store(settings)
        stack.push_async_callback(store.close)
        keys = Keys(prefix=settings.redis.prefix, hash_tag=settings.redis.hash_tag)
        queue = TaskQueue(redis, keys)
        await queue.ensure_groups()
        embedders = EmbedderLoader(settings.embedding, embedder, onnx_cache_dir=settings.data_path / "onnx",
                                   freeze_heap=freeze_heap)
        stack.callback(embedders.close)
        yield Core(
            settings=settings,
            keys=keys,
            redis=redis,
            redis_url=url,
            queue=queue,
            repo=repo,
            store=store,
            embedders=embedders,
        )


def dependency_probes(core: Core, vector_store: Probe, *, embedding: bool) -> dict[Dependency, Probe]:
    """A cheap call per dependency that succeeds only when it answers (`vector_store`: the vector-store
    client's own, e.g. `ChunkStore.ping`; `embedding`: probe a remote embedding endpoint too).
    A dependency without a probe counts as back at the next probe round."""

    async def database() -> None:
        await asyncio.to_thread(core.repo.ping)

    async def embedder() -> None:
        model = await core.embedders.get()
        await asyncio.to_thread(model.encode, ["ping"], 1)

    probes: dict[Dependency, Probe] = {
        Dependency.REDIS: core.redis.ping,
        Dependency.DATABASE: database,
        Dependency.OBJECT_STORE: lambda: core.store.exists("docvec-probe"),
        Dependency.VECTOR_STORE: vector_store,
    }
    if embedding:
        probes[Dependency.EMBEDDING] = embedder
    return probes
