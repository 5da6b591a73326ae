"""The errors the client raises: one per kind of answer, each with the API's stable code and message."""

from __future__ import annotations


class DocvecClientError(Exception):
    """Base of every client error."""


class ApiError(DocvecClientError):
    """The API answered with an error (`{"error": {"code", "message"}}`)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(f"{status_code} {code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message


class InvalidRequestError(ApiError):
    """400 or 422: the request itself is wrong (a bad parameter, a malformed filter); the message says how."""


class AuthenticationError(ApiError):
    """401: no API key, or one that is invalid or revoked."""


class PermissionDenied(ApiError):
    """403: the key may not do this (an admin key is needed)."""


class NotFoundError(ApiError):
    """404: no such knowledge base, document or task for this key's tenant."""


class ConflictError(ApiError):
    """409: the object is in a state that does not allow this (a finished task cannot be cancelled)."""


class RequestTooLarge(ApiError):
    """413: over a size or count limit; the message names the setting."""


class ServiceUnavailable(ApiError):
    """503: a dependency of the API is down; retry later."""


class TaskTimeout(DocvecClientError):
    """`wait` ran out of time before every task finished."""


BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequestError, 401: AuthenticationError, 403: PermissionDenied, 404: NotFoundError,
    409: ConflictError, 413: RequestTooLarge, 422: InvalidRequestError, 503: ServiceUnavailable,
}


class ConnectionFailed(DocvecClientError):
    """The API could not be reached (not running, wrong URL, network down)."""
