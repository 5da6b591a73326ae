"""The one owner of a document's life (state machine and every change to a chunk set) and of garbage.

Layering: uses `common` and the vector-store client (`vectordb.chunkstore`); `api`, `worker` and the
CLI call it; nothing else changes what a knowledge base holds.
"""
