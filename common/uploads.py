"""Rules on what users upload, in one place: the size limit, the stored file name."""

from __future__ import annotations

import re

from common.errors import LimitExceeded

MAX_FILENAME_CHARS = 255
_UNSAFE_NAME_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]+")


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
