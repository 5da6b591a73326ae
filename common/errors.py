"""docvec's error tree. Every error carries a stable `code` and an HTTP status; one API handler maps them.

Workers decide retry vs fail by type: `PermanentError` fails a task at once; `DependencyUnavailable`
(Redis, the database, object storage, the vector store or an embedding endpoint is down) is waited out
and never counts as an attempt; any other `TransientError` or unknown exception is retried after a
backoff, up to the attempt limit.
"""

from __future__ import annotations


class DocvecError(Exception):
    """Base of every docvec error."""

    code: str = "internal"
    http_status: int = 500

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class PermanentError(DocvecError):
    """Bad input that no retry can fix: corrupt file, unsupported type, limit exceeded."""

    code = "permanent"
    http_status = 422


class UnsupportedFormat(PermanentError):
    code = "unsupported_format"
    http_status = 415


class LimitExceeded(PermanentError):
    code = "limit_exceeded"
    http_status = 413


class CorruptDocument(PermanentError):
    code = "corrupt_document"
    http_status = 422


class TransientError(DocvecError):
    """A dependency is unavailable or slow (Redis, storage, vector store, model, timeouts): retry later."""

    code = "unavailable"
    http_status = 503


class DependencyUnavailable(TransientError):
    """A service docvec depends on is unreachable, timing out or answering 5xx: never the document's
    fault. `dependency` names it (see `common.dependencies.Dependency`); a worker waits for it to come
    back instead of spending the task's attempts."""

    code = "dependency_unavailable"

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message, code=f"{dependency}_unavailable")  # e.g. "vector_store_unavailable"
        self.dependency = dependency


class StageTimeout(TransientError):
    code = "stage_timeout"
    http_status = 504


class Cancelled(DocvecError):
    """The task was cancelled by a user; the worker stops and cleans up."""

    code = "cancelled"
    http_status = 409


class InvalidRequest(DocvecError):
    code = "invalid_request"
    http_status = 400


class InvalidParameter(InvalidRequest):
    """A request parameter that is well-formed but not valid where it is given (422, as the API's
    validation errors)."""

    http_status = 422


class NotFound(DocvecError):
    code = "not_found"
    http_status = 404


class Conflict(DocvecError):
    code = "conflict"
    http_status = 409


class Unauthorized(DocvecError):
    code = "unauthorized"
    http_status = 401


class Forbidden(DocvecError):
    code = "forbidden"
    http_status = 403
