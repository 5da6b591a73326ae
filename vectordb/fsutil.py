"""Small durable-file helpers: atomic replace and the exclusive data-directory lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from vectordb.errors import DataDirLocked


def fsync_path(path: Path) -> None:
    """fsync a file (its data) or a directory (a rename or file creation inside it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write temp file, fsync it, rename over `path`, fsync the directory: readers see old or new, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


class DirLock:
    """An exclusive `flock` on `<dir>/LOCK`. The kernel drops it when the process dies.

    flock locks belong to the open file description, so a second `DirLock` on the same directory
    fails even inside the same process.
    """

    def __init__(self, directory: Path) -> None:
        self._path = directory / "LOCK"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirLocked(
                f"vector data directory {self._path.parent} is in use by another engine (pid {holder}); "
                "only one process may own it — connect through its server instead"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
