"""Fixtures for tests that run `docvec` commands: a local embedding endpoint their processes can use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docvec_cli.embedserver import EmbedServer, running_embed_server


@pytest.fixture
def embed() -> Iterator[EmbedServer]:
    """An OpenAI-compatible endpoint answering with `HashEmbedder` vectors (`embed.env()` points docvec at it)."""
    with running_embed_server() as server:
        yield server
