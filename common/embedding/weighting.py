"""Chunk vectors that blend the chunk's title (heading path) with its content, as RAGFlow does."""

from __future__ import annotations

from collections.abc import MutableMapping

import numpy as np

from common.embedding.base import Embedder


def weighted_vectors(
    embedder: Embedder,
    titles: list[str],
    contents: list[str],
    title_weight: float,
    batch_size: int,
    title_cache: MutableMapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """`normalize(title_weight * embed(title) + (1 - title_weight) * embed(content))` per chunk.

    Each distinct non-empty title is embedded once (every chunk of a section shares its title), and
    not at all when `title_cache` already holds it (titles repeat across batches and documents).
    A chunk with an empty title gets its content vector alone. Returns (n, dim) float32.
    """
    if len(titles) != len(contents):
        raise ValueError(f"got {len(titles)} titles for {len(contents)} contents")
    if not 0.0 <= title_weight <= 1.0:
        raise ValueError(f"title_weight must be within [0, 1], got {title_weight}")
    content_vectors = embedder.encode(contents, batch_size).astype(np.float32, copy=False)
    if title_weight == 0.0 or not any(titles):
        return content_vectors
    cache: MutableMapping[str, np.ndarray] = title_cache if title_cache is not None else {}
    missing = [title for title in dict.fromkeys(titles) if title and title not in cache]
    if missing:
        for title, vector in zip(missing, embedder.encode(missing, batch_size).astype(np.float32), strict=True):
            cache[title] = vector
    distinct = list(dict.fromkeys(title for title in titles if title))
    title_vectors = np.stack([cache[title] for title in distinct])
    row_of_title = {title: row for row, title in enumerate(distinct)}
    has_title = np.fromiter((bool(title) for title in titles), dtype=bool, count=len(titles))
    title_rows = np.fromiter((row_of_title[t] for t in titles if t), dtype=np.intp)
    blended = content_vectors.copy()
    blended[has_title] = title_weight * title_vectors[title_rows] + (1.0 - title_weight) * content_vectors[has_title]
    norms = np.linalg.norm(blended, axis=1, keepdims=True)
    # A title vector exactly opposite its content vector could cancel out at weight 0.5; keep content.
    degenerate = (norms[:, 0] < 1e-12) & has_title
    blended[degenerate] = content_vectors[degenerate]
    norms[degenerate] = 1.0
    return (blended / norms).astype(np.float32, copy=False)
