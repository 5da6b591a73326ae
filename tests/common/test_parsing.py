"""Parsers (`common/parsing/`): text, Markdown, HTML and the `parse_document` entry point."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.errors import CorruptDocument, LimitExceeded, UnsupportedFormat
from common.parsing import parse_document
from common.parsing.base import ParsedDocument
from common.parsing.html import HtmlParser
from common.parsing.markdown import MarkdownParser
from common.parsing.text import TextParser
from common.settings import LimitsSettings

LIMITS = LimitsSettings()


def assert_offsets(doc: ParsedDocument) -> None:
    for section in doc.sections:
        assert doc.text[section.start_char : section.start_char + len(section.text)] == section.text
        assert section.text.strip()


def bodies(doc: ParsedDocument) -> list[tuple[tuple[str, ...], str]]:
    return [(section.heading_path, section.text) for section in doc.sections]


# -- plain text ------------------------------------------------------------------------------------


def test_text_paragraphs_become_sections_with_offsets() -> None:
    doc = TextParser().parse(b"  First line\nsame para.  \n \n\n\tSecond para.\r\n\r\nThird.\n", "a.txt")
    assert doc.format == "text"
    assert [s.text for s in doc.sections] == ["First line\nsame para.", "Second para.", "Third."]
    assert "\r" not in doc.text
    assert_offsets(doc)
    assert doc.title == "First line"


# -- markdown --------------------------------------------------------------------------------------

MARKDOWN_SOURCE = """\
---
title: front matter is skipped
---
Preamble text.

# Guide

Intro to the guide.

```python
# not a heading
x = 1

y = 2
```

