"""The `Embedder` protocol: a model that turns texts into normalized float32 vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Blocking interface; callers run it off the event loop (`asyncio.to_thread`)."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def max_tokens(self) -> int:
        """The longest input (in model tokens) the model sees before it truncates."""
        ...

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """Return an (n, dim) float32 array of L2-normalized vectors."""
        ...

    def plan_batches(self, texts: list[str], batch_size: int,
                     token_counts: Sequence[int | None] | None = None) -> list[list[int]]:
        """How to cut `texts` into model calls: index lists, each one `encode(batch, len(batch))`.

        Local models sort by token length and cut by their token budget (`common.embedding.batches`);
        a remote endpoint takes `batch_size` texts per request. `token_counts[i]`, where not None, is
        `count_tokens(texts[i])` already known (a chunk's): the text is not tokenized again."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under the model's tokenizer, without special tokens."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character (start, end) span of each token of `text`, without special tokens."""
        ...
