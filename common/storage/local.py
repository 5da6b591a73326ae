"""`LocalDirStore`: blobs as files under one directory (the default object store)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from common.dependencies import Dependency
from common.errors import DependencyUnavailable, InvalidRequest, NotFound

MAX_KEY_BYTES = 1024


def validate_key(key: str) -> tuple[str, ...]:
    """Split a slash-separated key into its parts, rejecting anything that could leave the root."""
    if not key or len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidRequest(f"object key must be 1-{MAX_KEY_BYTES} bytes")
    if "\\" in key or "\x00" in key:
        raise InvalidRequest(f"object key {key!r} contains a backslash or NUL")
    if key.startswith("/"):
        raise InvalidRequest(f"object key {key!r} must be relative")
    parts = tuple(key.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidRequest(f"object key {key!r} has an empty, '.' or '..' part")
        if part.startswith(".tmp-"):
            raise InvalidRequest(f"object key {key!r} uses the reserved '.tmp-' prefix")
    return parts


_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


@contextlib.contextmanager
def _unavailable_on_os_error(action: str, key: str, *, passing: tuple[type[OSError], ...] = ()) -> Iterator[None]:
    """A failing disk (full, I/O error, permissions) is the object store being unavailable."""
    try:
        yield
    except passing:
        raise
    except OSError as exc:
        raise DependencyUnavailable(
            Dependency.OBJECT_STORE, f"local object store: cannot {action} {key!r}: {exc}"
        ) from exc


class LocalDirStore:
    """`ObjectStore` on a local directory; writes are atomic (temp file, fsync, rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key))

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        with _unavailable_on_os_error("store", key):
            await asyncio.to_thread(self._put_sync, path, data)

    def _put_sync(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        self._fsync_dir(path.parent)

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        """Make the rename durable too."""
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with _unavailable_on_os_error("read", key, passing=_MISSING):
                return await asyncio.to_thread(path.read_bytes)
        except _MISSING as exc:
            raise NotFound(f"object {key!r} not found") from exc

    async def delete(self, key: str) -> None:
        path = self._path(key)
        with _unavailable_on_os_error("delete", key):
            await asyncio.to_thread(self._delete_sync, path)

    def _delete_sync(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()
        # Prune now-empty parent directories, never the root itself.
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty (or already gone): stop pruning
                break
            parent = parent.parent

    async def exists(self, key: str) -> bool:
        path = self._path(key)
        with _unavailable_on_os_error("check", key):
            return await asyncio.to_thread(path.is_file)

    async def close(self) -> None:
        """Nothing to release."""
