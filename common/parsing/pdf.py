"""PDF via pypdf: one section per paragraph of each page, with its 1-based page number.

The page count is checked against `limits.max_pages` before any text is extracted. An encrypted PDF
is opened with the empty password (owner-password-only files are readable); otherwise it is rejected.
pypdf raises many exception types on damaged input (its own, `ValueError`, `KeyError`, `zlib.error`,
`RecursionError`...): all of them mean the file cannot be read, so they become `CorruptDocument`.
"""

from __future__ import annotations

import io

from pypdf import PdfReader
from pypdf.errors import FileNotDecryptedError, PyPdfError

from common.errors import CorruptDocument, LimitExceeded, UnsupportedFormat
from common.parsing.base import ParsedDocument
from common.parsing.builder import DocumentBuilder
from common.parsing.sniff import PDF
from common.parsing.text import paragraph_spans
from common.settings import LimitsSettings


class PdfParser:
    """Parser for PDF documents (text layer only: scanned pages without text come out empty)."""

    format = PDF

    def __init__(self, limits: LimitsSettings) -> None:
        self._limits = limits

    def parse(self, data: bytes, filename: str, *, pages: tuple[int, int] | None = None) -> ParsedDocument:
        """Parse the whole document, or only pages `pages` = (first, last), 1-based and inclusive (a
        page-range task of a large PDF; the page-count limit still applies to the whole file)."""
        reader = self._open(data, filename)
        page_count = self._checked_page_count(reader, filename)
        first, last = (1, page_count) if pages is None else (max(1, pages[0]), min(page_count, pages[1]))
        if pages is not None and first > last:
            raise CorruptDocument(
                f'file "{filename}" has {page_count} pages; the requested pages {pages[0]}-{pages[1]} do not exist'
            )
        builder = DocumentBuilder()
        for number in range(first, last + 1):
            page_text = _page_text(reader, number, filename)
            for start, end in paragraph_spans(page_text):
                builder.section(page_text[start:end], page=number)
        return builder.build(self.format, title=_title(reader, builder), pages=page_count)

    def page_count(self, data: bytes, filename: str) -> int:
        """The number of pages, checked against `limits.max_pages`, without extracting any text."""
        return self._checked_page_count(self._open(data, filename), filename)

    def _open(self, data: bytes, filename: str) -> PdfReader:
        try:
            reader = PdfReader(io.BytesIO(data), strict=False)
            self._decrypt(reader, filename)
            _ = len(reader.pages)  # walks the page tree: a damaged one fails here, not later
        except (UnsupportedFormat, CorruptDocument):
            raise
        except Exception as exc:  # any failure inside pypdf means "unreadable PDF"; see module docstring
            raise _damaged(filename, exc) from exc
        return reader

    def _checked_page_count(self, reader: PdfReader, filename: str) -> int:
        page_count = len(reader.pages)
        if page_count > self._limits.max_pages:
            raise LimitExceeded(
                f'file "{filename}" is a PDF with {page_count} pages, above the limit of '
                f"{self._limits.max_pages} pages (limits.max_pages); split it into smaller files"
            )
        return page_count

    @staticmethod
    def _decrypt(reader: PdfReader, filename: str) -> None:
        if not reader.is_encrypted:
            return
        try:
            opened = reader.decrypt("")
        except (FileNotDecryptedError, NotImplementedError, PyPdfError) as exc:
            raise _encrypted(filename) from exc
        if not opened:
            raise _encrypted(filename)


def _page_text(reader: PdfReader, number: int, filename: str) -> str:
    try:
        text = reader.pages[number - 1].extract_text()
    except Exception as exc:  # as in `parse`: pypdf's failure modes on damaged content are open-ended
        raise _damaged(filename, exc, page=number) from exc
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _title(reader: PdfReader, builder: DocumentBuilder) -> str:
    try:
        metadata_title = reader.metadata.title if reader.metadata is not None else None
    except Exception:  # damaged metadata is not worth failing a readable PDF for
        metadata_title = None
    if isinstance(metadata_title, str) and metadata_title.strip():
        return metadata_title
    return builder.sections[0].text.split("\n", 1)[0] if builder.sections else ""


def _encrypted(filename: str) -> UnsupportedFormat:
    return UnsupportedFormat(
        f'file "{filename}" is an encrypted PDF: remove the password (print or save it unprotected) '
        "and upload it again",
        code="encrypted_document",
    )


def _damaged(filename: str, exc: BaseException, page: int | None = None) -> CorruptDocument:
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    where = f" at page {page}" if page is not None else ""
    return CorruptDocument(
        f'file "{filename}" is a damaged or truncated PDF{where} ({reason}); re-export or re-download it '
        "and upload it again"
    )
