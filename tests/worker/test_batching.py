"""Embedding batches filled across concurrent tasks."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from common.embedding.factory import weighted_vectors
from common.runtime import EmbedderLoader
from common.settings import EmbeddingSettings
from tests.fakes import HashEmbedder
from worker.batching import EmbedBatcher


class RecordingEmbedder(HashEmbedder):
    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.fail = fail

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        if self.fail:
            raise RuntimeError("model crashed")
        self.calls.append(len(texts))
        return super().encode(texts, batch_size)


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
    content_calls = [n for n in embedder.calls if n > 2]  # title calls embed 1-2 distinct titles
    assert content_calls == [32, 16], "48 chunks in two batches, not two batches of 24"
    reference = HashEmbedder()
    np.testing.assert_allclose(va, weighted_vectors(reference, ta, ca, 0.1, 32), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vb, weighted_vectors(reference, tb, cb, 0.1, 32), rtol=1e-5, atol=1e-6)


async def test_titles_are_embedded_once_per_process() -> None:
    embedder = RecordingEmbedder()
    batcher = _batcher(embedder, batch_size=4)
    titles, contents = _chunks("a", 12)
    await batcher.embed(titles, contents)
    assert embedder.calls.count(1) == 1, "the one distinct title is embedded once across three batches"


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
    assert sum(n for n in embedder.calls if n > 1) == 2, "the cancelled request's chunks were never embedded"
