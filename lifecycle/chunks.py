"""A document's chunks as search serves them: those of its live parse version, in ordinal order, paged.

The database says which version is live (`document.parse_version`, as for `lifecycle.documents.search`);
the vector store may also hold older or newer versions' chunks, which are never shown here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from common.db import DocumentRecord, Repository
from vectordb.chunkstore import ChunkStore, StoredChunk


@dataclass(frozen=True, slots=True)
class ChunkPage:
    """Chunks `offset ..` of the `total` chunks of `document`'s live version `parse_version` (0: none yet)."""

    document: DocumentRecord
    parse_version: int
    total: int
    chunks: list[StoredChunk]


async def live_chunks(repo: Repository, chunks: ChunkStore, document: DocumentRecord, *, limit: int,
                      offset: int) -> ChunkPage:
    """A page of the chunks of `document`'s live parse version, in ordinal order."""
    version = document.parse_version
    if version <= 0:
        return ChunkPage(document, 0, 0, [])
    kb = await asyncio.to_thread(repo.kbs.get_by_id, document.kb_id)
    ordinals = await chunks.ordinals(kb.collection, document.id, version)
    page = await chunks.chunks_at(kb.collection, document.id, version, ordinals[offset : offset + limit])
    return ChunkPage(document, version, len(ordinals), page)
