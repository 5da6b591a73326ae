"""The ONNX backend (`common/embedding/onnx_embedder.py`) against the torch one it is exported from."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from common.embedding import Embedder, build_embedder
from common.embedding import onnx_embedder as onnx_module
from common.embedding.onnx_embedder import OnnxEmbedder, ensure_onnx_model, onnx_model_file
from common.embedding.st_embedder import SentenceTransformerEmbedder, bundled_model_path
from common.settings import EmbeddingSettings

# ~50 varied inputs: short, long (truncated at 256 tokens), empty, punctuation, code, numbers, tables,
# non-English and mixed scripts, repeated tokens; the kinds of text chunking produces.
SENTENCES = [
    "The cat sat on the mat.",
    "How do I reset my password?",
    "I forgot my password and need to change it.",
    "The volcano erupted and covered the village in ash.",
    "Quarterly revenue grew by 12% year over year, driven by cloud services.",
    "",
    "a",
    "?",
    "OK",
    "Hello, world!",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' ORDER BY name;",
    "| Region | Q1 | Q2 |\n|---|---|---|\n| EMEA | 1.2M | 1.4M |\n| APAC | 0.9M | 1.1M |",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Le gouvernement a annoncé de nouvelles mesures pour l'économie.",
    "El sistema de archivos distribuido replica cada bloque tres veces.",
    "数据库连接失败，请稍后重试。",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "naïve café résumé Übergröße façade",
    "word " * 300,
    "The quick brown fox jumps over the lazy dog. " * 40,
    "Section 4.2.1 — Termination. Either party may terminate this Agreement upon thirty (30) days' notice.",
    "Patient presents with acute onset dyspnea and bilateral lower-extremity edema.",
    "Install with `pip install docvec` and run `docvec serve --port 8000`.",
    "ERROR 2024-05-01T12:00:03Z worker-7 task=abc123 Timeout after 300s while parsing page 17",
    "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20",
    "3.14159265358979323846264338327950288419716939937510",
    "https://example.com/api/v1/documents?limit=50&offset=100#results",
    "user@example.org wrote: please see the attached PDF (v2, final-final).",
    "🙂🚀 emoji-heavy text 🎉🎉🎉",
    "!!!???...,,,;;;:::",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The mitochondria is the powerhouse of the cell.",
    "Interest rates rose for the third consecutive quarter.",
    "Bake at 180°C for 25 minutes until golden brown.",
    "Chapter 1\n\nIt was a bright cold day in April, and the clocks were striking thirteen.",
    "To be, or not to be, that is the question.",
    "Kubernetes schedules pods onto nodes according to resource requests and affinity rules.",
    "The court held that the contract was void for lack of consideration.",
    "Gradient descent updates parameters in the direction of the negative gradient.",
    "Customer complained that the delivery arrived two weeks late and damaged.",
    "Replace the air filter every 12,000 miles or once a year.",
    "The Eiffel Tower was completed in 1889 for the World's Fair.",
    "BEGIN TRANSACTION; UPDATE accounts SET balance = balance - 100 WHERE id = 1; COMMIT;",
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor",
    "A B C D E F G H I J K L M N O P Q R S T U V W X Y Z",
    "Revenue (USD m): 2021 — 410; 2022 — 455; 2023 — 512; 2024E — 560.",
    "She sells sea shells by the sea shore.",
    "Unsupported file type: application/x-msdownload",
]


@pytest.fixture(scope="module")
def onnx_cache(st_embedder: SentenceTransformerEmbedder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding both exports, made from the session's already loaded torch model."""
    cache = tmp_path_factory.mktemp("onnx")
    ensure_onnx_model(st_embedder.model_path, cache, quantize=True, source=st_embedder.model)
    return cache


@pytest.fixture(scope="module")
def onnx_fp32(onnx_cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=onnx_cache, quantize=False)


@pytest.fixture(scope="module")
def onnx_int8(onnx_cache: Path) -> OnnxEmbedder:
    return OnnxEmbedder(cache_dir=onnx_cache, quantize=True)


def test_cache_holds_both_exports_and_no_leftovers(onnx_cache: Path) -> None:
    model = bundled_model_path()
    fp32 = onnx_model_file(model, onnx_cache, quantize=False)
    int8 = onnx_model_file(model, onnx_cache, quantize=True)
    assert fp32.name.startswith("all-MiniLM-L6-v2-") and fp32.name.endswith(".onnx")
    assert int8.name.endswith(".int8.onnx")
    assert fp32.is_file() and int8.is_file()
    # int8 MatMul weights; the embeddings, the FFN outputs and the last layer stay fp32
    assert int8.stat().st_size < fp32.stat().st_size * 0.85
    assert not [p for p in onnx_cache.iterdir() if p.name.endswith(".tmp")]


