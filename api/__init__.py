"""The HTTP API (FastAPI): knowledge bases, documents, tasks, search."""
