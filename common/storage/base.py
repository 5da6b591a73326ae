"""The `ObjectStore` protocol every blob backend implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class ObjectStore(Protocol):
    """Async blob store addressed by slash-separated keys (`kb/<kb_id>/<doc_id>`).

    Raises `common.errors.NotFound` for a missing key and `DependencyUnavailable` (object_store) when the
    backend is unreachable; keys with `..`, absolute paths or empty parts are rejected with `InvalidRequest`.
    """

    async def put(self, key: str, data: bytes) -> None: ...

    async def get(self, key: str) -> bytes: ...

    async def delete(self, key: str) -> None:
        """Delete a key; deleting a missing key is not an error."""
        ...

    async def exists(self, key: str) -> bool: ...

    async def close(self) -> None: ...