## Install **now**
Run the [installer](https://example.com).

Setext title
============
Under setext.

Sub heading
-----------
Sub body.

### Deep ###
Deep body.

# Second top
Top body.
"""


def test_markdown_heading_paths_fences_and_setext() -> None:
    doc = MarkdownParser().parse(MARKDOWN_SOURCE.encode(), "guide.md")
    assert doc.format == "markdown"
    assert doc.title == "Guide"
    assert bodies(doc) == [
        ((), "Preamble text."),
        (("Guide",), "Intro to the guide.\n\n```python\n# not a heading\nx = 1\n\ny = 2\n```"),
        (("Guide", "Install now"), "Run the [installer](https://example.com)."),
        (("Setext title",), "Under setext."),
        (("Setext title", "Sub heading"), "Sub body."),
        (("Setext title", "Sub heading", "Deep"), "Deep body."),
        (("Second top",), "Top body."),
    ]
    assert_offsets(doc)
    assert "front matter" not in " ".join(s.text for s in doc.sections)


def test_markdown_unclosed_fence_swallows_headings() -> None:
    doc = MarkdownParser().parse_text("# A\n~~~\n# inside\n\ntext", "a.md")
    assert bodies(doc) == [(("A",), "~~~\n# inside\n\ntext")]


def test_markdown_thematic_break_after_blank_line_is_not_a_heading() -> None:
    doc = MarkdownParser().parse_text("# A\n\npara\n\n---\n\nmore\n- item\n---\n", "a.md")
    assert [s.heading_path for s in doc.sections] == [("A",)]
    assert doc.sections[0].text == "para\n\n---\n\nmore\n- item\n---"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["# H1", "## H2", "text line", "", "===", "---", "```", "  indented", "### H3 ##"]),
        max_size=30,
    )
)
def test_markdown_sections_always_point_into_the_text(lines: list[str]) -> None:
    doc = MarkdownParser().parse_text("\n".join(lines), "p.md")
    assert_offsets(doc)


# -- html ------------------------------------------------------------------------------------------

HTML_SOURCE = """<!DOCTYPE html>
<html><head><title>The Page</title><style>p { color: red }</style></head>
<body>
<nav><a href="/">Home</a> <a href="/about">About</a></nav>
<script>var secret = "do not index";</script>
<p>Lead   paragraph
   over two lines.<br>After a break.</p>
<h1>Guide</h1>
<div>First block <b>bold</b>.<div>Nested block.</div>Tail text.</div>
<h2>Data</h2>
<table>
  <tr><th>Name</th><th>Age</th></tr>
  <tr><td>Ann</td><td>31</td></tr>
  <tr><td>Bob</td><td>42</td></tr>
</table>
<pre>  keep
    spacing</pre>
<h2>List</h2>
<ul><li>one</li><li>two &amp; three</li></ul>
<!-- a comment -->
</body></html>"""


def test_html_blocks_headings_and_tables() -> None:
    doc = HtmlParser().parse(HTML_SOURCE.encode(), "page.html")
    assert doc.format == "html"
    assert doc.title == "The Page"
    assert bodies(doc) == [
        ((), "Lead paragraph over two lines.\nAfter a break."),
        (("Guide",), "First block bold."),
        (("Guide",), "Nested block."),
        (("Guide",), "Tail text."),
        (("Guide", "Data"), "Name | Age\nAnn | 31\nBob | 42"),
        (("Guide", "Data"), "  keep\n    spacing"),
        (("Guide", "List"), "one"),
        (("Guide", "List"), "two & three"),
    ]
    assert_offsets(doc)
    for dropped in ("secret", "color", "Home", "About", "a comment", "The Page"):
        assert dropped not in doc.text


def test_html_title_falls_back_to_first_h1() -> None:
    doc = HtmlParser().parse_text("<body><h2>Sub</h2><h1>Main</h1><p>x</p></body>", "a.html")
    assert doc.title == "Main"
    assert bodies(doc) == [(("Main",), "x")]


def test_html_deeply_nested_markup_does_not_recurse() -> None:
    depth = 5000  # far beyond Python's default recursion limit of 1000
    html = "<html><body>" + "<div><span>" * depth + "deep text" + "</span></div>" * depth + "<p>after</p>"
    doc = HtmlParser().parse_text(html, "deep.html")
    assert [s.text for s in doc.sections] == ["deep text", "after"]


def test_html_broken_markup_reads_as_a_browser_shows_it() -> None:
    """Text stray in <head> is shown; a heading closed by another level's end tag ends there (the
    paragraph after it is not swallowed into the heading)."""
    doc = HtmlParser().parse_text("<html><head><title>T</title><script>x()</script>stray words</head><body>"
                                  "<h4>Notes</h4><h5>(1)</h3><p>After the note.</p></body></html>", "b.html")
    assert bodies(doc) == [((), "stray words"), (("Notes", "(1)"), "After the note.")]
    assert doc.title == "T"


def test_html_nested_beyond_the_c_parser_limit_keeps_its_text() -> None:
    """libxml2 stops building below 2048 levels; such a document goes through the slower parser whole."""
    html = ("<html><head><title>Deep</title></head><body>" + "<div>" * 3000 + "<h2>Bottom</h2>deep text"
            + "</div>" * 3000 + "<p>after</p>")
    doc = HtmlParser().parse_text(html, "deep.html")
    assert bodies(doc) == [(("Bottom",), "deep text"), (("Bottom",), "after")]
    assert doc.title == "Deep"


# -- parse_document --------------------------------------------------------------------------------


def test_parse_document_sniffs_content_not_name() -> None:
    doc = parse_document(b"<!doctype html><html><h1>T</h1><p>body</p></html>", "misnamed.txt", limits=LIMITS)
    assert doc.format == "html"
    assert bodies(doc) == [(("T",), "body")]
    doc = parse_document(b"# Head\n\nbody", "notes.txt", limits=LIMITS)
    assert doc.format == "markdown"
    assert bodies(doc) == [(("Head",), "body")]
    doc = parse_document(b"plain\n\nwords", "data.bin", limits=LIMITS)
    assert doc.format == "text"
    assert len(doc.sections) == 2


@pytest.mark.parametrize("data", [b"", b"   \n\t\r\n  ", b"<html><script>x()</script></html>", b"# Only heading"])
def test_empty_documents_are_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptDocument, match="document is empty"):
        parse_document(data, "empty.txt", limits=LIMITS)


def test_size_limit() -> None:
    limits = LimitsSettings(max_upload_bytes=10)
    assert parse_document(b"0123456789", "ok.txt", limits=limits).text == "0123456789"
    with pytest.raises(LimitExceeded, match="max_upload_bytes"):
        parse_document(b"0123456789A", "big.txt", limits=limits)


def test_binary_formats_without_a_parser_are_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match="PNG image"):
        parse_document(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "photo.pdf", limits=LIMITS)
