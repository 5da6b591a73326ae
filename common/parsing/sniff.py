"""Detect a document's format from its bytes (never trusting the file name alone) and decode text.

Order of checks: known binary signatures (PDF, ZIP/Office, legacy Office, images, archives, executables),
then text decoding (UTF-8 with or without BOM, UTF-16/UTF-32 with BOM), then the text flavour
(JSON/JSONL and CSV by content or name; HTML and XHTML by content, or by name when the content
starts with a tag; Markdown by name or by headings in the content; plain text otherwise). The name
only ever chooses between text flavours: a file whose bytes are binary is never read as text because
of its name, and vice versa.

Binary data yields `UnsupportedFormat`; bytes that look like text but are not valid in their encoding
yield `CorruptDocument`. Both messages name the file and say what to do.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
from dataclasses import dataclass

from charset_normalizer import from_bytes
from charset_normalizer.md import mess_ratio

from common.errors import CorruptDocument, UnsupportedFormat

TEXT = "text"
MARKDOWN = "markdown"
HTML = "html"
CSV = "csv"
JSON = "json"
JSONL = "jsonl"
PDF = "pdf"
DOCX = "docx"
XLSX = "xlsx"
PPTX = "pptx"

# Binary formats docvec parses, keyed by the name `detect_binary_format` gives them.
_PARSEABLE_BINARY = {"PDF": PDF, "Word (.docx)": DOCX, "Excel (.xlsx)": XLSX, "PowerPoint (.pptx)": PPTX}
DAMAGED_ZIP = "ZIP archive (damaged)"

# (signature, human-readable format). Checked against the start of the data, longest first where it
# matters. ZIP is handled separately because the container's members say which format it is.
_BINARY_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "PDF"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Microsoft Office (.doc/.xls/.ppt)"),
    (b"{\\rtf", "RTF"),
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"II*\x00", "TIFF image"),
    (b"MM\x00*", "TIFF image"),
    (b"\x1f\x8b", "gzip archive"),
    (b"BZh", "bzip2 archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\x7fELF", "ELF executable"),
    (b"\x00asm", "WebAssembly binary"),
    (b"SQLite format 3\x00", "SQLite database"),
)
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")

# Byte-order marks, longest first: the UTF-32-LE BOM starts with the UTF-16-LE one.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Control characters other than tab, newline, vertical tab, form feed and carriage return.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_MAX_CONTROL_RATIO = 0.05
_SNIFF_CHARS = 64 * 1024
_DETECT_BYTES = 256 * 1024  # what encoding detection reads of a file that is not UTF-8

# A DOCTYPE or <html> root after comments and processing instructions (the XML declaration,
# <?xml-stylesheet?>); the root may be XHTML under a namespace prefix (<x:html>).
# Possessive (`*+`): comments may be split many ways ("<!----><!---->" is one comment or two), and a failed
# match would try every split (exponential in the number of comments).
_HTML_START = re.compile(r"\A(?:\s|<!--.*?-->|<\?[^>]*>)*+<(?:!doctype\s+html|(?:[\w.-]+:)?html[\s>])", re.I | re.S)
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[\s?]", re.I)
_XHTML_MARK = re.compile(r"http://www\.w3\.org/1999/xhtml|application/xhtml\+xml|//DTD XHTML", re.I)
_HTML_NAMES = (".html", ".htm", ".xhtml", ".xht")
_STARTS_WITH_TAG = re.compile(r"\A\s*<[a-z!?]", re.I)
_HTML_TAG = re.compile(
    r"</?(?:html|head|body|div|span|p|a|br|hr|table|tr|td|th|ul|ol|li|h[1-6]|section|article|"
    r"header|footer|nav|main|img|script|style|meta|link|form|input|button|pre|code|strong|em|b|i)"
    r"(?:\s[^<>]*)?/?>",
    re.I,
)
_MIN_HTML_TAGS = 8
_MIN_HTML_TAG_DENSITY = 0.15
"""Share of characters inside known HTML tags above which an unlabelled file is treated as HTML."""

_MARKDOWN_NAMES = (".md", ".markdown", ".mdown", ".mkd")
_JSON_NAMES = (".json", ".jsonl", ".ndjson", ".geojson")
_CSV_NAMES = (".csv", ".tsv", ".tab")
_CSV_DELIMITERS = (",", "\t", ";", "|")
_CSV_MIN_LINES = 3
"""Lines (header included) an unlabelled file needs, all with the same delimiter count, to be CSV."""
_CSV_SNIFF_LINES = 20
# A setext underline's line is read once (`[^\n]*+`), not re-split around each of its characters.
_MARKDOWN_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+\S|^(?=[^\n]*\S)[^\n]*+\n {0,3}(?:=+|-{2,})[ \t]*$", re.M)


@dataclass(frozen=True, slots=True)
class Sniffed:
    """The detected format of a text document and its decoded text."""

    format: str
    text: str


def sniff(data: bytes, filename: str) -> Sniffed:
    """Detect the format of a text document and decode it; raise `UnsupportedFormat`/`CorruptDocument`.

    Binary data (including PDF and Office files, which `parse_document` routes to their own parsers
    via `detect_document_format` before calling this) raises `UnsupportedFormat` naming the format.
    """
    binary_format = detect_binary_format(data)
    if binary_format is not None:
        raise UnsupportedFormat(
            f'file "{filename}" is a {binary_format} file, which docvec cannot parse as text; '
            "upload PDF, Word, Excel, PowerPoint, CSV, JSON, plain text, Markdown or HTML"
        )
    text = decode_text(data, filename)
    return Sniffed(format=detect_data_format(text, filename) or detect_text_format(text, filename), text=text)


def detect_document_format(data: bytes) -> str | None:
    """The parseable binary format (PDF, DOCX, XLSX, PPTX) `data` is, or None for anything else."""
    binary_format = detect_binary_format(data)
    return _PARSEABLE_BINARY.get(binary_format) if binary_format is not None else None


def detect_binary_format(data: bytes) -> str | None:
    """Name the binary format `data` starts with, or None if no known signature matches."""
    for signature, name in _BINARY_SIGNATURES:
        if data.startswith(signature):
            return name
    if data.startswith(_ZIP_SIGNATURES):
        return _zip_flavour(data)
    return None


def _zip_flavour(data: bytes) -> str:
    """Tell Office Open XML / OpenDocument files from other ZIPs by their member names (no decompression)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return DAMAGED_ZIP
    if any(name.startswith("word/") for name in names):
        return "Word (.docx)"
    if any(name.startswith("xl/") for name in names):
        return "Excel (.xlsx)"
    if any(name.startswith("ppt/") for name in names):
        return "PowerPoint (.pptx)"
    if "mimetype" in names:
        return "OpenDocument"
    return "ZIP archive"


