"""Document parsers: bytes in, `ParsedDocument` (text sections with their heading paths) out.

`parse_document` is the entry point: it checks the upload size, sniffs the format from the content
(never from the name alone) and hands the data to the matching parser: PDF and the Office formats
by their binary signature, then JSON/JSONL, CSV, HTML, Markdown or plain text by the decoded text.
"""

from __future__ import annotations

from common.errors import CorruptDocument, LimitExceeded
from common.parsing.base import ParsedDocument, Parser, Section
from common.parsing.csv import CsvParser
from common.parsing.docx import DocxParser
from common.parsing.html import HtmlParser
from common.parsing.jsonfmt import JsonParser
from common.parsing.markdown import MarkdownParser
from common.parsing.pdf import PdfParser
from common.parsing.pptx import PptxParser
from common.parsing.sniff import (
    CSV,
    DAMAGED_ZIP,
    DOCX,
    HTML,
    JSON,
    JSONL,
    MARKDOWN,
    PDF,
    PPTX,
    XLSX,
    Sniffed,
    detect_binary_format,
    detect_document_format,
    sniff,
)
from common.parsing.text import TextParser
from common.parsing.xlsx import XlsxParser
from common.settings import LimitsSettings
from common.uploads import check_upload_size

__all__ = ["ParsedDocument", "Parser", "Section", "Sniffed", "parse_document", "sniff"]


def parse_document(
    data: bytes, filename: str, *, limits: LimitsSettings, pages: tuple[int, int] | None = None
) -> ParsedDocument:
    """Parse one uploaded document; raise a `PermanentError` subclass if it cannot be used.

    `LimitExceeded` above `limits.max_upload_bytes`, `max_pages` or `max_decompressed_bytes`;
    `CorruptDocument` for an empty, damaged or undecodable document; `UnsupportedFormat` for binary
    formats docvec does not read (images, archives, executables...) and encrypted PDFs.
    """
    check_upload_size(filename, len(data), limits.max_upload_bytes)
    if not data.strip():
        raise _empty(filename, "document is empty")
    document = _parse(data, filename, limits, pages)
    if len(document.text) > limits.max_text_chars:
        raise LimitExceeded(
            f'file "{filename}" holds {len(document.text)} characters of text, above the limit of '
            f"{limits.max_text_chars} (limits.max_text_chars); split it into smaller files"
        )
    if not any(section.text.strip() for section in document.sections):
        raise _empty(filename, "document is empty (no readable text)")
    return document


def _parse(data: bytes, filename: str, limits: LimitsSettings, pages: tuple[int, int] | None) -> ParsedDocument:
    binary_parsers: dict[str, Parser] = {
        PDF: PdfParser(limits),
        DOCX: DocxParser(limits),
        XLSX: XlsxParser(limits),
        PPTX: PptxParser(limits),
    }
    document_format = detect_document_format(data)
    if document_format == PDF:
        return PdfParser(limits).parse(data, filename, pages=pages)
    if document_format is not None:
        return binary_parsers[document_format].parse(data, filename)
    if detect_binary_format(data) == DAMAGED_ZIP:
        raise CorruptDocument(
            f'file "{filename}" is a damaged ZIP file (an Office document or archive that is truncated or '
            "corrupt); open it in its application, re-save it and upload it again"
        )
    return _parse_text(sniff(data, filename), filename)


def _parse_text(sniffed: Sniffed, filename: str) -> ParsedDocument:
    if sniffed.format == JSON:
        return JsonParser().parse_text(sniffed.text, filename)
    if sniffed.format == JSONL:
        return JsonParser(lines=True).parse_text(sniffed.text, filename)
    if sniffed.format == CSV:
        return CsvParser().parse_text(sniffed.text, filename)
    if sniffed.format == HTML:
        return HtmlParser().parse_text(sniffed.text, filename)
    if sniffed.format == MARKDOWN:
        return MarkdownParser().parse_text(sniffed.text, filename)
    return TextParser().parse_text(sniffed.text, filename)


def _empty(filename: str, what: str) -> CorruptDocument:
    return CorruptDocument(
        f'file "{filename}": {what}; upload a file that contains text (a scanned PDF needs OCR first)',
        code="empty_document",
    )
