"""Hostile and odd uploads: every one is rejected with the right `PermanentError`, or parses, quickly.

All files are generated here (no binary fixtures). A rejection must name the file and say what to do.
"""

from __future__ import annotations

import codecs
import gzip
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from common.errors import CorruptDocument, LimitExceeded, PermanentError, UnsupportedFormat
from common.parsing import parse_document
from common.settings import LimitsSettings
from tests.common.docgen import add_zip_member, make_docx, make_pdf, make_pptx, make_xlsx, replace_zip_member

pytestmark = pytest.mark.timeout(60)

_ADVICE = re.compile(r"upload|save it|re-save|re-export|remove the password|split it|fix it|fix the")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Case:
    filename: str
    make: Callable[[], bytes]
    error: type[PermanentError] | None  # None: odd but valid, must parse
    says: str = ""  # a fragment the message (or, for valid files, the text) must contain
    limits: LimitsSettings = field(default_factory=LimitsSettings)


def _pdf_text() -> bytes:
    return make_pdf(["Quarterly report\nRevenue grew", "Second page"])


def _docx_with_text() -> bytes:
    return make_docx(lambda document: document.add_paragraph("Body text " * 20))


CASES = [
    Case("zero.txt", lambda: b"", CorruptDocument, "document is empty"),
    Case("blank.txt", lambda: b" \n\t\r\n   \n", CorruptDocument, "document is empty"),
    Case("truncated.pdf", lambda: _pdf_text()[: len(_pdf_text()) // 2], CorruptDocument, "damaged or truncated PDF"),
    Case(
        "locked.pdf",
        lambda: make_pdf(["secret"], user_password="pw", algorithm="RC4-128"),
        UnsupportedFormat,
        "encrypted PDF: remove the password",
    ),
    Case("many_pages.pdf", lambda: make_pdf([""] * 60), LimitExceeded, "60 pages", LimitsSettings(max_pages=50)),
    Case("10000_pages.pdf", lambda: make_pdf([""] * 10_000), LimitExceeded, "10000 pages, above the limit of 2000"),
    Case("line_100mb.txt", lambda: b"word " * 20_000_000, LimitExceeded, "limits.max_text_chars"),
    Case("garbage.pdf", lambda: b"%PDF-1.7\n" + bytes(range(256)) * 64, CorruptDocument, "damaged or truncated PDF"),
    Case("textless.pdf", lambda: make_pdf(["", ""]), CorruptDocument, "needs OCR"),
    Case(
        "bomb.docx",
        lambda: add_zip_member(_docx_with_text(), "word/media/zeros.bin", bytes(8 * _MIB)),
        LimitExceeded,
        "zip bomb",
    ),
    Case(
        "big_unpacked.docx",
        lambda: add_zip_member(_docx_with_text(), "word/media/blob.bin", bytes(range(256)) * 4096),
        LimitExceeded,
        "limits.max_decompressed_bytes",
        LimitsSettings(max_decompressed_bytes=512 * 1024),
    ),
    Case("corrupt_zip.docx", lambda: b"PK\x03\x04" + b"\x14\x00" * 500, CorruptDocument, "damaged ZIP"),
    Case(
        "broken_xml.docx",
        lambda: replace_zip_member(_docx_with_text(), "word/document.xml", b"<w:document><unclosed"),
        CorruptDocument,
        "damaged Word (.docx)",
    ),
    Case("actually_text.xlsx", lambda: b"Just some notes,\nnot a spreadsheet.", None, "not a spreadsheet"),
    Case(
        "junk.txt",
        lambda: bytes((i * 7919 + 13) % 256 for i in range(8192)).replace(b"\x00", b"\x01"),
        UnsupportedFormat,
        "binary data",
    ),
    Case("latin1.txt", lambda: "café crème brûlée".encode("latin-1"), None, "café crème brûlée"),
    Case("utf16.txt", lambda: codecs.BOM_UTF16_LE + "ünïcode text".encode("utf-16-le"), None, "ünïcode text"),
    Case("nul.txt", lambda: b"hello\x00world\n" * 100, UnsupportedFormat, "NUL bytes"),
    Case(
        "huge_line.txt",
        lambda: b"x" * (2 * _MIB + 1),
        LimitExceeded,
        "limits.max_upload_bytes",
        LimitsSettings(max_upload_bytes=2 * _MIB),
    ),
    Case("long_line.txt", lambda: b"word " * (2 * _MIB), None, "word word"),
    Case("deep.html", lambda: b"<div>" * 100_000 + b"deep text" + b"</div>" * 100_000, None, "deep text"),
    Case(
        "scripts.html",
        lambda: b"<html><head><script>a()</script></head><body><script>b()</script><style>p{}</style></body></html>",
        CorruptDocument,
        "document is empty",
    ),
    Case("huge_attr.html", lambda: b'<html><p title="' + b"A" * (4 * _MIB) + b'">visible</p></html>', None, "visible"),
    # Regexes that backtracked: exponential in the comments before a tag, quadratic in a heading's brackets,
    # a link's opening parts or its trailing spaces (each of these took hours to days).
    Case("comments.html", lambda: b"<!---->" * 40 + b"<p>after the comments</p>", None, "after the comments"),
    Case("brackets.md", lambda: b"# " + b"[" * 1_000_000, None, "[[[[[[[["),
    Case("link_opens.md", lambda: b"# " + b"[a](" * 250_000 + b"\n\nbody", None, "[a]([a]("),
    Case("heading_spaces.md", lambda: b"# spaced" + b" " * 1_000_000 + b"out\n\nbody", None, "spaced"),
    Case("invalid.json", lambda: b'{\n  "a": 1,\n  "b": [1, 2,,]\n}', CorruptDocument, "line 3 column"),
    Case("deep.json", lambda: b"[" * 200_000 + b"]" * 200_000, CorruptDocument, "nested too deeply"),
    Case("records.jsonl", lambda: b'{"a": 1}\n{"a": 2,}\n{"a": 3}\n', CorruptDocument, "line 2"),
    Case("ragged.csv", lambda: b"name,age,city\nAnn,31\nBob,42,Oslo,extra\n,,\n", None, "column 4: extra"),
    Case("photo.png", lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64), UnsupportedFormat, "PNG image"),
    Case("notes.txt.gz", lambda: gzip.compress(b"hello " * 1000), UnsupportedFormat, "gzip archive"),
    Case("program.txt", lambda: b"\x7fELF\x02\x01\x01" + bytes(57), UnsupportedFormat, "ELF executable"),
    Case("binary.md", lambda: bytes(range(1, 256)) * 40, UnsupportedFormat, "binary data"),
    Case("old.doc", lambda: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504), UnsupportedFormat, "legacy Microsoft"),
    Case("empty.docx", lambda: make_docx(), CorruptDocument, "document is empty"),
    Case("empty_sheet.xlsx", lambda: make_xlsx({"Empty": []}), CorruptDocument, "document is empty"),
    Case("no_slides.pptx", lambda: make_pptx([]), CorruptDocument, "document is empty"),
    Case(
        "many_slides.pptx",
        lambda: make_pptx([("One", "a"), ("Two", "b"), ("Three", "c")]),
        LimitExceeded,
        "3 slides",
        LimitsSettings(max_pages=2),
    ),
]


def test_enough_hostile_cases() -> None:
    assert len(CASES) >= 25
    assert len({case.filename for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.filename for case in CASES])
def test_hostile_upload(case: Case) -> None:
    data = case.make()
    if case.error is None:
        document = parse_document(data, case.filename, limits=case.limits)
        assert case.says in document.text
        return
    with pytest.raises(PermanentError) as caught:
        parse_document(data, case.filename, limits=case.limits)
    assert type(caught.value) is case.error, caught.value.message
    message = caught.value.message
    assert f'"{case.filename}"' in message
    assert case.says in message
    assert _ADVICE.search(message), message
