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


@pytest.mark.parametrize(
    ("data", "filename"),
    [(b"# Kayaks are great for calm lakes\n", "kayaks.md"),
     (b"Kayaks are great for calm lakes\n===\n", "kayaks.md"),
     (b"<html><body><h1>Kayaks are great for calm lakes</h1></body></html>", "kayaks.html")],
)
def test_a_document_of_one_heading_is_that_heading(data: bytes, filename: str) -> None:
    doc = parse_document(data, filename, limits=LIMITS)
    assert bodies(doc) == [(("Kayaks are great for calm lakes",), "Kayaks are great for calm lakes")]
    assert_offsets(doc)


def test_markdown_headings_with_nothing_under_them_are_sections_of_their_own() -> None:
    source = "# Guide\n\n## Install\n\n## Usage *now*\n\nUse it.\n\n## [Notes](notes.md) ##\n"
    doc = MarkdownParser().parse_text(source, "guide.md")
    # "Guide" has subsections: it is in their heading paths; "Install" and "Notes" hold nothing.
    assert bodies(doc) == [
        (("Guide", "Install"), "Install"),
        (("Guide", "Usage now"), "Use it."),
        (("Guide", "Notes"), "[Notes](notes.md)"),
    ]
    assert_offsets(doc)


def test_html_headings_with_nothing_under_them_are_sections_of_their_own() -> None:
    doc = HtmlParser().parse_text("<h1>Guide</h1><h2>Install</h2><h2>Usage</h2><p>Use it.</p><h3>Later</h3>", "g.html")
    assert bodies(doc) == [(("Guide", "Install"), "Install"), (("Guide", "Usage"), "Use it."),
                           (("Guide", "Usage", "Later"), "Later")]
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
    assert bodies(doc) == [(("Sub",), "Sub"), (("Main",), "x")]  # nothing under "Sub": its own section


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


@pytest.mark.parametrize(
    ("data", "filename"),
    [(b"", "empty.txt"), (b"   \n\t\r\n  ", "empty.txt"), (b"<html><script>x()</script></html>", "empty.txt"),
     (b"#\n\n## \n", "empty.md"),
     (b"<html><body><h1> </h1><h2><a class='headerlink' href='#x'>\xc2\xb6</a></h2></html>", "empty.html")],
)
def test_empty_documents_are_corrupt(data: bytes, filename: str) -> None:
    with pytest.raises(CorruptDocument, match="document is empty"):
        parse_document(data, filename, limits=LIMITS)


def test_size_limit() -> None:
    limits = LimitsSettings(max_upload_bytes=10)
    assert parse_document(b"0123456789", "ok.txt", limits=limits).text == "0123456789"
    with pytest.raises(LimitExceeded, match="max_upload_bytes"):
        parse_document(b"0123456789A", "big.txt", limits=limits)


def test_binary_formats_without_a_parser_are_unsupported() -> None:
    with pytest.raises(UnsupportedFormat, match="PNG image"):
        parse_document(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "photo.pdf", limits=LIMITS)


# -- html: page furniture, permalinks, XHTML -------------------------------------------------------

# The shape of a Sphinx page (python3-doc's, reduced): a mobile menu in <nav>, a "related" bar of
# navigation links above and below the content, the content in div.body[role=main], a sidebar with a
# table of contents, a footer; every heading and definition carries a "¶" permalink.
SPHINX_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8" />
<title>os — Miscellaneous interfaces &#8212; Python 3.11 documentation</title>
<script src="_static/doctools.js"></script></head>
<body>
<div class="mobile-nav"><nav class="menu" role="navigation"><h3>Table of Contents</h3>
  <ul><li><a href="#">os — Miscellaneous interfaces</a></li><li><a href="#files">Files and Directories</a></li></ul>
</nav></div>
<div class="related" role="navigation" aria-label="related navigation">
  <h3>Navigation</h3>
  <ul>
    <li class="right"><a href="genindex.html">index</a></li>
    <li class="right"><a href="py-modindex.html">modules</a> |</li>
    <li class="right"><a href="io.html">next</a> |</li>
    <li class="right"><a href="allos.html">previous</a> |</li>
    <li><a href="https://www.python.org/">Python</a> &#187;</li>
    <li><a href="index.html">3.11 Documentation</a> &#187;</li>
  </ul>
</div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper">
<div class="body" role="main">
<section id="module-os">
<h1><code>os</code> — Miscellaneous interfaces<a class="headerlink" href="#module-os"
  title="Permalink to this heading">¶</a></h1>
<p>This module provides a portable way of using operating system dependent functionality.</p>
<section id="files">
<h2>Files and Directories<a class="headerlink" href="#files" title="Permalink to this heading">¶</a></h2>
<dl class="py function">
<dt class="sig sig-object py" id="os.chdir"><span class="sig-prename">os.</span><span
  class="sig-name">chdir</span>(<em>path</em>)<a class="headerlink" href="#os.chdir" title="Permalink">¶</a></dt>
