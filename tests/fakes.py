"""Fast in-process fakes for unit tests. Integration tests use the real model and servers."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.embedding.batches import batches_by_count
from common.queue import QueueMessage
from worker.ledger import TaskEvent

_WORD = re.compile(r"\w+|[^\w\s]")


class HashEmbedder:
    """A deterministic bag-of-words embedder: texts sharing words get similar vectors.

    Implements the `Embedder` protocol with whitespace/punctuation tokens, so chunking is exact
    and fast. Only for tests.
    """

    def __init__(self, dim: int = 64, max_tokens: int = 512, chunk_tokenizer: HashTokenizer | None = None) -> None:
        self._dim = dim
        self._max_tokens = max_tokens
        # Given: workers parse and chunk in processes with it (`worker.parsepool`), else in threads.
        if chunk_tokenizer is not None:
            self.chunk_tokenizer = chunk_tokenizer

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return "hash-test"

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "big")
                out[row, bucket % self._dim] += 1.0
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm else 1.0 / np.sqrt(self._dim)
        return out

    def plan_batches(self, texts: list[str], batch_size: int, token_counts: Any = None) -> list[list[int]]:
        return batches_by_count([len(text) for text in texts], batch_size)

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _WORD.finditer(text)]


class HashTokenizer:
    """`HashEmbedder`'s tokenizer alone, picklable: a parse process's (`worker.parsepool`)."""

    def __init__(self, max_tokens: int = 512) -> None:
        self.max_tokens = max_tokens

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _WORD.finditer(text)]


class FaultyTokenizer(HashTokenizer):
    """A `HashTokenizer` that misbehaves in the parse process on a text holding `trigger`: "hang"
    (sleeps for an hour), "exit" (the process exits at once, as when a C parser crashes; with
    `marker`, only while that file does not exist yet, which it creates) or "unpicklable" (raises an
    exception that cannot be sent back)."""

    def __init__(self, fault: str, trigger: str = "FAULT", marker: str | None = None) -> None:
        super().__init__()
        self._fault, self._trigger, self._marker = fault, trigger, marker

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        if self._trigger in text:
            self._misbehave()
        return super().token_offsets(text)

    def _misbehave(self) -> None:
        if self._fault == "hang":
            time.sleep(3600)
        elif self._fault == "exit":
            if self._marker is None or not os.path.exists(self._marker):
                if self._marker is not None:
                    Path(self._marker).touch()
                os._exit(3)
        elif self._fault == "unpicklable":
            raise UnpicklableError(lambda: None)


class UnpicklableError(Exception):
    """An exception carrying a lambda: pickle cannot send it across a process boundary."""

    def __init__(self, callback: Any) -> None:
        super().__init__("an error with a callback")
        self.callback = callback


class StubSignals:
    """An in-memory broker side for a worker's tasks (`worker.ledger.Signals`), as Dramatiq's stub broker:
    it records what the executor decided — acks, dead letters, published events — and answers cancel
    checks from `cancel_flags`, so those decisions are tested with no Redis server.

    As with Redis, a dead-lettered entry is acked too.
    """

    def __init__(self) -> None:
        self.cancel_flags: set[str] = set()  # task ids whose cancel flag "the API" has set
        self.cancel_checks: list[str] = []
        self.events: list[TaskEvent] = []
        self.acked: list[QueueMessage] = []
        self.dead_letters: list[tuple[QueueMessage, str]] = []

    async def cancelled(self, task_id: str) -> bool:
        self.cancel_checks.append(task_id)
        return task_id in self.cancel_flags

    def publish(self, task_id: str, event: TaskEvent) -> None:
        assert event["task_id"] == task_id, "an event is published on its own task's channel"
        self.events.append(event)

    async def ack(self, message: QueueMessage, event: TaskEvent | None = None) -> None:
        if event is not None:
            self.publish(message.task_id, event)
        self.acked.append(message)

    async def dead_letter(self, message: QueueMessage, reason: str, event: TaskEvent | None = None) -> None:
        if event is not None:
            self.publish(message.task_id, event)
        self.dead_letters.append((message, reason))
        self.acked.append(message)

    async def drain(self) -> None:
        return None

    def event_names(self, task_id: str) -> list[str]:
        """The names of the events published for `task_id`, in order."""
        return [e["event"] for e in self.events if e["task_id"] == task_id]

    def last_event(self, task_id: str, name: str) -> TaskEvent:
        """The last event called `name` published for `task_id`."""
        return [e for e in self.events if e["task_id"] == task_id and e["event"] == name][-1]


class Unusable:
    """Stands in for a client that a test must not reach (Redis, the queue on it, the vector store): any
    use fails the test."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"this test runs without {self._what}, yet .{name} was used")
