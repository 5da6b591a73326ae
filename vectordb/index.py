"""FAISS index building and searching for sealed segments, plus exact (brute-force) scoring.

Score convention (as Milvus): COSINE and IP give similarity (higher is better); L2 gives the squared
distance (lower is better). COSINE indexes hold unit-normalised vectors and use inner product.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import faiss
import numpy as np

from vectordb.errors import InvalidRequest
from vectordb.schema import IndexParams, IndexType, MetricType


def higher_is_better(metric: MetricType) -> bool:
    return metric is not MetricType.L2


def worst_score(metric: MetricType) -> float:
    return -np.inf if higher_is_better(metric) else np.inf


def prepare_queries(queries: np.ndarray, metric: MetricType) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if metric is MetricType.COSINE:
        q = q.copy()
        faiss.normalize_L2(q)
    return q


def build_index(vectors: np.ndarray, norms: np.ndarray, params: IndexParams) -> faiss.Index:
    """Build the index of `params` over `vectors` (row i gets FAISS id i)."""
    n, dim = vectors.shape
    metric = params.metric
    data = np.ascontiguousarray(vectors, dtype=np.float32)
    if metric is MetricType.COSINE:
        safe = np.where(norms > 0, norms, 1.0).astype(np.float32)
        data = data / safe[:, None]
    faiss_metric = faiss.METRIC_L2 if metric is MetricType.L2 else faiss.METRIC_INNER_PRODUCT
    kind = params.resolved_type
    index: faiss.Index
    if kind is IndexType.FLAT:
        index = faiss.IndexFlat(dim, faiss_metric)
    elif kind is IndexType.HNSW:
        hnsw = faiss.IndexHNSWFlat(dim, int(params.params.get("M", 16)), faiss_metric)
        hnsw.hnsw.efConstruction = int(params.params.get("efConstruction", 200))
        index = hnsw
    else:
        # FAISS wants ~39 training points per list; clamp nlist so small segments still train well.
        nlist = max(1, min(int(params.params.get("nlist", 128)), n // 39))
        quantizer = faiss.IndexFlat(dim, faiss_metric)
        if kind is IndexType.IVF_FLAT:
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss_metric)
        else:
            index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss_metric)
        index.train(data)
    if n:
        index.add(data)
    return index


@functools.lru_cache(maxsize=256)
def _shared_hnsw_parameters(ef_search: int) -> Any:
    """Read-only HNSW parameters, shared by every search without a selector (FAISS only reads them)."""
    p = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
    p.efSearch = ef_search
    return p


def _search_parameters(index: faiss.Index, k: int, search_params: Mapping[str, Any], *, shared: bool = False) -> Any:
    """FAISS search parameters; `shared` ones may not be modified (no selector can be attached)."""
    if isinstance(index, faiss.IndexHNSW):
        ef_search = max(int(search_params.get("ef", 64)), k)
        if shared:
            return _shared_hnsw_parameters(ef_search)
        p = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        p.efSearch = ef_search
        return p
    if isinstance(index, faiss.IndexIVF):
        p = faiss.SearchParametersIVF()
        p.nprobe = min(int(search_params.get("nprobe", 16)), index.nlist)
        return p
    return faiss.SearchParameters()


def index_search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
    search_params: Mapping[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Search `index`; when `allowed` (bool per row) is given only those rows may be returned.

    Returns FAISS-convention (distances, labels); label -1 marks an empty slot.
    """
    if allowed is None:
        return index.search(queries, k, params=_search_parameters(index, k, search_params, shared=True))  # type: ignore[no-any-return]
    params = _search_parameters(index, k, search_params)
    bits = None
    if allowed is not None:
        bits = np.packbits(allowed, bitorder="little")
        params.sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
    distances, labels = index.search(queries, k, params=params)
    del bits  # the selector points into `bits`: keep it alive until here
    return distances, labels


def exact_scores(vectors: np.ndarray, norms: np.ndarray, queries: np.ndarray, metric: MetricType) -> np.ndarray:
    """Scores of every (row, query) pair, shape (rows, nq). Queries must come from `prepare_queries`."""
    dots = np.asarray(vectors, dtype=np.float32) @ queries.T
    if metric is MetricType.COSINE:
        safe = np.where(norms > 0, norms, 1.0)
        return dots / safe[:, None]
    if metric is MetricType.IP:
        return dots
    q_sq = np.einsum("ij,ij->i", queries, queries)
    return np.maximum(norms[:, None] ** 2 - 2 * dots + q_sq[None, :], 0.0)


def top_k_rows(scores: np.ndarray, k: int, metric: MetricType) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` rows per query column of `scores` (rows, nq) -> (positions, scores), each (nq, <=k), best first."""
    rows = scores.shape[0]
    k = min(k, rows)
    s = scores.T if higher_is_better(metric) else -scores.T
    if k < rows:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(rows), (s.shape[0], 1))
    order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
    pos = np.take_along_axis(part, order, axis=1)
    return pos, np.take_along_axis(scores.T, pos, axis=1)


def write_index(index: faiss.Index, path: str) -> None:
    faiss.write_index(index, path)


def read_index(path: str) -> faiss.Index:
    return faiss.read_index(path)


def check_metric(params: IndexParams, search_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flatten `{"metric_type": .., "params": {"ef": ..}}` and check the metric matches the index."""
    sp = dict(search_params or {})
    nested = sp.pop("params", None) or {}
    metric = sp.pop("metric_type", None)
    if metric is not None and str(metric).upper() != params.metric_type:
        raise InvalidRequest(f"search metric {metric} does not match the index metric {params.metric_type}")
    sp.update(nested)
    for key in ("ef", "nprobe"):
        if key in sp and (not isinstance(sp[key], int) or isinstance(sp[key], bool) or not 1 <= sp[key] <= 65536):
            raise InvalidRequest(f"search parameter {key} must be an integer in [1, 65536]")
    return sp
