"""What determines a chunk's vector, as one key: the stored vector of an unchanged chunk is reused.

A chunk's vector depends on the model (its name and dimension), the title weighting, the chunk's title
(its heading path) and its text, and on nothing else: `embedding_key` hashes exactly those. The vectors
live in the database (`common.db.embeddings`), so every worker of a fleet shares them and they survive
restarts; a changed chunk gets a new key, a document edited in one paragraph re-embeds a few chunks.
"""

from __future__ import annotations

import hashlib


def embedding_key(model: str, dim: int, title_weight: float, title: str, text: str) -> str:
    """A SHA-256 hex digest of everything a chunk's vector is computed from."""
    h = hashlib.sha256()
    for part in (model, str(dim), repr(float(title_weight)), title, text):
        encoded = part.encode("utf-8", "surrogatepass")
        h.update(len(encoded).to_bytes(8, "little"))  # length-prefixed: no two splits of one string collide
        h.update(encoded)
    return h.hexdigest()
