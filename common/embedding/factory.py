"""Build the configured `Embedder`; called once by a composition root (worker main, API lifespan, CLI)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.embedding.base import Embedder
from common.embedding.weighting import weighted_vectors
from common.settings import EmbeddingSettings

__all__ = ["ModelSizing", "build_embedder", "default_onnx_cache_dir", "model_sizing", "resolve_device",
           "weighted_vectors"]

AUTO_PARALLEL_BATCHES_MAX = 4
GPU_PARALLEL_BATCHES = 2
"""On CUDA: one batch in the model while the next is tokenized and copied to the device."""
GPU_BATCH_TOKENS = 65_536
"""On CUDA: padded tokens per batch (256 texts of 256 tokens; ~1 GiB of MiniLM activations in fp16)."""
GPU_WINDOW_BATCHES = 64
"""On CUDA: `batch_size * 64` chunks (2,048 by default) sorted by length at once, so batches stay full."""


@dataclass(frozen=True)
class ModelSizing:
    """How a process runs its model: on which device, how many batches at once, how big."""

    device: str
    """`cpu` or `cuda[:N]` (`auto` resolved)."""
    parallel: int
    """Model batches run at once (openai: concurrent requests)."""
    threads: int
    """torch / onnxruntime intra-op threads per batch."""
    batch_tokens: int
    """Padded tokens per local-model batch; 0: `batch_size` texts."""
    window: int
    """Chunks sorted by length and cut into batches at a time."""


def resolve_device(settings: EmbeddingSettings) -> str:
    """`settings.device` with `auto` resolved: CUDA when torch sees a device, else the CPU. Only the
    sentence-transformers backend runs on CUDA (imported here only for `auto`, which loads torch)."""
    if settings.backend != "sentence-transformers":
        return "cpu"
    if settings.device != "auto":
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_sizing(settings: EmbeddingSettings, cpus: int | None = None, device: str | None = None) -> ModelSizing:
    """How `settings` runs on a machine with `cpus` cores and `device` (default: `resolve_device`).

    CPU: `parallel_batches` 0 means one batch per core, at most 4, the cores shared out among them: on
    2 cores, two single-threaded MiniLM batches at once embed ~15% faster than one batch on two threads
    (no barrier between the threads of one matrix product, each batch's activations in one core's
    cache). An explicit `torch_threads` / `onnx_threads` wins. For the openai backend the threads
    mean nothing and the batches are concurrent requests.
    CUDA: two batches at once and big ones (`GPU_*`), unless set explicitly: a GPU is fed by batches
    of thousands of tokens, and the CPU's part (tokenizing, copying) overlaps the model's.
    """
    cpus = cpus or os.cpu_count() or 1
    device = device or resolve_device(settings)
    explicit = settings.model_fields_set
    explicit_threads = settings.onnx_threads if settings.backend == "onnx" else settings.torch_threads
    if device.startswith("cuda"):
        parallel = settings.parallel_batches or GPU_PARALLEL_BATCHES
        batch_tokens = settings.batch_tokens if "batch_tokens" in explicit else GPU_BATCH_TOKENS
        window_batches = settings.window_batches if "window_batches" in explicit else GPU_WINDOW_BATCHES
        return ModelSizing(device, parallel, explicit_threads or 1, batch_tokens, settings.batch_size * window_batches)
    parallel = settings.parallel_batches or max(1, min(cpus, AUTO_PARALLEL_BATCHES_MAX))
    return ModelSizing(device, parallel, explicit_threads or max(1, cpus // parallel), settings.batch_tokens,
                       settings.batch_size * settings.window_batches)


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
    sizing = model_sizing(settings)
    if settings.backend == "sentence-transformers":
        from common.embedding.st_embedder import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            settings.model or None, device=sizing.device, torch_threads=sizing.threads,
            batch_tokens=sizing.batch_tokens, precision=settings.precision,
        )
    if settings.backend == "onnx":
        from common.embedding.onnx_embedder import OnnxEmbedder

        if settings.onnx_cache_dir:
            cache_dir = Path(settings.onnx_cache_dir).expanduser()
        else:
            cache_dir = onnx_cache_dir or default_onnx_cache_dir()
        return OnnxEmbedder(
            settings.model or None, cache_dir=cache_dir, quantize=settings.onnx_quantize, threads=sizing.threads,
            batch_tokens=sizing.batch_tokens,
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
