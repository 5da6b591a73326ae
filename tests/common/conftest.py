"""Fixtures for tests of `common`: the real bundled embedding model, loaded once per session."""

from __future__ import annotations

import pytest

from common.embedding.st_embedder import SentenceTransformerEmbedder


@pytest.fixture(scope="session")
def st_embedder() -> SentenceTransformerEmbedder:
    """The bundled all-MiniLM-L6-v2 (a few seconds to load); shared by every test that needs it."""
    return SentenceTransformerEmbedder()
