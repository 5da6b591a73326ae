"""Format detection and text decoding (`common/parsing/sniff.py`)."""

from __future__ import annotations

import codecs
import io
import random
import zipfile

import pytest

from common.errors import CorruptDocument, UnsupportedFormat
from common.parsing.sniff import HTML, MARKDOWN, TEXT, decode_text, detect_binary_format, sniff


def _zip(*names: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in names:
            archive.writestr(name, "<xml/>")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "PDF"),
        (_zip("[Content_Types].xml", "word/document.xml"), "Word (.docx)"),
        (_zip("[Content_Types].xml", "xl/workbook.xml"), "Excel (.xlsx)"),
        (_zip("[Content_Types].xml", "ppt/presentation.xml"), "PowerPoint (.pptx)"),
        (_zip("notes.txt"), "ZIP archive"),
        (b"PK\x03\x04garbage that is no zip", "ZIP archive (damaged)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "PNG image"),
        (b"\x1f\x8b\x08\x00\x00\x00", "gzip archive"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00", "legacy Microsoft Office (.doc/.xls/.ppt)"),
    ],
)
def test_binary_formats_are_recognised_and_rejected_by_name(data: bytes, expected: str) -> None:
    assert detect_binary_format(data) == expected
    with pytest.raises(UnsupportedFormat) as caught:
        sniff(data, "report.txt")  # the name lies; the content decides
    assert expected in caught.value.message
    assert '"report.txt"' in caught.value.message


def test_nul_bytes_mean_binary() -> None:
    with pytest.raises(UnsupportedFormat) as caught:
        sniff(b"hello\x00world\x00\x01\x02", "x.txt")
    assert caught.value.message.startswith('file "x.txt" is not text: it contains binary data')


def test_random_binary_junk_is_rejected() -> None:
    junk = bytes((i * 7919 + 13) % 256 for i in range(4096)).replace(b"\x00", b"\x01")
    with pytest.raises(UnsupportedFormat, match="binary data"):
        sniff(junk, "x.bin")


@pytest.mark.parametrize(("text", "encoding"), [
    ("Café au lait, crème brûlée et résumé de l'été à Zürich.\nÇa coûte cher.", "latin-1"),
    ("Der Müller aß große Äpfel über dem Fluß.", "latin-1"),
    ("“Smart quotes” — and an em dash… plus €5 for the café.", "cp1252"),
    ("naïve", "cp1252"),
    ("Zażółć gęślą jaźń. Polski tekst w kodowaniu Windows-1250, który ma ogonki.", "cp1250"),
    ("Привет, это русский текст в кодировке Windows-1251.", "cp1251"),
    ("日本語のテキストファイルです。東京は日本の首都です。", "shift_jis"),
    ("中文文本文件，使用GBK编码保存。北京是中国的首都。", "gbk"),
    ("A UTF-16 file with a byte-order mark: ünïcödé", "utf-16"),
])
def test_text_in_a_legacy_encoding_is_decoded_by_detection(text: str, encoding: str) -> None:
    assert sniff(text.encode(encoding), "notes.txt").text == text


def test_text_whose_encoding_cannot_be_told_is_corrupt_with_position() -> None:
    rng = random.Random(1)
    data = bytes(rng.choice([*range(0x80, 0x100), 0x20]) for _ in range(2000))
    with pytest.raises(CorruptDocument) as caught:
        sniff(data, "menu.txt")
    assert "not valid UTF-8" in caught.value.message and "could not be detected" in caught.value.message
    assert "offset 0" in caught.value.message
    assert "re-save it as UTF-8" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        "naïve text ✓".encode(),
        codecs.BOM_UTF8 + "naïve text ✓".encode(),
        codecs.BOM_UTF16_LE + "naïve text ✓".encode("utf-16-le"),
        codecs.BOM_UTF16_BE + "naïve text ✓".encode("utf-16-be"),
    ],
)
def test_decodes_utf8_and_utf16_with_bom(data: bytes) -> None:
    assert decode_text(data, "x.txt") == "naïve text ✓"


def test_utf16_without_bom_is_rejected() -> None:
    with pytest.raises(UnsupportedFormat):
        decode_text("plain words".encode("utf-16-le"), "x.txt")


def test_newlines_are_normalized() -> None:
    assert decode_text(b"a\r\nb\rc\n", "x.txt") == "a\nb\nc\n"


@pytest.mark.parametrize(
    ("content", "filename", "expected"),
    [
        ("<!DOCTYPE html><html><body><p>x</p></body></html>", "page.txt", HTML),
        ("  <!-- generated -->\n<html lang='en'><p>x</p></html>", "noext", HTML),
        ("<?xml version='1.0'?>\n<html><body>x</body></html>", "a.xhtml", HTML),
        ("<?xml version='1.0'?>\n<?xml-stylesheet href='a.xsl'?>\n<x:html xmlns:x='http://www.w3.org/1999/xhtml'>",
         "page", HTML),
        ("<?xml version='1.0'?>\n<!-- toc -->\n<body xmlns='http://www.w3.org/1999/xhtml'><p>x</p></body>", "b", HTML),
        ("<p>A fragment with <b>one</b> tag.</p>", "fragment.html", HTML),  # an HTML name that starts with a tag
        ("<p>A fragment with <b>one</b> tag.</p>", "fragment.txt", TEXT),
        ("<div><p>one</p><p>two</p><p>three</p><ul><li>a</li><li>b</li></ul><br></div>", "frag", HTML),
        ("# Title\n\nSome text.", "notes.txt", MARKDOWN),
        ("Title\n=====\n\nSome text.", "notes", MARKDOWN),
        ("just words, no headings", "README.md", MARKDOWN),
        ("Some <b>bold</b> words in a sentence that is mostly prose and not markup at all.", "a", TEXT),
        ("Plain prose.\n\nAnother paragraph.", "page.html", TEXT),  # the name does not decide
    ],
)
def test_text_flavour_is_detected_from_content(content: str, filename: str, expected: str) -> None:
    assert sniff(content.encode(), filename).format == expected


def test_markdown_file_with_inline_html_stays_markdown() -> None:
    content = "# Doc\n\n" + "<p>para</p><br><div>x</div>" * 10
    assert sniff(content.encode(), "doc.md").format == MARKDOWN
