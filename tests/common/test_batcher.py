"""Embedding batches filled across concurrent tasks (`common.embedding.batcher`)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from common.embedding.batcher import EmbedBatcher
from common.embedding.batches import batches_by_tokens
from common.embedding.factory import (
    GPU_BATCH_TOKENS,
    GPU_PARALLEL_BATCHES,
    GPU_WINDOW_BATCHES,
    model_sizing,
    resolve_device,
    weighted_vectors,
)
from common.runtime import EmbedderLoader
from common.settings import EmbeddingSettings
from tests.fakes import HashEmbedder


class RecordingEmbedder(HashEmbedder):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.calls: list[list[str]] = []
        self.fail = fail

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.fail:
            raise RuntimeError("model crashed")
        self.calls.append(list(texts))
        return super().encode(texts, batch_size)

    def contents_per_call(self) -> list[int]:
        return [sum(1 for t in texts if t.startswith("chunk ")) for texts in self.calls]

    def titles_embedded(self) -> list[str]:
        return [t for texts in self.calls for t in texts if t.startswith("Title ")]


def _batcher(embedder: HashEmbedder, batch_size: int = 32) -> EmbedBatcher:
    return EmbedBatcher(EmbedderLoader(EmbeddingSettings(), embedder), batch_size=batch_size,
                        title_weight=0.1, concurrency=asyncio.Semaphore(1))


def _chunks(tag: str, n: int) -> tuple[list[str], list[str]]:
    return [f"Title {tag}"] * n, [f"chunk {i} of document {tag} about topic {i % 5}" for i in range(n)]


async def test_two_tasks_share_full_batches_and_get_their_own_rows() -> None:
    embedder = RecordingEmbedder()
    batcher = _batcher(embedder)
    (ta, ca), (tb, cb) = _chunks("a", 24), _chunks("b", 24)
    va, vb = await asyncio.gather(batcher.embed(ta, ca), batcher.embed(tb, cb))
    # Window 1: 24 chunks of a + 8 of b + the 2 new titles, sorted by length -> batches of 32 and 2;
    # window 2: the 16 chunks left of b. Not two half-empty batches of 24 and 24.
    assert [len(c) for c in embedder.calls] == [32, 2, 16]
    assert sum(embedder.contents_per_call()) == 48
    assert sorted(embedder.titles_embedded()) == ["Title a", "Title b"], "each title once, with the contents"
    reference = HashEmbedder()
    np.testing.assert_allclose(va, weighted_vectors(reference, ta, ca, 0.1, 32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vb, weighted_vectors(reference, tb, cb, 0.1, 32), rtol=1e-5, atol=1e-6)


async def test_titles_are_embedded_once_per_process() -> None:
    embedder = RecordingEmbedder()
    batcher = _batcher(embedder, batch_size=4)
    titles, contents = _chunks("a", 12)
    await batcher.embed(titles, contents)
    assert sum(embedder.contents_per_call()) == 12
    assert embedder.titles_embedded() == ["Title a"], "the one distinct title is embedded once across three batches"


async def test_a_model_failure_reaches_every_task_in_the_batch() -> None:
    batcher = _batcher(RecordingEmbedder(fail=True))
    results = await asyncio.gather(batcher.embed(*_chunks("a", 3)), batcher.embed(*_chunks("b", 3)),
                                   return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    embedder = RecordingEmbedder()
    batcher = _batcher(embedder, batch_size=2)
    gate = asyncio.Semaphore(0)
    batcher._concurrency = gate  # noqa: SLF001 - hold the model so the request waits
    waiter = asyncio.create_task(batcher.embed(*_chunks("a", 2)))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.release()
    await batcher.embed(*_chunks("b", 2))
    assert sum(embedder.contents_per_call()) == 2, "the cancelled request's chunks were never embedded"


async def test_a_window_spans_several_model_batches_across_tasks() -> None:
    embedder = RecordingEmbedder()
    batcher = EmbedBatcher(EmbedderLoader(EmbeddingSettings(), embedder), batch_size=8, window=32,
                           title_weight=0.1, concurrency=asyncio.Semaphore(1))
    (ta, ca), (tb, cb) = _chunks("a", 20), _chunks("b", 20)
    va, vb = await asyncio.gather(batcher.embed(ta, ca), batcher.embed(tb, cb))
    # Window 1: 32 chunks + 2 titles in batches of 8 (the last one short); window 2: the 8 left.
    assert [len(c) for c in embedder.calls] == [8, 8, 8, 8, 2, 8]
    window = embedder.calls[:5]
    pairs = zip(window, window[1:], strict=False)
    assert all(max(map(len, a)) <= min(map(len, b)) for a, b in pairs), "sorted by length"
    reference = HashEmbedder()
    np.testing.assert_allclose(vb, weighted_vectors(reference, tb, cb, 0.1, 8), rtol=1e-5, atol=1e-6)
    assert va.shape == (20, reference.dim)


async def test_batches_of_a_cancelled_task_are_skipped_mid_window() -> None:
    started, release = threading.Event(), threading.Event()

    class HoldFirstBatch(RecordingEmbedder):
        def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            if not self.calls:
                started.set()
                release.wait(timeout=10)
            return super().encode(texts, batch_size)

    embedder = HoldFirstBatch()
    batcher = EmbedBatcher(EmbedderLoader(EmbeddingSettings(), embedder), batch_size=2, window=8,
                           title_weight=0.0, concurrency=asyncio.Semaphore(1))
    short = batcher.embed(["", ""], ["chunk s1", "chunk s2"])  # sorts first: the held batch
    long_texts = [f"chunk {i} of a much longer document that sorts after the short ones" for i in range(6)]
    doomed = asyncio.create_task(batcher.embed([""] * 6, long_texts))
    kept = asyncio.create_task(short)
    assert await asyncio.to_thread(started.wait, 10), "the first batch never started"
    doomed.cancel()  # its rows are in the running window, in the three batches after the held one
    release.set()
    vectors = await asyncio.wait_for(kept, 10)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert vectors.shape == (2, HashEmbedder().dim)
    assert embedder.contents_per_call() == [2], "the cancelled task's three batches were never run"


async def test_model_batches_follow_the_embedders_plan() -> None:
    """The window goes to the model in the batches the embedder plans (a token budget here), one call each."""

    class BudgetEmbedder(RecordingEmbedder):
        def plan_batches(self, texts: list[str], batch_size: int, token_counts: Any = None) -> list[list[int]]:
            return batches_by_tokens([self.count_tokens(t) for t in texts], 64)

        def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            assert batch_size == len(texts), "one model call per planned batch"
            return super().encode(texts, batch_size)

    embedder = BudgetEmbedder()
    batcher = _batcher(embedder)
    titles = ["Title long"] * 4 + ["Title short"] * 12
    contents = [" ".join(f"word{j}" for j in range(30)) + f" chunk {i}" for i in range(4)] + [
        f"chunk {i}" for i in range(12)]
    vectors = await batcher.embed(titles, contents)
    lengths = [[embedder.count_tokens(t) for t in call] for call in embedder.calls]
    assert all(len(call) * max(call) <= 64 for call in lengths if len(call) > 1)
    assert [n for call in lengths for n in call] == sorted(n for call in lengths for n in call)
    assert sum(len(call) for call in embedder.calls) == 16 + 2, "every content and each title once"
    np.testing.assert_allclose(vectors, weighted_vectors(HashEmbedder(), titles, contents, 0.1, 32),
                               rtol=1e-5, atol=1e-6)


async def test_batches_of_a_window_run_in_parallel_and_a_failure_fails_the_window() -> None:
    class PairedEmbedder(RecordingEmbedder):
        """Each batch waits until another batch is in the model too (proves two run at once)."""

        def __init__(self) -> None:
            super().__init__()
            self.barrier = threading.Barrier(2, timeout=10)
            self.fail_on: str | None = None

        def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            self.barrier.wait()
            if self.fail_on is not None and any(self.fail_on in t for t in texts):
                raise RuntimeError("model crashed")
            return super().encode(texts, batch_size)

    embedder = PairedEmbedder()
    batcher = EmbedBatcher(EmbedderLoader(EmbeddingSettings(), embedder), batch_size=8, title_weight=0.0,
                           concurrency=asyncio.Semaphore(1), window=16, parallel=2)
    titles, contents = _chunks("a", 16)
    vectors = await batcher.embed(titles, contents)
    assert [len(c) for c in embedder.calls] == [8, 8]
    np.testing.assert_allclose(vectors, HashEmbedder().encode(contents, 8), rtol=1e-5, atol=1e-6)

    embedder.fail_on = "chunk 15 "
    with pytest.raises(RuntimeError, match="model crashed"):
        await batcher.embed(*_chunks("b", 16))


def test_model_sizing_shares_the_cores_out() -> None:
    def cpu(settings: EmbeddingSettings, cpus: int) -> tuple[int, int]:
        sizing = model_sizing(settings, cpus=cpus, device="cpu")
        assert sizing.batch_tokens == settings.batch_tokens
        assert sizing.window == settings.batch_size * settings.window_batches
        return sizing.parallel, sizing.threads

    assert cpu(EmbeddingSettings(), cpus=2) == (2, 1)
    assert cpu(EmbeddingSettings(), cpus=16) == (4, 4)
    assert cpu(EmbeddingSettings(), cpus=1) == (1, 1)
    assert cpu(EmbeddingSettings(parallel_batches=1), cpus=8) == (1, 8)
    assert cpu(EmbeddingSettings(torch_threads=3), cpus=8) == (4, 3)
    assert cpu(EmbeddingSettings(backend="onnx", onnx_threads=2, torch_threads=5), cpus=8) == (4, 2)


def test_model_sizing_on_cuda_defaults_to_big_batches_unless_set() -> None:
    sizing = model_sizing(EmbeddingSettings(device="cuda"), cpus=2)
    assert (sizing.device, sizing.parallel, sizing.threads) == ("cuda", GPU_PARALLEL_BATCHES, 1)
    assert (sizing.batch_tokens, sizing.window) == (GPU_BATCH_TOKENS, 32 * GPU_WINDOW_BATCHES)
    explicit = model_sizing(EmbeddingSettings(device="cuda:1", batch_tokens=4096, window_batches=4,
                                              parallel_batches=3), cpus=2)
    assert (explicit.device, explicit.parallel, explicit.batch_tokens, explicit.window) == ("cuda:1", 3, 4096, 128)
    # Only the torch backend runs on CUDA; `auto` resolves to what torch sees.
    assert model_sizing(EmbeddingSettings(backend="onnx", device="cuda"), cpus=2).device == "cpu"
    import torch

    assert resolve_device(EmbeddingSettings(device="auto")) == ("cuda" if torch.cuda.is_available() else "cpu")


async def test_windows_run_at_once_up_to_the_concurrency_and_requests_arriving_meanwhile_are_served() -> None:
    """Two permits: a request queued while the first window is in the model starts a second window."""
    first_in_model, release = threading.Event(), threading.Event()

    class HoldFirst(RecordingEmbedder):
        def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            if not first_in_model.is_set():
                first_in_model.set()
                assert release.wait(timeout=10)
            return super().encode(texts, batch_size)

    embedder = HoldFirst()
    batcher = EmbedBatcher(EmbedderLoader(EmbeddingSettings(), embedder), batch_size=8, title_weight=0.0,
                           concurrency=asyncio.Semaphore(2), window=8)
    first = asyncio.create_task(batcher.embed([""], ["chunk first query"]))
    assert await asyncio.to_thread(first_in_model.wait, 10)
    second = await asyncio.wait_for(batcher.embed([""], ["chunk second query"]), 10)  # not behind the first
    assert not first.done()
    release.set()
    await asyncio.wait_for(first, 10)
    third = await asyncio.wait_for(batcher.embed([""], ["chunk third query"]), 10)  # a new drainer round
    np.testing.assert_allclose(np.vstack([second, third]),
                               HashEmbedder().encode(["chunk second query", "chunk third query"], 2), atol=1e-6)


async def test_the_drainer_ends_when_only_abandoned_requests_were_left() -> None:
    in_model, release = threading.Event(), threading.Event()

    class Hold(RecordingEmbedder):
        def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
            in_model.set()
            assert release.wait(timeout=10)
            return super().encode(texts, batch_size)

    batcher = _batcher(Hold())
    held = asyncio.create_task(batcher.embed([""], ["chunk held"]))
    assert await asyncio.to_thread(in_model.wait, 10)
    queued = asyncio.create_task(batcher.embed([""], ["chunk queued then cancelled"]))
    await asyncio.sleep(0)
    queued.cancel()
    release.set()
    await asyncio.wait_for(held, 10)
    drainer = batcher._drainer
    assert drainer is not None
    await asyncio.wait_for(drainer, 5)  # no task left waiting for arrivals forever
