"""A local OpenAI-compatible `/v1/embeddings` endpoint for tests that run `docvec` as a process: the real
`openai` embedding backend talks to it over HTTP, and its vectors are `tests.fakes.HashEmbedder`'s (so a
test can search what the process indexed with the same embedder). `hold()` keeps every request waiting
until `release()`: a test can stop a run while its tasks are mid-embed."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes import HashEmbedder

DIM = 64
MODEL = "hash-over-http"
HOLD_POLL_S = 0.02


@dataclass
class EmbedServer:
    """The endpoint's state: its URL, how many requests it answered, and the gate that holds them."""

    url: str = ""
    answered: int = 0
    waiting: int = 0
    gate: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def env(self) -> dict[str, str]:
        """The settings that point a `docvec` process's embedder here."""
        return {"DOCVEC_EMBEDDING__BACKEND": "openai", "DOCVEC_EMBEDDING__API_BASE": self.url,
                "DOCVEC_EMBEDDING__MODEL": MODEL, "DOCVEC_EMBEDDING__DIM": str(DIM)}


def _app(state: EmbedServer) -> Starlette:
    embedder = HashEmbedder(dim=DIM)

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        state.waiting += 1
        try:
            while not state.gate.is_set():
                await asyncio.sleep(HOLD_POLL_S)
        finally:
            state.waiting -= 1
        texts: list[str] = body["input"]
        vectors = embedder.encode(texts, len(texts))
        state.answered += 1
        return JSONResponse({"object": "list", "model": body["model"],
                             "data": [{"object": "embedding", "index": i, "embedding": v.tolist()}
                                      for i, v in enumerate(vectors)]})

    return Starlette(routes=[Route("/v1/embeddings", embeddings, methods=["POST"])])


@contextmanager
def running_embed_server(start_timeout_s: float = 10.0) -> Iterator[EmbedServer]:
    """The endpoint on a free loopback port, in a thread of this process."""
    state = EmbedServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(_app(state), log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if time.monotonic() > deadline:
            raise AssertionError("the embedding endpoint did not start")
        time.sleep(0.02)
    state.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    try:
        yield state
    finally:
        state.release()
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
