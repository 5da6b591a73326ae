"""A real uvicorn server over `create_app(engine)` on a pre-bound 127.0.0.1 socket, in a background thread."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from vectordb.engine import Engine
from vectordb.server import create_app


class LiveServer:
    """Start with `start()`, stop with `stop()` (the engine stays open: its owner closes it)."""

    def __init__(self, engine: Engine, **app_options: Any) -> None:
        self.app = create_app(engine, **app_options)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, lifespan="off", ws="none", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="live-vectordb-server", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test vector store server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)
        self._sock.close()
        if self._thread.is_alive():
            raise RuntimeError("the test vector store server did not stop")
