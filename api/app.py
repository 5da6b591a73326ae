"""The FastAPI application factory and its lifespan (the API's composition root)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

import vectordb
from api.deps import AppServices
from api.errors import install_error_handlers
from api.limits import BodyGate
from api.metrics import ApiMetrics, MetricsMiddleware
from api.routes import chunks, documents, health, kbs, keys, metrics, search, tasks
from api.routes.dashboard import install_operator_routes
from common.apikeys import ApiKeyStore
from common.dependencies import DependencyBoard
from common.embedding.batcher import EmbedBatcher
from common.embedding.factory import model_sizing
from common.runtime import Core, dependency_probes, open_core
from common.settings import Settings
from vectordb.base import VectorStore
from vectordb.chunkstore import ChunkStore

API_PREFIX = "/api/v1"


QUERY_WINDOW = 64


def query_batcher(core: Core) -> EmbedBatcher:
    """Embeds the queries of concurrent searches together: a lone query goes at once; while a model
    call runs, the queries that arrive wait for the next call, which takes them all (on one core,
    MiniLM embeds 8 short queries in about twice the time of one).

    Half the model slots a worker would use (one on 2 cores): around a short query's model call an
    API process spends about as much CPU again on HTTP, auth, the database and the vector search, and
    fewer, fuller calls cost less per query. Measured through `bench.search` on 2 cores at 8 clients:
    p99 110-126 ms with one call at a time, 135-156 ms with two.
    """
    embedding = core.settings.embedding
    slots = max(1, model_sizing(embedding).parallel // 2)
    return EmbedBatcher(core.embedders, batch_size=embedding.batch_size, title_weight=0.0,
                        concurrency=asyncio.Semaphore(slots), window=QUERY_WINDOW)


def create_app(settings: Settings, *, core: Core | None = None, vectors: VectorStore | None = None,
               freeze_heap: bool = False) -> FastAPI:
    """Build the app. `core`/`vectors` may be shared with an in-process worker (`docvec up`);
    otherwise the lifespan opens (and closes) its own (`freeze_heap`: see `open_core`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app_core: Core = core if core is not None else await stack.enter_async_context(
                open_core(settings, freeze_heap=freeze_heap))
            app_vectors: VectorStore | None = vectors
            if app_vectors is None:
                app_vectors = vectordb.connect(settings.vectordb_uri, token=settings.vectordb.token)
                stack.push_async_callback(app_vectors.close)
            chunks = ChunkStore(app_vectors, index_type=settings.vectordb.index_type,
                                metric_type=settings.vectordb.metric_type)
            apikeys = await asyncio.to_thread(ApiKeyStore, app_core.repo.database)
            probes = dependency_probes(app_core, chunks.ping, embedding=settings.embedding.backend == "openai")
            app.state.services = AppServices(
                core=app_core, chunks=chunks, queries=query_batcher(app_core), apikeys=apikeys, probes=probes,
                readiness=DependencyBoard(probes, probe_interval_s=settings.worker.dependency_probe_s),
            )
            yield

    app = FastAPI(title="docvec", version="0.1.0", lifespan=lifespan,
                  description="Documents in, searchable vector chunks out.")
    install_error_handlers(app)
    app.state.metrics = ApiMetrics()
    # Auth and size caps before any body is read (inside the metrics, which count its 401/413s).
    app.add_middleware(BodyGate, settings=settings, prefix=API_PREFIX)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    for module in (kbs, documents, chunks, tasks, search, keys):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(health.router)
    app.include_router(metrics.router)
    install_operator_routes(app, api_prefix=API_PREFIX)
    return app
