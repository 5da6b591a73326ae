"""The bundled sentence-transformers embedder and title weighting (`common/embedding/`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from common.embedding import Embedder, build_embedder, bundled_model_path, weighted_vectors
from common.embedding.st_embedder import SentenceTransformerEmbedder
from common.settings import EmbeddingSettings


def test_importing_the_package_does_not_load_torch() -> None:
    code = "import sys, common.embedding; print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_bundled_model_is_on_disk() -> None:
    path = bundled_model_path()
    assert (path / "modules.json").is_file()
    assert (path / "tokenizer.json").is_file()


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="embedding.model"):
        build_embedder(EmbeddingSettings(model=str(tmp_path)))


def test_shape_dtype_and_normalization(st_embedder: SentenceTransformerEmbedder) -> None:
    assert isinstance(st_embedder, Embedder)
    assert st_embedder.dim == 384
    assert st_embedder.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert st_embedder.max_tokens == 254  # max_seq_length 256 minus [CLS] and [SEP]
    vectors = st_embedder.encode(["The cat sat on the mat.", "Quarterly revenue grew.", ""], batch_size=2)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert st_embedder.encode([], batch_size=4).shape == (0, 384)


def test_similar_sentences_are_closer(st_embedder: SentenceTransformerEmbedder) -> None:
    a, b, c = st_embedder.encode(
        [
            "How do I reset my password?",
            "I forgot my password and need to change it.",
            "The volcano erupted and covered the village in ash.",
        ],
        batch_size=8,
    )
    assert float(a @ b) > float(a @ c) + 0.3


def test_batching_does_not_change_vectors(st_embedder: SentenceTransformerEmbedder) -> None:
    texts = [f"Sentence number {i} about topic {i % 3}." for i in range(7)]
    np.testing.assert_allclose(
        st_embedder.encode(texts, batch_size=1), st_embedder.encode(texts, batch_size=7), atol=1e-5
    )


def test_encode_matches_sentence_transformers_own_encode(st_embedder: SentenceTransformerEmbedder) -> None:
    """docvec's lean forward gives the vectors `SentenceTransformer.encode` gives, batched or not, and
    still runs the model in eval mode after something switched it to training (dropout off)."""
    texts = ["short", "A longer sentence about rivers, their basins and the sea they reach.",
             "word " * 400, "Reading and writing files"]
    expected = st_embedder.model.encode(texts, batch_size=4, normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=False)
    for batch_size in (1, 3, 4):
        np.testing.assert_allclose(st_embedder.encode(texts, batch_size), expected, atol=1e-5)
    st_embedder.model.train()
    try:
        np.testing.assert_allclose(st_embedder.encode(texts, 4), expected, atol=1e-5)
        assert not st_embedder.model.training
    finally:
        st_embedder.model.eval()


def test_token_offsets_match_count_and_text(st_embedder: SentenceTransformerEmbedder) -> None:
    text = "Tokenization of naïve café-style text: Übergröße, 12,345 items!"
    offsets = st_embedder.token_offsets(text)
    assert len(offsets) == st_embedder.count_tokens(text) > 10
    assert all(0 <= start < end <= len(text) for start, end in offsets)
    assert [start for start, _ in offsets] == sorted(start for start, _ in offsets)
    assert text[offsets[0][0] : offsets[0][1]] == "Token"  # a subword, no [CLS] in front
    assert text[offsets[-1][0] : offsets[-1][1]] == "!"
    assert st_embedder.count_tokens("") == 0
    # Long inputs are counted in full: the private tokenizer copy does not truncate.
    assert st_embedder.count_tokens("word " * 1000) == 1000
    assert st_embedder.token_offsets_batch([text, "a b"]) == [offsets, [(0, 1), (2, 3)]]


def test_title_weighting(st_embedder: SentenceTransformerEmbedder) -> None:
    titles = ["Volcanoes", "", "Volcanoes"]
    contents = ["Passwords must be reset every ninety days.", "Plain chunk.", "Lava flows downhill."]
    weight = 0.3
    got = weighted_vectors(st_embedder, titles, contents, title_weight=weight, batch_size=4)
    title_vector = st_embedder.encode(["Volcanoes"], 4)[0]
    content_vectors = st_embedder.encode(contents, 4)
    expected = weight * title_vector + (1 - weight) * content_vectors[0]
    expected /= np.linalg.norm(expected)
    assert got.shape == (3, 384) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], expected, atol=1e-5)
    np.testing.assert_allclose(got[1], content_vectors[1], atol=1e-5)  # no title: content alone
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # The title pulls the chunk towards it.
    assert float(got[0] @ title_vector) > float(content_vectors[0] @ title_vector) + 0.05
    np.testing.assert_allclose(
        weighted_vectors(st_embedder, titles, contents, title_weight=0.0, batch_size=4), content_vectors, atol=1e-5
    )


class CountingEmbedder:
    """Wraps an embedder and records every batch it encodes."""

    def __init__(self, inner: SentenceTransformerEmbedder) -> None:
        self.inner = inner
        self.batches: list[list[str]] = []

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        self.batches.append(list(texts))
        return self.inner.encode(texts, batch_size)


def test_each_distinct_title_is_embedded_once(st_embedder: SentenceTransformerEmbedder) -> None:
    counting = CountingEmbedder(st_embedder)
    titles = ["A", "A", "", "B", "A", "B"]
    contents = [f"chunk {i}" for i in range(6)]
    weighted_vectors(counting, titles, contents, title_weight=0.1, batch_size=8)  # type: ignore[arg-type]
    assert counting.batches == [[*contents, "A", "B"]], "one call: contents and each distinct title once"


def test_weighted_vectors_rejects_mismatched_lengths(st_embedder: SentenceTransformerEmbedder) -> None:
    with pytest.raises(ValueError, match="titles"):
        weighted_vectors(st_embedder, ["a"], ["x", "y"], title_weight=0.1, batch_size=2)


def test_a_cuda_device_torch_cannot_see_is_a_clear_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(ValueError, match="sees no CUDA device; set embedding.device to cpu or auto"):
        build_embedder(EmbeddingSettings(device="cuda"))


def test_device_setting_is_validated() -> None:
    for good in ("cpu", "auto", "cuda", "cuda:1"):
        assert EmbeddingSettings(device=good).device == good
    for bad in ("gpu", "cuda:", "CUDA", "mps"):
        with pytest.raises(ValueError, match="device"):
            EmbeddingSettings(device=bad)


def test_fp16_keeps_the_vectors_of_fp32(st_embedder: SentenceTransformerEmbedder) -> None:
    """fp16 on the CPU (slow there; the same conversion a GPU gets): normalized float32 rows, each
    within cosine 0.99 of fp32's, and the probe cosine it measured at load is reported."""
    half = SentenceTransformerEmbedder(precision="fp16")
    assert half.precision == "fp16" and st_embedder.precision == "fp32"
    assert half.fp16_min_cosine is not None and half.fp16_min_cosine >= 0.99
    texts = ["How do I reset my password?", "Quarterly revenue grew 12% to $4.1bn.", "x = [i ** 2 for i in y]"]
    vectors = half.encode(texts, batch_size=3)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert float(np.min(np.sum(vectors * st_embedder.encode(texts, batch_size=3), axis=1))) >= 0.99


def test_auto_precision_stays_fp32_on_a_cpu(st_embedder: SentenceTransformerEmbedder) -> None:
    auto = build_embedder(EmbeddingSettings(precision="auto"))
    assert isinstance(auto, SentenceTransformerEmbedder)
    assert (auto.device, auto.precision, auto.fp16_min_cosine) == ("cpu", "fp32", None)


def test_fp16_that_drifts_from_fp32_falls_back_to_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """`auto` on a GPU keeps fp16 only within the cosine bound: here the bound is out of reach."""
    from common.embedding import st_embedder as module

    embedder = SentenceTransformerEmbedder()
    monkeypatch.setattr(module, "FP16_MIN_COSINE", 1.5)
    embedder._try_fp16(keep=False)
    assert embedder.fp16_min_cosine is not None and embedder.fp16_min_cosine < 1.5
    assert embedder.precision == "fp32"
