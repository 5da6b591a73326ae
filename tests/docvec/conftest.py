"""The client and the retrievers run against a live API: a real uvicorn on 127.0.0.1 with a real
redis-server, the fast hash embedder and an in-process worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from common.settings import Settings
from tests.api.live import LiveApi


@pytest.fixture
def live_api(settings: Settings, tmp_path: Path) -> Iterator[LiveApi]:
    server = LiveApi(settings, tmp_path / "live-vectors").start()
    server.start_worker()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api_key(live_api: LiveApi) -> str:
    return live_api.issue_key("acme").secret


def write_corpus(root: Path) -> Path:
    """A small folder of documents about distinct subjects (hidden files are skipped by an ingest)."""
    (root / "guide").mkdir(parents=True)
    (root / "tides.md").write_text("# Tides\n\nThe moon pulls the oceans; the tides follow it around the Earth.\n")
    (root / "guide" / "bread.md").write_text("# Bread\n\nKnead the dough, let it rise overnight, bake it hot.\n")
    (root / "guide" / "bees.txt").write_text("Bees dance to tell the hive where the flowers are.\n")
    (root / ".hidden").write_text("not a document")
    return root