def test_shape_dtype_normalization_and_tokenizer(
    onnx_int8: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder
) -> None:
    assert isinstance(onnx_int8, Embedder)
    assert onnx_int8.dim == 384
    assert onnx_int8.name == st_embedder.name
    assert onnx_int8.max_tokens == st_embedder.max_tokens == 254
    vectors = onnx_int8.encode(["The cat sat on the mat.", "Quarterly revenue grew.", ""], batch_size=2)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert onnx_int8.encode([], batch_size=4).shape == (0, 384)
    text = "Tokenization of naïve café-style text: Übergröße, 12,345 items!"
    assert onnx_int8.count_tokens(text) == st_embedder.count_tokens(text)
    assert onnx_int8.token_offsets(text) == st_embedder.token_offsets(text)
    assert onnx_int8.token_offsets_batch([text, "a b"]) == st_embedder.token_offsets_batch([text, "a b"])
    assert onnx_int8.count_tokens("word " * 1000) == 1000


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def test_fp32_matches_torch(onnx_fp32: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder) -> None:
    assert len(SENTENCES) >= 50
    torch_vectors = st_embedder.encode(SENTENCES, batch_size=16)
    min_cosine = _min_cosine(torch_vectors, onnx_fp32.encode(SENTENCES, batch_size=16))
    print(f"onnx fp32 min cosine vs torch: {min_cosine:.5f}")
    assert min_cosine >= 0.99


def test_int8_stays_close_to_torch(onnx_int8: OnnxEmbedder, st_embedder: SentenceTransformerEmbedder) -> None:
    torch_vectors = st_embedder.encode(SENTENCES, batch_size=16)
    min_cosine = _min_cosine(torch_vectors, onnx_int8.encode(SENTENCES, batch_size=16))
    print(f"onnx int8 min cosine vs torch: {min_cosine:.5f}")
    assert min_cosine >= 0.97


def test_batching_and_order_do_not_change_vectors(onnx_fp32: OnnxEmbedder) -> None:
    # Dynamic padding and length sorting must be invisible: each row equals its text encoded alone.
    texts = SENTENCES[:20]
    together = onnx_fp32.encode(texts, batch_size=7)
    alone = np.stack([onnx_fp32.encode([text], batch_size=1)[0] for text in texts])
    np.testing.assert_allclose(together, alone, atol=1e-4)
    np.testing.assert_allclose(onnx_fp32.encode(texts[::-1], batch_size=3)[::-1], together, atol=1e-4)


def test_rejects_a_non_positive_batch_size(onnx_fp32: OnnxEmbedder) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        onnx_fp32.encode(["x"], batch_size=0)


def test_factory_builds_onnx_from_the_cache(onnx_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_export(*_args: object) -> None:
        raise AssertionError("the cached export should have been reused")

    monkeypatch.setattr(onnx_module, "_export_fp32", no_export)
    monkeypatch.setattr(onnx_module, "_quantize_int8", no_export)
    by_argument = build_embedder(EmbeddingSettings(backend="onnx", onnx_threads=1), onnx_cache_dir=onnx_cache)
    assert isinstance(by_argument, OnnxEmbedder) and by_argument.onnx_path.name.endswith(".int8.onnx")
    settings = EmbeddingSettings(backend="onnx", onnx_quantize=False, onnx_cache_dir=str(onnx_cache))
    by_setting = build_embedder(settings, onnx_cache_dir=Path("/nonexistent"))
    assert isinstance(by_setting, OnnxEmbedder) and by_setting.onnx_path.parent == onnx_cache


def test_cached_model_runs_without_torch(onnx_cache: Path) -> None:
    code = (
        "import sys; from pathlib import Path; from common.embedding.onnx_embedder import OnnxEmbedder; "
        f"e = OnnxEmbedder(cache_dir=Path({str(onnx_cache)!r}), threads=1); "
        "v = e.encode(['hello world'], 1); print(v.shape, 'torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert result.stdout.split() == ["(1,", "384)", "False"]


def test_concurrent_exports_run_once_and_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []

    def slow_export(_model_dir: Path, out: Path, _source: object) -> None:
        calls.append(out)
        out.write_bytes(b"half")
        time.sleep(0.3)  # the other thread must be waiting on the lock now, not exporting
        with out.open("ab") as file:
            file.write(b" done")

    monkeypatch.setattr(onnx_module, "_export_fp32", slow_export)
    results: list[Path] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(ensure_onnx_model(bundled_model_path(), tmp_path, quantize=False))
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(results) == 2 and results[0] == results[1]
    assert results[0].read_bytes() == b"half done"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_export_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_export(_model_dir: Path, out: Path, _source: object) -> None:
        out.write_bytes(b"partial")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(onnx_module, "_export_fp32", broken_export)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        ensure_onnx_model(bundled_model_path(), tmp_path, quantize=False)
    assert not [p for p in tmp_path.iterdir() if p.suffix in {".onnx", ".tmp"}]


def test_missing_model_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="embedding.model"):
        OnnxEmbedder(tmp_path, cache_dir=tmp_path / "cache")
