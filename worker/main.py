"""`docvec worker`: the worker process's composition root."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

import vectordb
from common.embedding.base import Embedder
from common.errors import TransientError
from common.runtime import Core, open_core
from common.settings import Settings
from worker.consumer import Worker

log = logging.getLogger(__name__)

STARTUP_MAX_BACKOFF_S = 10.0


async def _enter_core(stack: contextlib.AsyncExitStack, settings: Settings, stop: asyncio.Event,
                      embedder: Embedder | None) -> Core | None:
    """Open the core, waiting out an unavailable Redis or database (retry with backoff) until it
    comes up, or until the process is told to stop (then None)."""
    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type((TransientError, ConnectionError, OSError)),
        wait=wait_exponential(multiplier=0.5, max=STARTUP_MAX_BACKOFF_S),
        before_sleep=lambda state: log.warning("dependencies not ready (%r); retrying",
                                               state.outcome.exception() if state.outcome else None),
        reraise=True,
    ):
        with attempt:
            if stop.is_set():
                return None
            return await stack.enter_async_context(open_core(settings, embedder=embedder))
    return None


async def run_worker(settings: Settings, *, consumer: str | None = None, concurrency: int | None = None,
                     embedder: Embedder | None = None) -> None:
    """Run one worker until SIGTERM/SIGINT, then shut down gracefully (SPEC section 5)."""
    stop = asyncio.Event()
    worker: Worker | None = None

    def on_signal() -> None:
        stop.set()
        if worker is not None:
            worker.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        async with contextlib.AsyncExitStack() as stack:
            core = await _enter_core(stack, settings, stop, embedder)
            if core is None:
                return
            vectors = vectordb.connect(settings.vectordb_uri, token=settings.vectordb.token)
            try:
                worker = Worker(core, vectors, consumer=consumer, concurrency=concurrency)
                if stop.is_set():
                    worker.stop()
                await worker.run()
            finally:
                await vectors.close()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):
                loop.remove_signal_handler(sig)
