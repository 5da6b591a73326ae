"""A sentence-transformers model exported to ONNX and run by onnxruntime (CPU) behind `Embedder`.

The export (transformer + the model's own pooling and normalization modules) happens once per model
into a cache directory; later processes load the cached file without importing torch. Optional dynamic
int8 quantization of the weights makes CPU inference faster at a small cost in accuracy.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from filelock import FileLock

from common.embedding.batches import plan_local_batches
from common.embedding.st_embedder import BUNDLED_MODEL_NAME, bundled_model_path, force_offline
from common.embedding.tokenizer import ModelTokenizer

if TYPE_CHECKING:
    import onnxruntime
    from sentence_transformers import SentenceTransformer

# Bump when the exported graph changes (inputs, outputs, opset), so stale cache files are not reused.
EXPORT_FORMAT_VERSION = 3
ONNX_OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
EXPORT_LOCK_TIMEOUT_S = 900.0


def model_fingerprint(model_dir: Path) -> str:
    """Short digest of a model directory's files (names, sizes, mtimes): a new model gets a new export."""
    digest = hashlib.sha256(f"docvec-onnx-v{EXPORT_FORMAT_VERSION}-opset{ONNX_OPSET}".encode())
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(model_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# Names which MatMuls `_quantize_int8` leaves in fp32; a new recipe gets a new file, not a stale cache.
INT8_RECIPE = "r2"


def onnx_model_file(model_dir: Path, cache_dir: Path, *, quantize: bool) -> Path:
    """Where the export of `model_dir` lives in `cache_dir` (`.int8.onnx` when quantized)."""
    suffix = f".{INT8_RECIPE}.int8.onnx" if quantize else ".onnx"
    # The bundled weights sit in a directory called `model`; name their export after the model.
    label = BUNDLED_MODEL_NAME.rsplit("/", 1)[-1] if model_dir == bundled_model_path() else model_dir.name
    return cache_dir / f"{label}-{model_fingerprint(model_dir)}{suffix}"


def ensure_onnx_model(
    model_dir: Path, cache_dir: Path, *, quantize: bool, source: SentenceTransformer | None = None
) -> Path:
    """The cached ONNX file for `model_dir`, exporting (and quantizing) it first if it is missing.

    Safe when several processes start at once: a file lock serializes exports, and each file appears
    under its final name only when complete (written to a temporary name, then renamed). `source` is
    the already loaded model, to avoid loading it a second time; None loads it (needs torch).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = onnx_model_file(model_dir, cache_dir, quantize=False)
    target = onnx_model_file(model_dir, cache_dir, quantize=quantize)
    if target.is_file():
        return target
    with FileLock(str(fp32_path.with_suffix(".lock")), timeout=EXPORT_LOCK_TIMEOUT_S):
        if not fp32_path.is_file():
            _atomic_write(fp32_path, lambda tmp: _export_fp32(model_dir, tmp, source))
        if quantize and not target.is_file():
            _atomic_write(target, lambda tmp: _quantize_int8(fp32_path, tmp))
    return target


def _atomic_write(final: Path, write: Callable[[Path], None]) -> None:
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def _export_fp32(model_dir: Path, out: Path, source: SentenceTransformer | None) -> None:
    force_offline()
    import torch
    from sentence_transformers import SentenceTransformer

    model = source if source is not None else SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)

    class _Pipeline(torch.nn.Module):
        """The whole sentence-transformers pipeline with plain tensor inputs, as the exporter needs."""

        def __init__(self, st: SentenceTransformer) -> None:
            super().__init__()
            self.st = st

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            features = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": torch.zeros_like(input_ids),
            }
            return self.st(features)["sentence_embedding"]

    pipeline = _Pipeline(model).to("cpu").eval()
    # Trace with a padded row: the tracer records one branch of data-dependent code (transformers skips
    # the attention mask when it is all ones), and only the masking branch is right for every input.
    input_ids = torch.full((2, 16), 1000, dtype=torch.long)
    attention_mask = torch.ones((2, 16), dtype=torch.long)
    attention_mask[1, 5:] = 0
    dynamic = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, OUTPUT_NAME: {0: "batch"}}
    # The TorchScript exporter is deprecated but needs no onnxscript; its tracer warnings are expected
    # here (see above) and must not become errors where warnings are errors (pytest). Export runs under
    # the file lock, once per model, so the process-wide warning filter change is brief.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            pipeline,
            (input_ids, attention_mask),
            str(out),
            dynamo=False,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            dynamic_axes=dynamic,
            opset_version=ONNX_OPSET,
        )


def _quantize_int8(fp32_path: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel int8 weights on the MatMuls only, except each layer's FFN output projection (whose
    # input, after GELU, has outliers int8 activations clip) and every MatMul of the last layer (its
    # error reaches the pooled vector unattenuated). Measured on 50 varied texts vs torch: all MatMuls
    # per-tensor min cosine 0.89, per-channel 0.967; with the FFN outputs kept fp32 0.977. On 617
    # chunks of real HTML and PDF (code, tables): FFN outputs kept 0.9912, plus the last layer 0.9920
    # (2% slower).
    graph = onnx.load(str(fp32_path), load_external_data=False).graph
    matmuls = [node.name for node in graph.node if node.op_type == "MatMul"]
    layers = [int(m.group(1)) for name in matmuls if (m := re.search(r"/layer\.(\d+)/", name))]
    last = f"/layer.{max(layers)}/" if layers else None
    kept_fp32 = [
        name for name in matmuls
        if ("/output/dense/" in name and "/attention/" not in name) or (last is not None and last in name)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(
            str(fp32_path),
            str(out),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
            nodes_to_exclude=kept_fp32,
        )


class OnnxEmbedder:
    """`Embedder` running a local sentence-transformers model as ONNX on onnxruntime's CPU provider.

    `model_path` None means the bundled all-MiniLM-L6-v2. The export lands in `cache_dir` (first use
    only: needs torch and takes seconds). `threads` > 0 sets onnxruntime's intra-op threads (per
    session, not process-wide); 0 leaves its default; `batch_tokens` as for the torch backend. Each
    batch is padded only to its longest text, and texts are sorted by length within a call so batches
    hold similar lengths. Thread-safe.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        cache_dir: Path,
        quantize: bool = True,
        threads: int = 0,
        batch_tokens: int = 0,
        source: SentenceTransformer | None = None,
    ) -> None:
        path = Path(model_path).expanduser() if model_path is not None else bundled_model_path()
        if not (path / "modules.json").is_file():
            raise FileNotFoundError(
                f"embedding model directory {path} has no modules.json; "
                "set embedding.model to a local sentence-transformers model directory"
            )
        import onnxruntime as ort

        self._tokenizer = ModelTokenizer.from_model_dir(path)
        self._batch_tokens = batch_tokens
        self._onnx_path = ensure_onnx_model(path, Path(cache_dir), quantize=quantize, source=source)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.inter_op_num_threads = 1
        # Parsing, chunking and I/O threads share the cores: idle intra-op threads must sleep, not spin
        # (measured in the worker pipeline: 20.7 -> 23.3 chunks/s).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads > 0:
            options.intra_op_num_threads = threads
        self._session: onnxruntime.InferenceSession = ort.InferenceSession(
            str(self._onnx_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._dim = int(self._session.get_outputs()[0].shape[-1])
        self._name = BUNDLED_MODEL_NAME if model_path is None else path.name

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        """The model's name: its vectors live in the same space as the torch backend's (cosine >= 0.97)."""
        return self._name

    @property
    def max_tokens(self) -> int:
        return self._tokenizer.max_tokens

    @property
    def onnx_path(self) -> Path:
        return self._onnx_path

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalized. Blocking: call it off the event loop."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        vectors = np.zeros((len(texts), self._dim), dtype=np.float32)
        if not texts:
            return vectors
        ids = self._tokenizer.model_input_ids(list(texts))
        order = np.argsort(np.fromiter((len(row) for row in ids), dtype=np.intp, count=len(ids)), kind="stable")
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            vectors[rows] = self._run_batch([ids[row] for row in rows])
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        # The graph normalizes already; renormalizing absorbs int8 rounding. Guard a zero vector.
        return vectors / np.maximum(norms, 1e-12)

    def _run_batch(self, batch: list[list[int]]) -> np.ndarray:
        length = max(len(row) for row in batch)
        # Padded positions hold id 0; attention and mean pooling ignore them through the mask.
        input_ids = np.zeros((len(batch), length), dtype=np.int64)
        attention_mask = np.zeros((len(batch), length), dtype=np.int64)
        for i, row in enumerate(batch):
            input_ids[i, : len(row)] = row
            attention_mask[i, : len(row)] = 1
        (output,) = self._session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        return np.asarray(output, dtype=np.float32)

    def plan_batches(self, texts: list[str], batch_size: int,
                     token_counts: Sequence[int | None] | None = None) -> list[list[int]]:
        return plan_local_batches(self._tokenizer, texts, batch_size, self._batch_tokens, token_counts)

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count_tokens(text)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tokenizer.token_offsets(text)

    def token_offsets_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        return self._tokenizer.token_offsets_batch(texts)

    @property
    def chunk_tokenizer(self) -> ModelTokenizer:
        """The model's tokenizer alone, picklable: what a parsing process chunks with."""
        return self._tokenizer
