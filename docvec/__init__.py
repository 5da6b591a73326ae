"""The docvec Python client: `Client` (blocking) and `AsyncClient` over the HTTP API, typed results, and
retrievers for LangChain (`docvec.langchain`) and LlamaIndex (`docvec.llamaindex`) as optional extras."""

from docvec.client import AsyncClient, Client, IngestResult
from docvec.errors import (
    ApiError,
    AuthenticationError,
    ConflictError,
    ConnectionFailed,
    DocvecClientError,
    InvalidRequestError,
    NotFoundError,
    PermissionDenied,
    RequestTooLarge,
    ServiceUnavailable,
    TaskTimeout,
)
from docvec.models import Chunk, Document, Hit, KnowledgeBase, Progress, Submitted, SyncPlan, Task, TaskEvent

__all__ = [
    "ApiError", "AsyncClient", "AuthenticationError", "Chunk", "Client", "ConflictError", "ConnectionFailed",
    "Document", "DocvecClientError", "Hit", "IngestResult", "InvalidRequestError", "KnowledgeBase", "NotFoundError",
    "PermissionDenied", "Progress", "RequestTooLarge", "ServiceUnavailable", "Submitted", "SyncPlan", "Task",
    "TaskEvent", "TaskTimeout",
]
