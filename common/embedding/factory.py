"""Build the configured `Embedder`; called once by a composition root (worker main, API lifespan, CLI)."""

from __future__ import annotations

import os
from pathlib import Path

from common.embedding.base import Embedder
from common.embedding.weighting import weighted_vectors
from common.settings import EmbeddingSettings

__all__ = ["build_embedder", "default_onnx_cache_dir", "weighted_vectors"]


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
    if settings.backend == "sentence-transformers":
        from common.embedding.st_embedder import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            settings.model or None, device=settings.device, torch_threads=settings.torch_threads
        )
    if settings.backend == "onnx":
        from common.embedding.onnx_embedder import OnnxEmbedder

        if settings.onnx_cache_dir:
            cache_dir = Path(settings.onnx_cache_dir).expanduser()
        else:
            cache_dir = onnx_cache_dir or default_onnx_cache_dir()
        return OnnxEmbedder(
            settings.model or None, cache_dir=cache_dir, quantize=settings.onnx_quantize, threads=settings.onnx_threads
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
