"""The embedded client, and `connect()`, which picks a `VectorStore` implementation by URI."""

from __future__ import annotations

import asyncio
from typing import Any

from vectordb.base import VectorStore
from vectordb.engine import Engine
from vectordb.errors import InvalidRequest, UnsupportedUri
from vectordb.facade import AsyncEngine
from vectordb.http_client import HttpClient
from vectordb.streaming.consistency import Session


class EmbeddedClient(AsyncEngine):
    """The `VectorStore` interface over an in-process `Engine` it owns (closing the client closes the
    engine). Reads see this client's own writes under Session consistency."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine, session=Session())

    async def close(self) -> None:
        """Drain queued work and release the data directory (off the event loop)."""
        await asyncio.to_thread(self.engine.close)

    async def __aenter__(self) -> EmbeddedClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def open_engine(path: str, **options: Any) -> Engine:
    """Open a synchronous engine on a data directory (see `Engine.open` for options)."""
    return Engine.open(path, **options)


def connect(uri: str, *, token: str = "", **options: Any) -> VectorStore:
    """Connect to a vector store; every transport implements `vectordb.base.VectorStore`.

    - a directory path (or `file://` path): the embedded in-process store; `options` go to `Engine.open`;
    - `http://` / `https://`: a `docvec vectordb` server (Milvus RESTful v2 subset); `token` is sent as
      `Authorization: Bearer <token>`; `options` go to `HttpClient` (`timeout_s`, `retry_attempts`, ...);
    - `milvus://host:port` (a Milvus server) or `milvus:///path/x.db` (Milvus Lite): pymilvus, for users
      who outgrow one machine; `options` go to `MilvusBackendClient`;
    - other remote schemes (tcp, grpc, unix) raise UnsupportedUri.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidRequest("a vector store URI (a directory path or http:// URL) is required")
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    if scheme in ("http", "https"):
        return HttpClient(uri, token=token, **options)
    if scheme == "milvus":
        from vectordb.milvus_client import MilvusBackendClient as _Milvus  # pymilvus is optional

        return _Milvus(uri, token=token, **options)
    if scheme in ("tcp", "grpc", "unix"):
        raise UnsupportedUri(f"{scheme}:// vector store URIs are not supported yet; use a directory path or http://")
    if scheme == "file":
        uri = uri.split("://", 1)[1]
    elif scheme:
        raise InvalidRequest(f"unknown vector store URI scheme {scheme!r}")
    return EmbeddedClient(Engine.open(uri, **options))
