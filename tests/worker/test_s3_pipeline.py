"""`storage.backend: s3` end to end: the API-side submit stores the blob in a real S3-protocol server
(moto's, on 127.0.0.1), the worker fetches it from there, and the document is indexed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from common.runtime import open_core
from common.settings import Settings
from lifecycle import documents as ingest
from tests.common.test_storage_s3 import _raw_client, _s3_settings, s3_endpoint  # noqa: F401 - fixture
from tests.conftest import make_settings
from tests.fakes import HashEmbedder
from tests.submit import submit_document
from tests.worker.helpers import running_worker, wait_for_status
from tests.worker.test_consumer import PROSE
from vectordb.chunkstore import ChunkStore


@pytest.fixture
def s3_settings(tmp_path: Path, redis_url: str, s3_endpoint: str) -> Settings:  # noqa: F811
    settings = make_settings(tmp_path / "data", redis_url)
    settings.storage = _s3_settings(s3_endpoint)
    return settings


@pytest.fixture
async def s3_core(s3_settings: Settings) -> AsyncIterator[Any]:
    async with open_core(s3_settings, embedder=HashEmbedder()) as core:
        yield core


async def test_documents_go_through_s3(s3_core: Any, s3_settings: Settings, s3_endpoint: str,  # noqa: F811
                                       vectors: Any) -> None:
    core = s3_core
    kb = await ingest.create_kb(core, "s3kb", tenant="default")
    document, task = await submit_document(core, kb, "geo.md", PROSE.encode())
    listed = await asyncio.to_thread(
        _raw_client(s3_endpoint).list_objects_v2, Bucket=s3_settings.storage.bucket
    )
    assert [obj["Key"] for obj in listed.get("Contents", [])] == [document.blob_key]
    assert not (Path(s3_settings.data_dir) / "blobs").exists(), "nothing went to the local store"
    async with running_worker(core, vectors):
        done = await wait_for_status(core, task.id)
    assert done.status == "done", done.error
    doc = await asyncio.to_thread(core.repo.documents.get, document.id)
    assert await ChunkStore(vectors).count_document(kb.collection, document.id) == doc.chunk_count > 0
