"""Shared building blocks: settings, keys, errors, db, queue, storage, parsing, chunking, embedding.

`common` imports none of docvec's other packages.
"""
