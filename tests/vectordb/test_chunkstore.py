"""Chunk ids: stable per (document, parse version, ordinal, text); identical texts stay distinct."""

from __future__ import annotations

from vectordb.chunkstore import chunk_id


def test_chunk_ids_are_stable_and_distinguish_position_and_version() -> None:
    base = chunk_id("doc", 1, 0, "same text")
    assert base == chunk_id("doc", 1, 0, "same text")
    assert base != chunk_id("doc", 1, 1, "same text"), "identical texts at two ordinals are both kept"
    assert base != chunk_id("doc", 2, 0, "same text"), "a new parse version writes new ids"
    assert base != chunk_id("other", 1, 0, "same text")
    assert base != chunk_id("doc", 1, 0, "other text")
    assert len(base) == 32
