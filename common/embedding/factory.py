"""Build the configured `Embedder`; called once by a composition root (worker main, API lifespan, CLI)."""

from __future__ import annotations

import os
from pathlib import Path

from common.embedding.base import Embedder
from common.embedding.weighting import weighted_vectors
from common.settings import EmbeddingSettings

__all__ = ["build_embedder", "default_onnx_cache_dir", "model_parallelism", "weighted_vectors"]

AUTO_PARALLEL_BATCHES_MAX = 4


def model_parallelism(settings: EmbeddingSettings, cpus: int | None = None) -> tuple[int, int]:
    """(model batches run at once, threads each) for `settings` on a machine with `cpus` cores.

    `parallel_batches` 0 means one batch per core, at most 4, the cores shared out among them: on 2
    cores, two single-threaded MiniLM batches at once embed ~15% faster than one batch on two threads
    (no barrier between the threads of one matrix product, each batch's activations in one core's
    cache). An explicit `torch_threads` / `onnx_threads` wins. For the openai backend the threads
    mean nothing and the batches are concurrent requests.
    """
    cpus = cpus or os.cpu_count() or 1
    parallel = settings.parallel_batches or max(1, min(cpus, AUTO_PARALLEL_BATCHES_MAX))
    explicit = settings.onnx_threads if settings.backend == "onnx" else settings.torch_threads
    return parallel, explicit or max(1, cpus // parallel)


def default_onnx_cache_dir() -> Path:
    """The per-user cache (`$XDG_CACHE_HOME/docvec/onnx`) for callers that have no data dir."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "docvec" / "onnx"


def build_embedder(settings: EmbeddingSettings, *, onnx_cache_dir: Path | None = None) -> Embedder:
    """The embedder `settings.backend` names. Loads a model (seconds); never downloads weights.

    sentence-transformers / onnx: an empty `settings.model` means the bundled all-MiniLM-L6-v2.
    onnx: the export is kept in `settings.onnx_cache_dir` if set, else in `onnx_cache_dir` (the
    composition root passes `<data_dir>/onnx`), else in the per-user cache. Backends are imported here
    so a process only loads the libraries of the backend it uses.
    """
    _, threads = model_parallelism(settings)
    if settings.backend == "sentence-transformers":
        from common.embedding.st_embedder import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            settings.model or None, device=settings.device, torch_threads=threads,
            batch_tokens=settings.batch_tokens,
        )
    if settings.backend == "onnx":
        from common.embedding.onnx_embedder import OnnxEmbedder

        if settings.onnx_cache_dir:
            cache_dir = Path(settings.onnx_cache_dir).expanduser()
        else:
            cache_dir = onnx_cache_dir or default_onnx_cache_dir()
        return OnnxEmbedder(
            settings.model or None, cache_dir=cache_dir, quantize=settings.onnx_quantize, threads=threads,
            batch_tokens=settings.batch_tokens,
        )
    if settings.backend == "openai":
        from common.embedding.openai_embedder import OpenAIEmbedder

        return OpenAIEmbedder(
            api_base=settings.api_base,
            model=settings.model,
            api_key=settings.api_key.get_secret_value(),
            dim=settings.dim,
            max_tokens=settings.api_max_tokens,
            timeout_s=settings.api_timeout_s,
            retries=settings.api_retries,
            backoff_max_s=settings.api_backoff_max_s,
        )
    raise ValueError(f"unknown embedding.backend {settings.backend!r}")
