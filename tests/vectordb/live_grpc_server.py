"""The Milvus gRPC front end over an open `Engine`, on a free 127.0.0.1 port, in a thread with its own loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from vectordb.engine import Engine


class LiveGrpcServer:
    """Start with `start()`, stop with `stop()` (the engine stays open: its owner closes it)."""

    def __init__(self, engine: Engine, **options: Any) -> None:
        self._engine = engine
        self._options = options
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-vectordb-grpc", daemon=True)

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        from vectordb.grpc_server import create_grpc_server

        try:
            server, self.port = create_grpc_server(self._engine, host="127.0.0.1", port=0, **self._options)
            await server.start()
        except BaseException as e:
            self._error = e
            self._ready.set()
            raise
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(5)

    def start(self, timeout_s: float = 10.0) -> LiveGrpcServer:
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise RuntimeError(f"the test gRPC server did not start: {self._error!r}")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError("the test gRPC server did not stop")
