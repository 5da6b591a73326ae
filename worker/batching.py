"""Embedding batches filled across the concurrent tasks of one worker process.

A document rarely ends on a batch boundary, so embedding each task alone leaves half-empty batches
(and the model pays for the padding of each). Here every task queues its chunks; whichever task
holds the embed semaphore runs the next batch, taken in arrival order from all queued requests, and
hands each task its rows. Distinct titles are embedded once per process (a bounded cache).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

from common.embedding.factory import weighted_vectors
from common.errors import TransientError
from common.runtime import EmbedderLoader

TITLE_CACHE_ENTRIES = 4096


class _TitleCache(OrderedDict[str, np.ndarray]):
    """A small LRU of title vectors (titles repeat across batches and documents)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._capacity = capacity

    def __getitem__(self, key: str) -> np.ndarray:
        value = super().__getitem__(key)
        self.move_to_end(key)
        return value

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self._capacity:
            self.popitem(last=False)


@dataclass(eq=False)
class _Request:
    titles: list[str]
    contents: list[str]
    taken: int = 0
    parts: dict[int, np.ndarray] = field(default_factory=dict)
    filled: int = 0
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.error is not None or self.filled == len(self.contents)

    def result(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        return np.vstack([self.parts[start] for start in sorted(self.parts)])


class EmbedBatcher:
    """Shared by every task of one worker; `embed` returns the title-weighted vectors of its chunks."""

    def __init__(self, embedders: EmbedderLoader, *, batch_size: int, title_weight: float,
                 concurrency: asyncio.Semaphore) -> None:
        self._embedders = embedders
        self._batch_size = batch_size
        self._title_weight = title_weight
        self._concurrency = concurrency
        self._queue: deque[_Request] = deque()
        self._titles = _TitleCache(TITLE_CACHE_ENTRIES)

    async def embed(self, titles: list[str], contents: list[str]) -> np.ndarray:
        request = _Request(titles=list(titles), contents=list(contents))
        if not contents:
            raise ValueError("nothing to embed")
        self._queue.append(request)
        try:
            await asyncio.sleep(0)  # let tasks that are ready at the same moment queue their chunks too
            while not request.done:
                async with self._concurrency:
                    if not request.done:
                        await self._run_one_batch()
            return request.result()
        finally:
            if request in self._queue:  # cancelled while waiting: nobody should embed for it
                self._queue.remove(request)

    def _take(self) -> list[tuple[_Request, int, int]]:
        """Up to batch_size items from the oldest requests (a request may span batches)."""
        taken: list[tuple[_Request, int, int]] = []
        room = self._batch_size
        while room and self._queue:
            request = self._queue[0]
            start = request.taken
            end = min(len(request.contents), start + room)
            request.taken = end
            taken.append((request, start, end))
            room -= end - start
            if end == len(request.contents):
                self._queue.popleft()
        return taken

    async def _run_one_batch(self) -> None:
        taken = self._take()
        if not taken:
            return
        titles = [t for r, s, e in taken for t in r.titles[s:e]]
        contents = [c for r, s, e in taken for c in r.contents[s:e]]
        try:
            embedder = await self._embedders.get()
            vectors = await asyncio.to_thread(
                weighted_vectors, embedder, titles, contents, self._title_weight, self._batch_size, self._titles
            )
        except asyncio.CancelledError:
            self._fail(taken, TransientError("an embedding batch shared with this task was interrupted"))
            raise
        except Exception as exc:  # every task in the batch sees the model's failure
            self._fail(taken, exc)
            return
        offset = 0
        for request, start, end in taken:
            request.parts[start] = vectors[offset:offset + end - start]
            request.filled += end - start
            offset += end - start

    def _fail(self, taken: list[tuple[_Request, int, int]], error: BaseException) -> None:
        for request, _, _ in taken:
            request.error = error
            if request in self._queue:
                self._queue.remove(request)