def decode_text(data: bytes, filename: str) -> str:
    """Decode `data` as UTF-8 (BOM optional), UTF-16/32 with a BOM, or a detected legacy encoding;
    newlines become "\\n".

    Text that is not UTF-8 and has no BOM is decoded in the legacy encoding it is detected to be in
    (`_legacy_decode`). Raises `UnsupportedFormat` for binary data (NUL bytes, many control characters) and
    `CorruptDocument` for text whose encoding cannot be told.
    """
    encoding = "utf-8"
    body = data
    for bom, bom_encoding in _BOMS:
        if data.startswith(bom):
            encoding, body = bom_encoding, data[len(bom) :]
            break
    else:
        if b"\x00" in data:
            raise _binary(filename, "NUL bytes")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        if _looks_binary(body):
            raise _binary(filename, "bytes that are not text") from exc
        legacy = _legacy_decode(body) if encoding == "utf-8" and body is data else None
        if legacy is None:
            raise CorruptDocument(
                f'file "{filename}" is not valid {encoding.upper()} text (byte 0x{body[exc.start]:02x} at '
                f"offset {exc.start}) and its encoding could not be detected; re-save it as UTF-8",
                code="invalid_encoding",
            ) from exc
        text = legacy
    sample = text[:_SNIFF_CHARS]
    if sample and len(_CONTROL_CHARS.findall(sample)) / len(sample) > _MAX_CONTROL_RATIO:
        raise _binary(filename, "control characters")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _legacy_decode(data: bytes) -> str | None:
    """Text in a legacy encoding (Windows-1252, Latin-1, Shift-JIS, GBK, Windows-1251...), detected by
    charset-normalizer; None when nothing decodes it plausibly. Windows-1252 (the usual encoding of
    Western text, a superset of Latin-1's printable range) wins over the detected encoding when it reads
    the text at least as cleanly: short Western texts fit several single-byte code pages equally well."""
    sample = data[:_DETECT_BYTES]
    best = from_bytes(sample).best()
    candidates = [] if best is None else [best.encoding]
    try:
        western = sample.decode("cp1252")
    except UnicodeDecodeError:
        western = None
    if western is not None and (best is None or mess_ratio(western, 1.0) <= mess_ratio(str(best), 1.0) + 0.01):
        candidates.insert(0, "cp1252")
    for encoding in candidates:
        try:
            return data.decode(encoding)
        except (UnicodeDecodeError, LookupError):
            continue
    return None


