"""Checks shared by the Office Open XML parsers (DOCX, XLSX, PPTX), which are ZIP containers.

`check_zip` runs BEFORE any library opens the file: it reads only the ZIP's central directory (no
decompression) and rejects zip bombs by the members' declared sizes. Python's `zipfile` never
inflates a member past its declared size (it truncates and then fails the CRC check), so the declared
sizes bound what the parsers can decompress.
"""

from __future__ import annotations

import io
import zipfile

from common.errors import CorruptDocument, LimitExceeded
from common.settings import LimitsSettings

MAX_COMPRESSION_RATIO = 200
"""Office XML compresses about 5-30x; a large member squeezed beyond this is a zip bomb."""
_RATIO_CHECK_FROM_BYTES = 1024 * 1024
"""Members smaller than this are not ratio-checked (tiny, highly repetitive XML parts are normal)."""
MAX_MEMBERS = 10_000


def check_zip(data: bytes, filename: str, kind: str, limits: LimitsSettings) -> None:
    """Raise `CorruptDocument` for a damaged ZIP and `LimitExceeded` for a zip bomb; read nothing else."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise damaged(filename, kind, exc) from exc
    if len(members) > MAX_MEMBERS:
        raise LimitExceeded(
            f'file "{filename}" is a {kind} file with {len(members)} parts, above the limit of {MAX_MEMBERS}; '
            "re-save it from its application or split it"
        )
    total_bytes = sum(member.file_size for member in members)
    if total_bytes > limits.max_decompressed_bytes:
        raise LimitExceeded(
            f'file "{filename}" is a {kind} file that unpacks to {total_bytes} bytes, above the limit of '
            f"{limits.max_decompressed_bytes} bytes (limits.max_decompressed_bytes); split it into smaller files"
        )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size >= _RATIO_CHECK_FROM_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise LimitExceeded(
                f'file "{filename}" is a {kind} file whose part "{member.filename}" is compressed {ratio:.0f}:1 '
                f"(above {MAX_COMPRESSION_RATIO}:1, a zip bomb); re-save it from its application"
            )


def damaged(filename: str, kind: str, exc: BaseException) -> CorruptDocument:
    """The error for an Office file that its library could not read."""
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return CorruptDocument(
        f'file "{filename}" is a damaged {kind} file ({reason}); open it in its application, '
        "re-save it and upload it again"
    )
