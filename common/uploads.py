"""Rules on what users upload, in one place: the size limit, the stored file name, the source key."""

from __future__ import annotations

import hashlib
import re

from common.errors import InvalidRequest, LimitExceeded

MAX_FILENAME_CHARS = 255
# A document's key within its knowledge base; bounded so that (kb, key) fits a MySQL unique index.
MAX_SOURCE_ID_CHARS = 512
# The key of an upload with no usable name: this prefix and the start of its content's SHA-256.
NAMELESS_KEY_PREFIX = "upload-"
NAMELESS_KEY_HEX_CHARS = 16
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_RUNS = re.compile(r"[\x00-\x1f\x7f]+")
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"[A-Za-z]:")
_DROPPED_SEGMENTS = frozenset({"", ".", ".."})


def upload_path(name: str | None) -> list[str]:
    """An uploaded file's name read as a relative path, as segments: `/` and `\\` both separate, control
    characters become `_`, and what could climb out or means nothing is dropped (empty, `.` and `..`
    segments, whence leading slashes; a leading drive such as `C:`). Empty for a nameless upload."""
    segments = [s for s in _SEPARATORS.split(_CONTROL_RUNS.sub("_", name or "")) if s.strip() not in _DROPPED_SEGMENTS]
    if len(segments) > 1 and _DRIVE.fullmatch(segments[0]):
        segments.pop(0)
    return segments


def safe_filename(name: str) -> str:
    """The stored file name of an upload: the last segment of its `upload_path`, without leading dots
    or surrounding spaces, at most MAX_FILENAME_CHARS; `document` when nothing is left."""
    segments = upload_path(name)
    cleaned = segments[-1].strip().lstrip(".") if segments else ""
    return (cleaned or "document")[:MAX_FILENAME_CHARS]


def upload_key(name: str | None, sha256: str) -> str:
    """The source key of an upload sent without one: its `upload_path` joined with `/` (so `a/b/c.md` and
    `x/c.md` are two documents); a nameless upload (`""`, `.`, `..`, no file name at all) is keyed by its
    content, `upload-<first 16 hex digits of its SHA-256>`, so that two of them never share a key (the same
    bytes again are the same document). A path over MAX_SOURCE_ID_CHARS keeps its end (the file name) after
    a hash of the whole path: still stable, still distinct."""
    path = "/".join(upload_path(name))
    if not path:
        return f"{NAMELESS_KEY_PREFIX}{sha256[:NAMELESS_KEY_HEX_CHARS]}"
    if len(path) <= MAX_SOURCE_ID_CHARS:
        return path
    tag = hashlib.sha256(path.encode("utf-8", "surrogatepass")).hexdigest()[:NAMELESS_KEY_HEX_CHARS]
    tail = path[len(path) - (MAX_SOURCE_ID_CHARS - len(tag) - 1):]
    cut = tail.find("/")
    return f"{tag}~{tail[cut:] if 0 <= cut < len(tail) - 1 else tail}"


def check_upload_size(filename: str | None, size_bytes: int, limit_bytes: int) -> None:
    """LimitExceeded when an upload (or what is read of it so far) is over `limits.max_upload_bytes`."""
    if size_bytes > limit_bytes:
        raise LimitExceeded(
            f'file "{filename}" is {size_bytes} bytes or more, above the limit of {limit_bytes} bytes '
            "(limits.max_upload_bytes); split it into smaller files"
        )


def check_source_id(source_id: str) -> str:
    """A document's source key as given (a relative path, a file name, an id of the caller's), checked:
    1 to MAX_SOURCE_ID_CHARS characters, no control characters, not only spaces, valid Unicode (no lone
    surrogate, which no database can store: Python's stand-in for a file name's byte that is not UTF-8)."""
    if not isinstance(source_id, str) or not source_id.strip():
        raise InvalidRequest("a source id must be a non-empty string")
    if len(source_id) > MAX_SOURCE_ID_CHARS:
        raise InvalidRequest(f"a source id is at most {MAX_SOURCE_ID_CHARS} characters, got {len(source_id)}")
    if _CONTROL_CHARS.search(source_id):
        raise InvalidRequest(f"source id {source_id[:80]!r} contains control characters")
    try:
        source_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            f"source id {source_id[:80]!r} is not valid Unicode (a lone surrogate, such as a file name's byte "
            "that is not UTF-8); send UTF-8 text, escaping such bytes (docvec ingest keys byte 0xff as \\xff)"
        ) from None
    return source_id
