"""Chunk vectors that blend the chunk's title (heading path) with its content, as RAGFlow does."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

import numpy as np

from common.embedding.base import Embedder


def _check(titles: list[str], contents_or_rows: int, title_weight: float) -> None:
    if len(titles) != contents_or_rows:
        raise ValueError(f"got {len(titles)} titles for {contents_or_rows} contents")
    if not 0.0 <= title_weight <= 1.0:
        raise ValueError(f"title_weight must be within [0, 1], got {title_weight}")


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
    Contents and new titles go to the model in one call, so the embedder sorts them by length
    together and the short titles share batches. A chunk with an empty title gets its content vector
    alone. Returns (n, dim) float32.
    """
    _check(titles, len(contents), title_weight)
    cache: MutableMapping[str, np.ndarray] = title_cache if title_cache is not None else {}
    missing = missing_titles(titles, title_weight, cache)
    encoded = embedder.encode(contents + missing, batch_size).astype(np.float32, copy=False)
    for title, vector in zip(missing, encoded[len(contents):], strict=True):
        cache[title] = vector
    return blend_titles(titles, encoded[: len(contents)], title_weight, cache)


def missing_titles(titles: list[str], title_weight: float, cache: Mapping[str, np.ndarray]) -> list[str]:
    """The distinct non-empty titles that still need a vector (none when titles carry no weight)."""
    if title_weight == 0.0:
        return []
    return [title for title in dict.fromkeys(titles) if title and title not in cache]


def blend_titles(
    titles: list[str], content_vectors: np.ndarray, title_weight: float, title_vectors: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Blend each row's content vector with its title's vector from `title_vectors`, normalized."""
    _check(titles, len(content_vectors), title_weight)
    content_vectors = content_vectors.astype(np.float32, copy=False)
    if title_weight == 0.0 or not any(titles):
        return content_vectors
    distinct = list(dict.fromkeys(title for title in titles if title))
    stacked = np.stack([title_vectors[title] for title in distinct])
    row_of_title = {title: row for row, title in enumerate(distinct)}
    has_title = np.fromiter((bool(title) for title in titles), dtype=bool, count=len(titles))
    title_rows = np.fromiter((row_of_title[t] for t in titles if t), dtype=np.intp)
    blended = content_vectors.copy()
    blended[has_title] = title_weight * stacked[title_rows] + (1.0 - title_weight) * content_vectors[has_title]
    norms = np.linalg.norm(blended, axis=1, keepdims=True)
    # A title vector exactly opposite its content vector could cancel out at weight 0.5; keep content.
    degenerate = (norms[:, 0] < 1e-12) & has_title
    blended[degenerate] = content_vectors[degenerate]
    norms[degenerate] = 1.0
    return (blended / norms).astype(np.float32, copy=False)
