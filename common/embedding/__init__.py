"""Embedding models behind the `Embedder` protocol.

Importing this package is cheap: torch, sentence_transformers and onnxruntime load only when a model
is built (`OnnxEmbedder` and `OpenAIEmbedder` live in `onnx_embedder` / `openai_embedder`).
"""

from common.embedding.base import Embedder
from common.embedding.factory import build_embedder
from common.embedding.st_embedder import SentenceTransformerEmbedder, bundled_model_path
from common.embedding.weighting import weighted_vectors

__all__ = [
    "Embedder",
    "SentenceTransformerEmbedder",
    "build_embedder",
    "bundled_model_path",
    "weighted_vectors",
]
