"""Embedding windows filled across the concurrent tasks of one worker process.

A document rarely ends on a batch boundary, and chunk lengths vary: embedding each task's chunks
alone, in document order, leaves half-empty batches padded to their longest chunk. Here every task
queues its chunks; one drainer (a background task of the batcher) takes up to `window` items at a
time from the oldest requests, adds the titles not embedded yet, and runs the lot through the model
in the batches the embedder plans (`Embedder.plan_batches`: a local model sorts by token length and
cuts by a token budget), so each batch holds similar lengths and pads little (measured on MiniLM:
batches of 32 cut in arrival order cost ~45% more than the same chunks sorted). Up to `parallel`
batches of a window run at once (each on its share of the cores: see
`common.embedding.factory.model_sizing`).
Each task gets its own rows back, title-weighted. Distinct titles are embedded once per process (a
bounded cache).

A task that stops waiting (cancelled) abandons its request: its rows still queued are dropped, and
model batches holding only abandoned rows are skipped, so a cancelled task stops costing model time
within one batch. A model failure fails every request of its window; the drainer runs in its own
task, so a requester being cancelled never interrupts the batches of the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from common.embedding.base import Embedder
from common.embedding.weighting import blend_titles, missing_titles
from common.errors import TransientError
from common.runtime import EmbedderLoader

log = logging.getLogger(__name__)

TITLE_CACHE_ENTRIES = 4096
SMALL_WINDOW = 8  # a window of at most this many texts is planned and encoded in one thread hop


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
    token_counts: list[int | None]  # each content's count_tokens where the caller knows it
    future: asyncio.Future[np.ndarray]
    taken: int = 0
    parts: dict[int, np.ndarray] = field(default_factory=dict)
    filled: int = 0

    @property
    def abandoned(self) -> bool:
        """The requester stopped waiting (cancelled), or the request already failed."""
        return self.future.done()

    def deliver(self, start: int, vectors: np.ndarray) -> None:
        if self.abandoned:
            return
        self.parts[start] = vectors
        self.filled += len(vectors)
        if self.filled == len(self.contents):
            self.future.set_result(np.vstack([self.parts[s] for s in sorted(self.parts)]))

    def fail(self, error: BaseException) -> None:
        if not self.abandoned:
            self.future.set_exception(error)


@dataclass(frozen=True, slots=True)
class _Slice:
    request: _Request
    start: int
    end: int


class EmbedBatcher:
    """Shared by every task of one worker; `embed` returns the title-weighted vectors of its chunks."""

    def __init__(self, embedders: EmbedderLoader, *, batch_size: int, title_weight: float,
                 concurrency: asyncio.Semaphore, window: int | None = None, parallel: int = 1) -> None:
        self._embedders = embedders
        self._batch_size = batch_size
        self._parallel = max(parallel, 1)
        self._window = max(window or batch_size, batch_size)
        self._title_weight = title_weight
        self._concurrency = concurrency
        self._queue: deque[_Request] = deque()
        self._titles = _TitleCache(TITLE_CACHE_ENTRIES)
        self._drainer: asyncio.Task[None] | None = None
        self._arrived = asyncio.Event()  # a request was queued (wakes a drainer waiting for a permit or work)

    @property
    def window(self) -> int:
        """Items the drainer takes at a time: what a caller should hand over in one request."""
        return self._window

    async def embed(self, titles: list[str], contents: list[str],
                    token_counts: Sequence[int] | None = None) -> np.ndarray:
        """The title-weighted vectors of `contents`; `token_counts`: each content's `count_tokens` where
        known (chunks carry theirs), so planning the model batches does not tokenize them again."""
        if not contents:
            raise ValueError("nothing to embed")
        if len(titles) != len(contents):
            raise ValueError(f"got {len(titles)} titles for {len(contents)} contents")
        if token_counts is not None and len(token_counts) != len(contents):
            raise ValueError(f"got {len(token_counts)} token counts for {len(contents)} contents")
        counts: list[int | None] = list(token_counts) if token_counts is not None else [None] * len(contents)
        request = _Request(list(titles), list(contents), counts, asyncio.get_running_loop().create_future())
        self._queue.append(request)
        self._arrived.set()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="embed-batcher")
        try:
            return await request.future
        finally:
            if request in self._queue:  # cancelled while queued: nobody should embed for it
                self._queue.remove(request)

    async def _drain(self) -> None:
        """Start windows while `concurrency` has permits (one by default: windows run one after the
        other); a request arriving while every permit is held waits for the next window."""
        # Yield once first: tasks that are ready at the same moment queue their chunks together.
        await asyncio.sleep(0)
        running: set[asyncio.Task[None]] = set()
        try:
            while self._queue or running:
                while self._queue and not self._concurrency.locked():
                    await self._concurrency.acquire()  # free: returns at once
                    taken = self._take()
                    if not taken:
                        self._concurrency.release()
                        break
                    running.add(asyncio.create_task(self._run_window(taken)))
                if not running and not self._queue:  # only abandoned requests were left
                    return
                self._arrived.clear()
                arrival = asyncio.ensure_future(self._arrived.wait())
                try:
                    done, _ = await asyncio.wait({*running, arrival}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    arrival.cancel()
                running -= done
        finally:
            for window in running:  # shutting down: each window fails its requests as interrupted
                window.cancel()

    def _take(self) -> list[_Slice]:
        """Up to one window of items from the oldest live requests (a request may span windows)."""
        taken: list[_Slice] = []
        room = self._window
        while room and self._queue:
            request = self._queue[0]
            if request.abandoned:
                self._queue.popleft()
                continue
            start = request.taken
            end = min(len(request.contents), start + room)
            request.taken = end
            taken.append(_Slice(request, start, end))
            room -= end - start
            if end == len(request.contents):
                self._queue.popleft()
        return taken

    async def _run_window(self, taken: list[_Slice]) -> None:
        try:
            await self._embed_and_deliver(taken)
        finally:
            self._concurrency.release()

    async def _embed_and_deliver(self, taken: list[_Slice]) -> None:
        try:
            embedder = await self._embedders.get()
            vectors = await self._embed_window(embedder, taken)
        except asyncio.CancelledError:  # the worker is shutting down
            for piece in taken:
                piece.request.fail(TransientError("an embedding batch shared with this task was interrupted"))
            raise
        except Exception as exc:  # every task in the window sees the model's failure
            log.warning("embedding a window of %d chunks failed: %r", sum(p.end - p.start for p in taken), exc)
            for piece in taken:
                piece.request.fail(exc)
                if piece.request in self._queue:
                    self._queue.remove(piece.request)
            return
        offset = 0
        for piece in taken:
            piece.request.deliver(piece.start, vectors[offset:offset + piece.end - piece.start])
            offset += piece.end - piece.start

    async def _embed_window(self, embedder: Embedder, taken: list[_Slice]) -> np.ndarray:
        titles = [t for p in taken for t in p.request.titles[p.start:p.end]]
        contents = [c for p in taken for c in p.request.contents[p.start:p.end]]
        owners = [p.request for p in taken for _ in range(p.start, p.end)]
        new_titles = missing_titles(titles, self._title_weight, self._titles)
        texts = contents + new_titles
        counts = [n for p in taken for n in p.request.token_counts[p.start:p.end]] + [None] * len(new_titles)
        if len(texts) <= min(SMALL_WINDOW, self._batch_size):
            out = await asyncio.to_thread(_encode_planned, embedder, texts, self._batch_size, counts)
        else:
            out = await self._encode_window(embedder, texts, counts, owners, len(contents))
        for title, vector in zip(new_titles, out[len(contents):], strict=True):
            self._titles[title] = vector
        title_vectors = {t: self._titles[t] for t in dict.fromkeys(titles) if t} if self._title_weight else {}
        return blend_titles(titles, out[: len(contents)], self._title_weight, title_vectors)

    async def _encode_window(self, embedder: Embedder, texts: list[str], counts: list[int | None],
                             owners: list[_Request], contents: int) -> np.ndarray:
        """`texts` in the embedder's batches, up to `parallel` at once; a batch whose rows are all
        abandoned (the first `contents` texts belong to `owners`; the rest are titles) is skipped."""
        plan = await asyncio.to_thread(embedder.plan_batches, texts, self._batch_size, counts)
        # Rows nobody waits for any more keep a unit placeholder (never handed out).
        out = np.full((len(texts), embedder.dim), 1.0 / np.sqrt(embedder.dim), dtype=np.float32)

        async def encode(rows: list[int]) -> None:
            out[rows] = await asyncio.to_thread(embedder.encode, [texts[i] for i in rows], len(rows))

        running: set[asyncio.Task[None]] = set()
        try:
            for rows in plan:
                if len(running) >= self._parallel:
                    done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # a failed batch fails the window
                if all(i < contents and owners[i].abandoned for i in rows):
                    continue  # checked when the batch could start: a task cancelled meanwhile costs nothing
                running.add(asyncio.create_task(encode(rows)))
            while running:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
        finally:
            for task in running:  # after a failure or a shutdown: start no more batches of this window
                task.cancel()
        return out


def _encode_planned(embedder: Embedder, texts: list[str], batch_size: int,
                    counts: list[int | None]) -> np.ndarray:
    """A few texts (search queries) planned and encoded in one thread hop: each hop costs two GIL
    hand-offs, which on a busy process weigh more than the model call of a short query."""
    out = np.empty((len(texts), embedder.dim), dtype=np.float32)
    for rows in embedder.plan_batches(texts, batch_size, counts):
        out[rows] = embedder.encode([texts[i] for i in rows], len(rows))
    return out