def detect_text_format(text: str, filename: str) -> str:
    """HTML if the content says so (XHTML too: an XML declaration and the XHTML namespace, DOCTYPE or
    media type), or if an HTML name (.html, .xhtml...) starts with a tag; Markdown by name or
    headings; plain text otherwise."""
    sample = text[:_SNIFF_CHARS]
    is_markdown_name = filename.lower().endswith(_MARKDOWN_NAMES)
    if _HTML_START.match(sample):
        return HTML
    if _XML_DECLARATION.match(sample) and _XHTML_MARK.search(sample):
        return HTML
    if filename.lower().endswith(_HTML_NAMES) and _STARTS_WITH_TAG.match(sample):
        return HTML
    if not is_markdown_name and _dense_in_html_tags(sample):
        return HTML
    if is_markdown_name or _MARKDOWN_HEADING.search(sample):
        return MARKDOWN
    return TEXT


def detect_data_format(text: str, filename: str) -> str | None:
    """JSON/JSONL by content (a leading "{" or "[") or name; CSV by name or a steady delimiter; else None.

    Only cheap checks on the start of the text: a JSON candidate that turns out invalid is reported by
    the JSON parser (with line and column), not silently read as plain text.
    """
    name = filename.lower()
    head = text[:_SNIFF_CHARS].lstrip("\ufeff \t\n")
    if name.endswith((".jsonl", ".ndjson")):
        return JSONL
    if name.endswith(_JSON_NAMES) or head.startswith("{") or (head.startswith("[") and _ends_like_json(text)):
        return JSON
    if name.endswith(_CSV_NAMES) or csv_delimiter(text) is not None:
        return CSV
    return None


def _ends_like_json(text: str) -> bool:
    return text[-_SNIFF_CHARS:].rstrip().endswith(("]", "}"))


def csv_delimiter(text: str) -> str | None:
    """The delimiter that splits the first lines into the same number (>= 1) of fields, if any.

    A quick count of delimiters per line (quotes ignored), so prose with the odd comma is not mistaken
    for CSV: every one of the first lines (at least `_CSV_MIN_LINES`) must have the same count.
    """
    lines = [line for line in text[:_SNIFF_CHARS].split("\n")[:_CSV_SNIFF_LINES] if line.strip()]
    if len(text) > _SNIFF_CHARS and len(lines) > 1:
        lines.pop()  # the sample may end mid-line
    if len(lines) < _CSV_MIN_LINES or lines[0].lstrip().startswith(("#", "<")):
        return None
    for delimiter in _CSV_DELIMITERS:
        counts = {line.count(delimiter) for line in lines}
        if len(counts) == 1 and counts.pop() >= 1:
            return delimiter
    return None


def _dense_in_html_tags(sample: str) -> bool:
    tags = _HTML_TAG.findall(sample)
    if len(tags) < _MIN_HTML_TAGS:
        return False
    return sum(len(tag) for tag in tags) / len(sample) >= _MIN_HTML_TAG_DENSITY


def _looks_binary(data: bytes) -> bool:
    sample = data[:_SNIFF_CHARS]
    non_text = sum(1 for byte in sample if byte < 0x09 or 0x0E <= byte < 0x20 or byte == 0x7F)
    return non_text / max(len(sample), 1) > _MAX_CONTROL_RATIO


def _binary(filename: str, what: str) -> UnsupportedFormat:
    return UnsupportedFormat(
        f'file "{filename}" is not text: it contains binary data ({what}); '
        "save it as UTF-8 text, or upload PDF, Word, Excel, PowerPoint, CSV, JSON, Markdown or HTML",
        code="binary_data",
    )
