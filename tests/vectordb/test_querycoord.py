"""The query coordinator: priorities, de-duplication, per-worker concurrency, load state."""

from __future__ import annotations

import threading

import pytest

import vectordb
from vectordb.errors import CollectionNotLoaded
from vectordb.querycoord import LoadState, Priority, QueryCoordinator
from vectordb.schema import IndexParams

from .conftest import clustered, make_rows, make_schema


@pytest.fixture
def coord():
    c = QueryCoordinator(workers=1, per_worker_concurrency=1)
    yield c
    c.close()


def _blocker(coord: QueryCoordinator) -> threading.Event:
    """Occupy the only slot until the returned event is set."""
    release, started = threading.Event(), threading.Event()

    def block(_w):
        started.set()
        release.wait(5)

    coord.submit("blocker", block, Priority.HIGH)
    assert started.wait(5)
    return release


def test_free_slots_go_to_the_most_urgent_task(coord):
    release = _blocker(coord)
    order: list[str] = []
    futures = [
        coord.submit("balance", lambda w: order.append("low"), Priority.LOW),
        coord.submit("handoff", lambda w: order.append("normal"), Priority.NORMAL),
        coord.submit("user-load", lambda w: order.append("high"), Priority.HIGH),
    ]
    release.set()
    for f in futures:
        f.result(5)
    assert order == ["high", "normal", "low"]


def test_a_duplicate_joins_the_pending_task_and_can_raise_its_priority(coord):
    release = _blocker(coord)
    runs: list[str] = []
    low = coord.submit(("load", "c", 1), lambda w: runs.append("seg"), Priority.LOW)
    coord.submit("other", lambda w: runs.append("other"), Priority.NORMAL)
    again = coord.submit(("load", "c", 1), lambda w: runs.append("twice"), Priority.HIGH)
    assert again is low
    release.set()
    again.result(5)
    coord.submit("sync", lambda w: None).result(5)
    assert runs == ["seg", "other"]


def test_per_worker_concurrency_limit():
    coord = QueryCoordinator(workers=2, per_worker_concurrency=2)
    lock = threading.Lock()
    running = {0: 0, 1: 0}
    peak = {0: 0, 1: 0}

    def work(w):
        with lock:
            running[w.id] += 1
            peak[w.id] = max(peak[w.id], running[w.id])
        threading.Event().wait(0.02)
        with lock:
            running[w.id] -= 1

    try:
        futures = [coord.submit(i, work) for i in range(12)] + [
            coord.submit(("w0", i), work, worker_id=0) for i in range(6)
        ]
        for f in futures:
            f.result(5)
    finally:
        coord.close()
    assert max(peak.values()) <= 2 and peak[0] == 2


def test_errors_reach_the_waiter(coord):
    def boom(_w):
        raise RuntimeError("load failed")

    with pytest.raises(RuntimeError, match="load failed"):
        coord.submit("x", boom).result(5)
    coord.submit("x", lambda w: None).result(5)  # the failed key is free again


def test_engine_loads_hands_off_and_releases(tmp_path):
    with vectordb.open_engine(tmp_path / "db", fsync=False, seal_rows=10**6) as eng:
        eng.create_collection("c", make_schema(8), IndexParams("FLAT", "L2"))
        assert eng.get_load_state("c") == "LoadStateLoaded"
        assert eng.get_load_state("missing") == "LoadStateNotExist"
        data = clustered(60, 8)
        for start in (0, 20, 40):
            eng.insert("c", make_rows(data[start : start + 20], start))
            eng.flush("c")
        sealed = {s.id for s in eng.ops.get("c").meta.segments}
        for _ in range(100):
            held = {sid for ids in eng.querycoord.distribution("c").values() for sid in ids}
            if held == sealed:
                break
            threading.Event().wait(0.02)
        assert held == sealed  # hand-off after each flush, spread over both workers
        eng.release_collection("c")
        assert eng.get_load_state("c") == LoadState.NOT_LOAD
        assert all(not ids for ids in eng.querycoord.distribution("c").values())
        with pytest.raises(CollectionNotLoaded):
            eng.search("c", data[:1], limit=3)
        with pytest.raises(CollectionNotLoaded):
            eng.query("c", filter="id > 3")
        assert eng.count("c") == 60  # counts and gets still work (docvec's own chunkstore needs them)
        eng.insert("c", make_rows(data[:1], 100))
        eng.load_collection("c")
        assert eng.get_load_state("c") == "LoadStateLoaded"
        assert len(eng.search("c", data[:1], limit=3)[0]) == 3


async def test_embedded_client_load_release(tmp_path):
    async with vectordb.connect(str(tmp_path / "db"), fsync=False) as client:
        await client.create_collection("c", make_schema(8), index=IndexParams("FLAT", "L2"))
        await client.release_collection("c")
        assert await client.get_load_state("c") == "LoadStateNotLoad"
        await client.load_collection("c")
        assert await client.get_load_state("c") == "LoadStateLoaded"
        await client.insert("c", make_rows(clustered(5, 8)))
        await client.flush("c")
        await client.compact("c")
        assert await client.count("c") == 5
