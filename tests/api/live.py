"""A real uvicorn serving the API on 127.0.0.1 (a free port), in a thread with its own event loop.

The thread opens its own `Core` (on the test's settings, with the fast `HashEmbedder`) and an embedded
vector store, so the test's loop stays free for an HTTP client (SSE) or a synchronous client
(schemathesis). `start_worker()` runs an in-process worker inside the server's loop on demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import uvicorn

import vectordb
from api.app import create_app
from common.apikeys import ApiKeyStore, IssuedKey
from common.runtime import open_core
from common.settings import Settings
from tests.fakes import HashEmbedder
from worker.consumer import Worker

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # never touch the test process's signal handlers
        yield


class LiveApi:
    """Start with `start()`, stop with `stop()`; `url` is the base URL once started."""

    def __init__(self, settings: Settings, vectors_dir: Path) -> None:
        self._settings = settings
        self._vectors_dir = vectors_dir
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: Future[str] = Future()
        self._stop = asyncio.Event()
        self._worker_wanted = asyncio.Event()
        self._apikeys: ApiKeyStore | None = None
        self.repo: Any = None  # the server's Repository once started (its database, for a test to read)
        self.url = ""

    def start(self) -> LiveApi:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="live-api", daemon=True)
        self._thread.start()
        self.url = self._ready.result(timeout=START_TIMEOUT_S)
        return self

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await self._serve()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise
        if not self._ready.done():
            self._ready.set_exception(RuntimeError("uvicorn exited before it started serving"))

    async def _serve(self) -> None:
        async with open_core(self._settings, embedder=HashEmbedder()) as core:
            vectors = vectordb.connect(str(self._vectors_dir))
            try:
                app = create_app(self._settings, core=core, vectors=vectors)
                server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
                self._apikeys = ApiKeyStore(core.repo.database)
                self.repo = core.repo
                async with asyncio.TaskGroup() as group:
                    serving = group.create_task(server.serve())
                    async with asyncio.timeout(START_TIMEOUT_S):
                        while not server.started and not serving.done():
                            await asyncio.sleep(0.02)
                    if serving.done():
                        return
                    port = server.servers[0].sockets[0].getsockname()[1]
                    self._ready.set_result(f"http://127.0.0.1:{port}")
                    group.create_task(self._worker_on_demand(core, vectors))
                    await self._stop.wait()
                    server.should_exit = True
            finally:
                await vectors.close()

    async def _worker_on_demand(self, core: Any, vectors: Any) -> None:
        await self._worker_wanted.wait()
        if self._stop.is_set():
            return
        worker = Worker(core, vectors)
        runner = asyncio.create_task(worker.run())
        await self._stop.wait()
        worker.stop()
        await runner

    def _threadsafe(self, event: asyncio.Event) -> None:
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended on its own meanwhile
                self._loop.call_soon_threadsafe(event.set)

    def start_worker(self) -> None:
        """Run an in-process worker on the server's core and vector store (idempotent)."""
        self._threadsafe(self._worker_wanted)

    def issue_key(self, tenant: str, *, admin: bool = False) -> IssuedKey:
        assert self._apikeys is not None
        return self._apikeys.create(tenant, admin=admin)

    def revoke_key(self, key_id: str) -> None:
        assert self._apikeys is not None
        self._apikeys.revoke(key_id)

    def stop(self) -> None:
        self._threadsafe(self._stop)
        self._threadsafe(self._worker_wanted)
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S)
            if self._thread.is_alive():
                raise AssertionError(f"the live API did not stop within {STOP_TIMEOUT_S}s")
