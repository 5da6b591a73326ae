"""Rules on what users upload, in one place: the size limit, the stored file name, the source key."""

from __future__ import annotations

import re

from common.errors import InvalidRequest, LimitExceeded

MAX_FILENAME_CHARS = 255
# A document's key within its knowledge base; bounded so that (kb, key) fits a MySQL unique index.
MAX_SOURCE_ID_CHARS = 512
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]+")
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def safe_filename(name: str) -> str:
    """The last path component of an uploaded name, without control characters or separators."""
    base = re.split(r"[/\\]", name or "")[-1]
    cleaned = _UNSAFE_NAME_CHARS.sub("_", base).strip().lstrip(".") or "document"
    return cleaned[:MAX_FILENAME_CHARS]


def check_upload_size(filename: str | None, size_bytes: int, limit_bytes: int) -> None:
    """LimitExceeded when an upload (or what is read of it so far) is over `limits.max_upload_bytes`."""
    if size_bytes > limit_bytes:
        raise LimitExceeded(
            f'file "{filename}" is {size_bytes} bytes or more, above the limit of {limit_bytes} bytes '
            "(limits.max_upload_bytes); split it into smaller files"
        )


def check_source_id(source_id: str) -> str:
    """A document's source key as given (a relative path, a file name, an id of the caller's), checked:
    1 to MAX_SOURCE_ID_CHARS characters, no control characters, not only spaces."""
    if not isinstance(source_id, str) or not source_id.strip():
        raise InvalidRequest("a source id must be a non-empty string")
    if len(source_id) > MAX_SOURCE_ID_CHARS:
        raise InvalidRequest(f"a source id is at most {MAX_SOURCE_ID_CHARS} characters, got {len(source_id)}")
    if _CONTROL_CHARS.search(source_id):
        raise InvalidRequest(f"source id {source_id[:80]!r} contains control characters")
    return source_id
