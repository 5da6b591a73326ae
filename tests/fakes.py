"""Fast in-process fakes for unit tests. Integration tests use the real model and servers."""

from __future__ import annotations

import hashlib
import re

import numpy as np

_WORD = re.compile(r"\w+|[^\w\s]")


class HashEmbedder:
    """A deterministic bag-of-words embedder: texts sharing words get similar vectors.

    Implements the `Embedder` protocol with whitespace/punctuation tokens, so chunking is exact
    and fast. Only for tests.
    """

    def __init__(self, dim: int = 64, max_tokens: int = 512) -> None:
        self._dim = dim
        self._max_tokens = max_tokens

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

    def count_tokens(self, text: str) -> int:
        return len(_WORD.findall(text))

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _WORD.finditer(text)]
