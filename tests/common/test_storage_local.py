"""LocalDirStore: round trips, atomic writes, key validation."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.errors import InvalidRequest, NotFound
from common.settings import Settings, StorageSettings
from common.storage.base import ObjectStore
from common.storage.factory import build_object_store
from common.storage.local import LocalDirStore


@pytest.fixture
def store(tmp_path: Path) -> LocalDirStore:
    return LocalDirStore(tmp_path / "blobs")


async def test_round_trip(store: LocalDirStore) -> None:
    assert isinstance(store, ObjectStore)
    assert not await store.exists("kb/1/doc")
    await store.put("kb/1/doc", b"hello")
    assert await store.exists("kb/1/doc")
    assert await store.get("kb/1/doc") == b"hello"
    await store.put("kb/1/doc", b"")  # overwrite, empty blob
    assert await store.get("kb/1/doc") == b""
    await store.delete("kb/1/doc")
    assert not await store.exists("kb/1/doc")
    await store.delete("kb/1/doc")  # idempotent
    await store.close()


async def test_missing_is_not_found(store: LocalDirStore) -> None:
    with pytest.raises(NotFound):
        await store.get("nope")
    await store.put("dir/file", b"x")
    with pytest.raises(NotFound):
        await store.get("dir")  # a "directory" is not an object
    with pytest.raises(NotFound):
        await store.get("dir/file/below")
    assert not await store.exists("dir")


async def test_writes_leave_no_temp_files_and_delete_prunes(store: LocalDirStore) -> None:
    await store.put("a/b/c", b"1" * 10_000)
    await store.put("a/b/c", b"2")
    assert [p.name for p in (store.root / "a" / "b").iterdir()] == ["c"]
    await store.put("a/keep", b"k")
    await store.delete("a/b/c")
    assert not (store.root / "a" / "b").exists()
    assert (store.root / "a" / "keep").exists()
    await store.delete("a/keep")
    assert store.root.exists() and not (store.root / "a").exists()


async def test_concurrent_writers_never_tear(store: LocalDirStore) -> None:
    blobs = [bytes([i]) * 50_000 for i in range(8)]
    await asyncio.gather(*(store.put("same", b) for b in blobs))
    assert await store.get("same") in blobs


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a\\b", "a/.tmp-x", "x" * 1025, "a\x00b"]
)
async def test_bad_keys_rejected(store: LocalDirStore, key: str) -> None:
    for call in (store.put(key, b"x"), store.get(key), store.delete(key), store.exists(key)):
        with pytest.raises(InvalidRequest):
            await call


def test_factory_builds_local_store(tmp_path: Path) -> None:
    store = build_object_store(Settings(data_dir=str(tmp_path)))
    assert isinstance(store, LocalDirStore) and store.root == tmp_path / "blobs"
    other = build_object_store(
        Settings(data_dir=str(tmp_path), storage=StorageSettings(local_dir=str(tmp_path / "x")))
    )
    assert isinstance(other, LocalDirStore) and other.root == tmp_path / "x"