<dd><p>Change the current working directory to <em>path</em>.</p></dd>
</dl>
<aside class="footnote brackets" id="f1"><p>On some platforms <em>path</em> may also be a file descriptor.</p></aside>
</section>
</section>
<div class="clearer"></div>
</div>
</div></div></div>
<div class="sphinxsidebar" role="navigation" aria-label="main navigation">
  <div class="sphinxsidebarwrapper">
    <h3><a href="contents.html">Table of Contents</a></h3>
    <ul><li><a href="#">os — Miscellaneous interfaces</a>
      <ul><li><a href="#files">Files and Directories</a></li></ul></li></ul>
    <h4>Previous topic</h4><p class="topless"><a href="allos.html">Generic Operating System Services</a></p>
    <div role="note"><h3>This Page</h3><ul><li><a href="bugs.html">Report a Bug</a></li></ul></div>
  </div>
</div>
</div>
<div class="related" role="navigation" aria-label="related navigation">
  <h3>Navigation</h3>
  <ul><li class="right"><a href="py-modindex.html">modules</a> |</li>
    <li class="right"><a href="io.html">next</a> |</li></ul>
</div>
<div class="footer">&copy; <a href="copyright.html">Copyright</a> 2001-2026, Python Software Foundation.</div>
</body></html>"""

FURNITURE_WORDS = ("modules", "previous", "Navigation", "Table of Contents", "Previous topic", "This Page",
                   "Report a Bug", "Copyright", "Generic Operating", "¶")


def test_html_keeps_the_main_content_of_a_sphinx_page() -> None:
    doc = parse_document(SPHINX_PAGE.encode(), "os.html", limits=LIMITS)
    assert doc.format == "html"
    assert bodies(doc) == [
        (("os — Miscellaneous interfaces",),
         "This module provides a portable way of using operating system dependent functionality."),
        (("os — Miscellaneous interfaces", "Files and Directories"), "os.chdir(path)"),
        (("os — Miscellaneous interfaces", "Files and Directories"), "Change the current working directory to path."),
        (("os — Miscellaneous interfaces", "Files and Directories"),
         "On some platforms path may also be a file descriptor."),  # an aside inside the content: a footnote
    ]
    assert_offsets(doc)
    for furniture in FURNITURE_WORDS:
        assert furniture not in doc.text


HTML5_PAGE = """<!DOCTYPE html><html><head><title>Kayaks</title></head><body>
<header><a href="/">Paddle Club</a><nav><a href="/join">Join</a> <a href="/events">Events</a></nav></header>
<div class="breadcrumbs"><a href="/">Home</a> / <a href="/guides">Guides</a></div>
<main>
<article>
<header><h1>Choosing a kayak<a class="anchor" href="#top" aria-hidden="true">#</a></h1><p>By Ann, May 2026</p></header>
<p>Sit-on-top kayaks are stable on calm lakes and easy to get back onto after a swim.</p>
<h2 id="sea">Sea kayaks <a href="#sea">§</a></h2>
<p>Sea kayaks are long and narrow: they track well in wind and waves but need practice.</p>
<aside class="note"><p>Always wear a buoyancy aid.</p></aside>
<footer><p>Filed under boats.</p></footer>
</article>
<aside class="sidebar"><h3>Popular posts</h3><ul><li>Ten knots every paddler knows</li></ul></aside>
</main>
<aside role="complementary"><h3>Newsletter</h3><p>Sign up for our monthly newsletter.</p></aside>
<footer role="contentinfo"><p>© 2026 Paddle Club · Privacy policy</p></footer>
</body></html>"""


def test_html_drops_navigation_sidebars_footers_and_permalinks() -> None:
    doc = HtmlParser().parse_text(HTML5_PAGE, "kayaks.html")
    assert bodies(doc) == [
        (("Choosing a kayak",), "By Ann, May 2026"),
        (("Choosing a kayak",), "Sit-on-top kayaks are stable on calm lakes and easy to get back onto after a swim."),
        (("Choosing a kayak", "Sea kayaks"),
         "Sea kayaks are long and narrow: they track well in wind and waves but need practice."),
        (("Choosing a kayak", "Sea kayaks"), "Always wear a buoyancy aid."),  # the article's own aside
        (("Choosing a kayak", "Sea kayaks"), "Filed under boats."),  # and its own footer
    ]
    assert_offsets(doc)
    for furniture in ("Paddle Club", "Join", "Home", "Popular posts", "Ten knots", "Newsletter", "Privacy", "§", "#"):
        assert furniture not in doc.text


def test_html_without_marked_main_content_keeps_everything_but_the_furniture() -> None:
    page = ("<html><body><div class='top'><a href='/'>Site</a></div><nav>Home | About</nav>"
            "<h1>Notes</h1><p>First note.</p><aside><p>Ads here.</p></aside><p>Second note.</p>"
            "<footer>Copyright 2026</footer></body></html>")
    doc = HtmlParser().parse_text(page, "notes.html")
    assert bodies(doc) == [((), "Site"), (("Notes",), "First note."), (("Notes",), "Second note.")]


def test_html_main_marking_a_small_part_of_the_page_does_not_hide_the_rest() -> None:
    """A page that marks only a banner as <main> (a misuse) keeps its text; so does one whose only
    content sits in furniture tags, and one whose <article>s are its comments rather than its text."""
    story = " ".join(["The lake froze early that year and the ferry stopped running in November."] * 4)
    banner = f"<html><body><main><p>Welcome!</p></main><h1>Story</h1><p>{story}</p></body></html>"
    assert bodies(HtmlParser().parse_text(banner, "a.html")) == [((), "Welcome!"), (("Story",), story)]
    all_aside = "<html><body><aside><h1>Recipe</h1><p>Mix flour and water.</p></aside></body></html>"
    assert bodies(HtmlParser().parse_text(all_aside, "b.html")) == [(("Recipe",), "Mix flour and water.")]
    comments = (f"<html><body><div class='post'><h1>Story</h1><p>{story}</p></div>"
                "<article><p>Nice post!</p></article><article><p>Thanks.</p></article></body></html>")
    assert bodies(HtmlParser().parse_text(comments, "c.html")) == [
        (("Story",), story), (("Story",), "Nice post!"), (("Story",), "Thanks.")
    ]


def test_html_deep_markup_and_the_fallback_parser_drop_the_furniture_too() -> None:
    expected = bodies(parse_document(SPHINX_PAGE.encode(), "os.html", limits=LIMITS))
    deep = SPHINX_PAGE.replace("<body>", "<body>" + "<div>" * 3000).replace("</body>", "</div>" * 3000 + "</body>")
    assert bodies(HtmlParser().parse_text(deep, "os.html")) == expected
    assert bodies(HtmlParser()._parse_nested(SPHINX_PAGE, "os.html", "")) == expected  # BeautifulSoup's builder


_MARKUP = ["<main>", "</main>", "<article>", "</article>", "<aside>", "</aside>", "<footer>", "</footer>", "<nav>",
           "</nav>", "<section>", "</section>", "<div class='body'>", "<div role='navigation'>", "</div>",
           "<table><tr><td>", "</td></tr></table>", "<h1>", "</h1>", "<h2>", "</h2>", "<p>", "</p>", "<pre>", "</pre>",
           "<a class='headerlink' href='#x'>\u00b6</a>", "<a href='#y'>#</a>", "words here", "more text", " "]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(_MARKUP), max_size=40))
def test_html_sections_point_into_the_text_whatever_the_nesting(pieces: list[str]) -> None:
    doc = HtmlParser().parse_text("<html><body>" + "".join(pieces) + "</body></html>", "fuzz.html")
    assert_offsets(doc)
    assert "\u00b6" not in doc.text and "#" not in doc.text
    assert all(part for section in doc.sections for part in section.heading_path)


XHTML_BODY = ('<head><meta http-equiv="Content-Type" content="application/xhtml+xml; charset=utf-8"/>'
              "<title>Lakes</title></head><body><h1>Calm lakes</h1><p>Kayaks are great for calm lakes.</p></body>")


@pytest.mark.parametrize(
    "source",
    [
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\n'
        f'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en">{XHTML_BODY}</html>',
        # an internal DTD subset
        '<?xml version="1.0"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.1//EN" '
        '"http://www.w3.org/TR/xhtml11/DTD/xhtml11.dtd" [\n  <!ENTITY lake "calm lake">\n]>\n'
        f'<html xmlns="http://www.w3.org/1999/xhtml">{XHTML_BODY}</html>',
        # the XHTML namespace under a prefix
        '<?xml version="1.0" encoding="utf-8"?>\n<x:html xmlns:x="http://www.w3.org/1999/xhtml">'
        + XHTML_BODY.replace("<", "<x:").replace("<x:/", "</x:") + "</x:html>",
        # a stylesheet instruction and a comment before a root the sniffer must look past
        '<?xml version="1.0" encoding="utf-8"?>\n<?xml-stylesheet type="text/xsl" href="page.xsl"?>\n'
        '<!-- exported -->\n<xhtml:html xmlns:xhtml="http://www.w3.org/1999/xhtml">'
        + XHTML_BODY.replace("<", "<xhtml:").replace("<xhtml:/", "</xhtml:") + "</xhtml:html>",
    ],
    ids=["doctype", "internal-subset", "prefixed", "stylesheet-pi"],
)
def test_xhtml_is_parsed_as_html(source: str) -> None:
    doc = parse_document(source.encode(), "lakes.xhtml", limits=LIMITS)
    assert doc.format == "html"
    assert doc.title == "Lakes"
    assert bodies(doc) == [(("Calm lakes",), "Kayaks are great for calm lakes.")]
