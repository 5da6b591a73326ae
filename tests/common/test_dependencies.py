"""Which dependency an error says is down, the outage board, and the boundaries that report outages."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from redis import exceptions as redis_errors

from common.db import Repository, open_database
from common.dependencies import Dependency, DependencyBoard, dependency_of, run_probe
from common.errors import DependencyUnavailable, TransientError
from common.storage.local import LocalDirStore
from vectordb.chunkstore import ChunkStore


@pytest.mark.parametrize(("error", "expected"), [
    (DependencyUnavailable(Dependency.VECTOR_STORE, "down"), Dependency.VECTOR_STORE),
    (redis_errors.ConnectionError("refused"), Dependency.REDIS),
    (redis_errors.TimeoutError("slow"), Dependency.REDIS),
    (redis_errors.BusyLoadingError("loading"), Dependency.REDIS),
    (redis_errors.ResponseError("WRONGTYPE"), None),
    (TransientError("a stage timed out"), None),
    (RuntimeError("a bug"), None),
    (DependencyUnavailable("gremlins", "unknown name"), None),
])
def test_dependency_of(error: BaseException, expected: Dependency | None) -> None:
    assert dependency_of(error) == expected


def test_an_outage_error_names_its_dependency_in_its_code() -> None:
    error = DependencyUnavailable(Dependency.OBJECT_STORE, "S3 unreachable")
    assert (error.code, error.dependency) == ("object_store_unavailable", "object_store")
    assert isinstance(error, TransientError)


async def test_the_board_keeps_when_an_outage_began_and_a_probe_ends_it() -> None:
    healthy = asyncio.Event()

    async def probe() -> None:
        if not healthy.is_set():
            raise ConnectionRefusedError("still down")

    board = DependencyBoard({Dependency.DATABASE: probe}, probe_interval_s=0.01)
    board.down(Dependency.DATABASE, "connection refused")
    first = board.outage(Dependency.DATABASE)
    assert first is not None
    board.down(Dependency.DATABASE, RuntimeError("again"))
    assert board.outage(Dependency.DATABASE) is first and first.error == "RuntimeError: again"
    await board.probe_once()
    assert board.is_down(Dependency.DATABASE) and "still down" in first.error and first.probes == 1
    assert not await board.wait_up(Dependency.DATABASE, timeout_s=0.05)
    snapshot = board.snapshot()
    assert snapshot["database"]["since"] == first.since and snapshot["database"]["probes"] == 1
    healthy.set()
    stopped = asyncio.Event()
    loop = asyncio.create_task(board.probe_loop(stopped))
    assert await board.wait_up(Dependency.DATABASE, timeout_s=5)
    assert not board.any_down and board.snapshot() == {}
    stopped.set()
    await asyncio.wait_for(loop, 5)


async def test_a_probe_that_hangs_counts_as_down() -> None:
    async def hangs() -> None:
        await asyncio.sleep(60)

    assert await run_probe(hangs, timeout_s=0.05) == "no answer within 0.05s"


def test_a_database_that_does_not_answer_is_unavailable() -> None:
    with pytest.raises(DependencyUnavailable) as caught:
        Repository(open_database("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2"))
    assert caught.value.dependency == "database"


async def test_a_failing_disk_under_the_local_store_is_the_object_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_text("a file where the store's directory should be")
    store = LocalDirStore(tmp_path / "not-a-dir")
    with pytest.raises(DependencyUnavailable) as caught:
        await store.put("kb/x/blob", b"data")
    assert caught.value.dependency == "object_store"


class _DownClient:
    async def list_collections(self) -> Any:
        raise TransientError("vector store server http://127.0.0.1:1 unreachable: ConnectError")


async def test_a_vector_store_client_failing_transiently_is_the_vector_store_unavailable() -> None:
    with pytest.raises(DependencyUnavailable) as caught:
        await ChunkStore(_DownClient()).ping()
    assert caught.value.dependency == "vector_store" and "unreachable" in caught.value.message
