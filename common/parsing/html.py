"""HTML via lxml (libxml2's C parser): readable text blocks under h1-h6 heading paths.

The document text is the rendered text (blocks separated by blank lines, headings on their own
block), not the markup, so chunk offsets point into what a reader sees. Scripts, styles and the head
are dropped; tables become one block with a line per row and " | " between cells.
libxml2 builds the tree ~7x faster than BeautifulSoup's "html.parser" (the parser docvec used
before; the rendering rules are the same, and on the 726 HTML files of python3-doc and other Debian
docs both give the same text, sections and offsets except for 2 files of broken markup). Where the
builders differ, libxml2 does what browsers do: text stray in `<head>` is shown, `<h5>...</h3>` ends
the heading, `<![CDATA[...]]>` (not HTML) is a comment. libxml2 gives up below 2048 levels of
nesting: such a document (only ever hostile) is built by "html.parser" instead.

libxml2 builds no tree: its parse events (start tag, text, end tag) go straight to the renderer, which
walking lxml's tree made 2x slower than parsing (on the 530 HTML files of python3-doc and 300 other
Debian HTML files the events give exactly the text, sections and offsets the tree walk gave, in half
the time). BeautifulSoup's tree is walked with an explicit stack, so deep markup cannot exhaust Python's
recursion limit; any `RecursionError` from BeautifulSoup itself is reported as a corrupt document.

Page furniture is not the page's text. Permalink marks (Sphinx's and MkDocs' `a.headerlink` "¶", and
any same-page link whose whole text is a mark such as "¶", "#" or "§") are dropped. Navigation
(`<nav>`, `role=navigation`, Sphinx's `div.sphinxsidebar`) and, outside an `<article>` or `<section>`
(inside one they are the content's own notes and bylines), sidebars (`<aside>`, `role=complementary`)
and page footers (`<footer>`, `role=contentinfo`, Sphinx's `div.footer` and `div.related`) are
rendered apart and left out. Where the page marks its main content (`<main>`, `role=main`, Sphinx's
`div.body`; else its `<article>`s), only that is kept, if it holds at least half of the text left: a
page that marks only a banner as `<main>`, or its comments as `<article>`s, keeps the rest. A page
made of nothing but furniture keeps it all. Heading paths are built from the headings kept; a
heading with nothing under it is a section of its own (`outline`).

XHTML goes through the same parser: the XML declaration and the DOCTYPE (whose internal subset
libxml2's HTML parser would show as text) are cut off first, and elements under a prefix bound to the
XHTML namespace (`<x:p>`) are read as the HTML elements they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import CData, Comment, Declaration, Doctype, ProcessingInstruction
from lxml import etree

from common.errors import CorruptDocument
from common.parsing.base import ParsedDocument, Section
from common.parsing.outline import Heading, with_lone_headings
from common.parsing.sniff import HTML, decode_text

_DROPPED = frozenset(
    {"script", "style", "head", "noscript", "template", "svg", "iframe", "object", "canvas", "button"}
)
_HEADING_LEVELS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div",
        "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hgroup", "hr", "html",
        "legend", "li", "main", "menu", "nav", "ol", "p", "section", "summary", "ul",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_SKIPPED_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)
_WHITESPACE = re.compile(r"\s+")
_BLOCK_SEPARATOR = "\n\n"

# What an element is to the page (bits): furniture, main content, an article, sectioning content (inside
# which asides and footers belong to the content). _PAGE_FURNITURE: furniture only outside sectioning.
_FURNITURE, _MAIN, _ARTICLE, _SECTIONING, _PAGE_FURNITURE = 1, 2, 4, 8, 16
_TAG_KINDS = {"nav": _FURNITURE, "main": _MAIN, "article": _ARTICLE | _SECTIONING, "section": _SECTIONING,
              "aside": _PAGE_FURNITURE, "footer": _PAGE_FURNITURE}
_ROLE_KINDS = {"navigation": _FURNITURE, "main": _MAIN, "complementary": _PAGE_FURNITURE,
               "contentinfo": _PAGE_FURNITURE}
_DIV_CLASS_KINDS = {"sphinxsidebar": _FURNITURE, "body": _MAIN, "footer": _PAGE_FURNITURE,
                    "related": _PAGE_FURNITURE}  # Sphinx's layout
_MIN_REGION_SHARE = 0.5
"""Share of the page's text (furniture aside) its marked main content must hold to stand for the page."""

# Permalinks: same-page links that tools put beside headings and definitions.
_PERMALINK_CLASSES = frozenset(
    {"headerlink", "header-anchor", "heading-anchor", "anchor-link", "anchorjs-link", "hash-link"}
)
_PERMALINK_MARKS = frozenset({"¶", "#", "§", "🔗", "⚓", "⚓\ufe0f", "\u200b"})
# The XML declaration, processing instructions, comments and a DOCTYPE (with its internal subset).
_XML_PREAMBLE = re.compile(r"(?:\s|<\?[^>]*>|<!--.*?-->|<!doctype[^>\[]*(?:\[[^\]]*\][^>]*)?>)*", re.I | re.S)
_XHTML_PREFIX = re.compile(r"""xmlns:([A-Za-z_][\w.-]*)\s*=\s*["']http://www\.w3\.org/1999/xhtml["']""")
_PREFIX_SEARCH_CHARS = 64 * 1024


class HtmlParser:
    """Parser for HTML documents."""

    format = HTML

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        return self.parse_text(decode_text(data, filename), filename)

    def parse_text(self, text: str, filename: str) -> ParsedDocument:
        renderer = _Renderer()
        if not text.strip():
            return renderer.document(self.format, "")
        prefix = _xhtml_prefix(text)
        text = text[_XML_PREAMBLE.match(text).end():]  # type: ignore[union-attr]  # (it matches the empty string)
        target = _Events(renderer, prefix)
        # As UTF-8 bytes: lxml refuses a str that declares an encoding (`<?xml ... encoding=...?>`).
        parser = etree.HTMLParser(target=target, encoding="utf-8", remove_comments=True, remove_pis=True,
                                  huge_tree=True)
        try:
            etree.fromstring(text.encode("utf-8", "surrogatepass"), parser=parser)
        except (etree.ParserError, etree.XMLSyntaxError, ValueError) as exc:
            raise CorruptDocument(f'file "{filename}": not parseable as HTML ({exc})') from exc
        if any(error.level_name == "FATAL" for error in parser.error_log):  # nested beyond libxml2's limit
            return self._parse_nested(text, filename, prefix)
        return renderer.document(self.format, _collapse(" ".join(target.title or ())))

    def _parse_nested(self, text: str, filename: str, prefix: str) -> ParsedDocument:
        """BeautifulSoup's "html.parser", which has no depth limit (and is ~7x slower)."""
        try:
            soup = BeautifulSoup(text, "html.parser")
            for anchor in soup.find_all(f"{prefix}a"):
                if isinstance(anchor, Tag) and _is_permalink(anchor.attrs, anchor.get_text()):
                    anchor.decompose()
            renderer = _Renderer()
            renderer.walk_soup(soup, prefix)
        except RecursionError as exc:
            raise CorruptDocument(f'file "{filename}": HTML is nested too deeply to parse') from exc
        title_tag = soup.find(f"{prefix}title")
        title = _collapse(title_tag.get_text(" ")) if isinstance(title_tag, Tag) else ""
        return renderer.document(self.format, title)


class _Events:
    """libxml2's parse events, straight into a `_Renderer`: no tree is built, and no Python object is
    made per element (walking lxml's tree cost twice what parsing did). Text arrives in pieces: the
    pieces of one text node (between two tags) are joined before the renderer sees them, as the tree's
    text and tails were. Inside a dropped element nothing counts; inside a heading all text is its
    text, joined by spaces per text node (as `itertext` gave it); the first <title>'s text is kept.
    Permalinks are dropped wherever they are (headings included): by their class, or, inside a
    same-page link, a text node that is only a permalink mark. `prefix` ("x:"): the XHTML elements'
    namespace prefix, taken off their names."""

    __slots__ = ("_renderer", "_text", "_dropped", "_heading", "_heading_depth", "_heading_level",
                 "title", "_in_title", "_prefix", "_self_link")

    def __init__(self, renderer: _Renderer, prefix: str = "") -> None:
        self._renderer = renderer
        self._text: list[str] = []
        self._dropped = 0  # depth inside a dropped element
        self._heading: list[str] = []
        self._heading_depth = 0  # depth inside a heading
        self._heading_level = 0
        self.title: list[str] | None = None
        self._in_title = False
        self._prefix = prefix
        self._self_link = 0  # depth inside a same-page link (`href="#..."`)

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        if self._text:
            self._node()
        if self._prefix and tag.startswith(self._prefix):
            tag = tag[len(self._prefix):]
        if tag == "title" and self.title is None:
            self.title, self._in_title = [], True
        if self._self_link:
            self._self_link += 1
        elif tag == "a" and attrib.get("href", "").startswith("#"):
            self._self_link = 1
        if self._dropped:
            self._dropped += 1
        elif tag == "a" and _is_permalink(attrib):
            self._dropped = 1
        elif self._heading_depth:
            self._heading_depth += 1
        elif tag in _HEADING_LEVELS:
            self._heading_depth, self._heading_level = 1, _HEADING_LEVELS[tag]
        elif not self._renderer._enter(tag, attrib, _no_text):
            self._dropped = 1

    def end(self, tag: str) -> None:
        if self._text:
            self._node()
        if self._prefix and tag.startswith(self._prefix):
            tag = tag[len(self._prefix):]
        if tag == "title":
            self._in_title = False
        if self._self_link:
            self._self_link -= 1
        if self._dropped:
            self._dropped -= 1
        elif self._heading_depth:
            self._heading_depth -= 1
            if not self._heading_depth:
                self._renderer._heading(self._heading_level, _collapse(" ".join(self._heading)))
                self._heading.clear()
        else:
            self._renderer._leave(tag)

    def data(self, text: str) -> None:
        self._text.append(text)

    def close(self) -> None:
        if self._text:
            self._node()
        self._renderer._flush()

    def _node(self) -> None:
        text = "".join(self._text)
        self._text.clear()
        if self._in_title and self.title is not None:
            self.title.append(text)
        if self._dropped or (self._self_link and text.strip() in _PERMALINK_MARKS):
            return
        if self._heading_depth:
            self._heading.append(text)
        else:
            self._renderer._text(text)


@dataclass(slots=True)
class _Table:
    rows: list[list[str]] = field(default_factory=list)
    cell: list[str] | None = None

    def start_row(self) -> None:
        self.end_cell()
        self.rows.append([])

    def start_cell(self) -> None:
        self.end_cell()
        if not self.rows:
            self.rows.append([])
        self.cell = []

    def end_cell(self) -> None:
        if self.cell is not None:
            if not self.rows:
                self.rows.append([])
            self.rows[-1].append(_collapse("".join(self.cell)))
            self.cell = None

    def render(self) -> str:
        self.end_cell()
        lines = (" | ".join(cells) for cells in self.rows)
        return "\n".join(line for line in lines if line.replace("|", "").strip())


@dataclass(slots=True)
class _Block:
    """A rendered block: body text (`level` 0) or a heading (1-6), with what it is part of (`kind` bits:
    furniture, main content, an article)."""

    text: str
    level: int
    kind: int


@dataclass(slots=True)
class _Renderer:
    """Turns parse events or a soup into text blocks; all state of one document lives here."""

    blocks: list[_Block] = field(default_factory=list)
    inline: list[str] = field(default_factory=list)
    tables: list[_Table] = field(default_factory=list)
    pre_depth: int = 0
    kinds: list[int] = field(default_factory=list)  # per open element: the `_landmark` bits it set
    furniture: int = 0  # open elements of each kind
    main: int = 0
    article: int = 0
    sectioning: int = 0

    def walk_soup(self, root: Tag, prefix: str = "") -> None:
        """Render a BeautifulSoup tree (libxml2's parse events go through `_Events` instead)."""
        stack: list[tuple[Tag | NavigableString, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if isinstance(node, NavigableString):
                if not isinstance(node, _SKIPPED_STRINGS) or isinstance(node, CData):
                    self._text(str(node))
                continue
            name = node.name[len(prefix):] if prefix and node.name.startswith(prefix) else node.name
            if leaving:
                self._leave(name)
            elif self._enter(name, node.attrs, _soup_text(node)):
                stack.append((node, True))
                children = reversed(node.contents)  # every element is a Tag or a NavigableString (Comment...)
                stack.extend((child, False) for child in children if isinstance(child, Tag | NavigableString))
        self._flush()

    def document(self, format_name: str, title: str) -> ParsedDocument:
        parts: list[str] = []
        sections: list[Section] = []
        headings: list[Heading] = []
        open_headings: list[tuple[int, str]] = []
        first_h1 = ""
        offset = 0
        for block in self._kept_blocks():
            if parts:
                offset += len(_BLOCK_SEPARATOR)
            parts.append(block.text)
            if block.level:
                while open_headings and open_headings[-1][0] >= block.level:
                    open_headings.pop()
                open_headings.append((block.level, block.text))
                headings.append(Heading(block.text, block.level, _path(open_headings), offset))
                first_h1 = first_h1 or (block.text if block.level == 1 else "")
            else:
                sections.append(Section(text=block.text, heading_path=_path(open_headings), start_char=offset))
            offset += len(block.text)
        return ParsedDocument(
            format=format_name,
            text=_BLOCK_SEPARATOR.join(parts),
            sections=with_lone_headings(sections, headings),
            title=title or first_h1,
        )

    def _kept_blocks(self) -> list[_Block]:
        """The blocks that are the page's text: furniture left out (unless there is nothing else), and
        only the marked main content (or else the articles) where that is most of what is left."""
        content = [block for block in self.blocks if not block.kind & _FURNITURE] or self.blocks
        total = sum(len(block.text) for block in content)
        for region in (_MAIN, _ARTICLE):
            inside = [block for block in content if block.kind & region]
            if inside and sum(len(block.text) for block in inside) >= _MIN_REGION_SHARE * total:
                return inside
        return content

    def _enter(self, name: str, attrs: Mapping[str, object], heading_text: Callable[[], str]) -> bool:
        """Handle an opening tag (`heading_text`: all the text inside it); return whether to descend
        into its children (every element it returns True for is left through `_leave`)."""
        if name in _DROPPED:
            return False
        if name in _HEADING_LEVELS:
            self._heading(_HEADING_LEVELS[name], _collapse(heading_text()))
            return False
        kind = self._landmark(name, attrs) if attrs or name in _TAG_KINDS else 0
        if kind:
            if kind & _FURNITURE and self.tables:  # a table is one block: furniture inside it is dropped
                return False
            self._flush_unless_in_table()
            self._count(kind, 1)
        self.kinds.append(kind)
        if name == "br":
            self._append("\n")
        elif name == "table":
            self._flush_unless_in_table()
            self.tables.append(_Table())
        elif name == "tr" and self.tables:
            self.tables[-1].start_row()
        elif name in _CELLS and self.tables:
            self.tables[-1].start_cell()
        elif name == "pre":
            self._flush_unless_in_table()
            self.pre_depth += 1
        elif name in _BLOCKS:
            self._flush_unless_in_table()
        return True

    def _leave(self, name: str) -> None:
        if name == "table" and self.tables:
            rendered = self.tables.pop().render()
            if self.tables:  # a nested table reads as text of the enclosing cell
                self._append(" " + rendered.replace("\n", "; ") + " ")
            elif rendered:
                self._block(rendered)
        elif name in _CELLS and self.tables:
            self.tables[-1].end_cell()
        elif name == "pre":
            self._flush_unless_in_table(preformatted=True)
            self.pre_depth -= 1
        elif name in _BLOCKS or name == "li":
            self._flush_unless_in_table()
        kind = self.kinds.pop() if self.kinds else 0
        if kind:
            self._flush_unless_in_table()
            self._count(kind, -1)

    def _landmark(self, name: str, attrs: Mapping[str, object]) -> int:
        """The `_FURNITURE`/`_MAIN`/`_ARTICLE`/`_SECTIONING` bits of an element, from its tag, its ARIA
        role and (on a div) Sphinx's class names; page furniture counts only outside sectioning content."""
        kind = _TAG_KINDS.get(name, 0)
        role = attrs.get("role") if attrs else None
        if role:
            kind |= _ROLE_KINDS.get(_attr_text(role).strip().lower(), 0)
        classes = attrs.get("class") if name == "div" and attrs else None
        if classes:
            for class_name in _attr_text(classes).split():
                kind |= _DIV_CLASS_KINDS.get(class_name, 0)
        if kind & _PAGE_FURNITURE:
            kind = (kind & ~_PAGE_FURNITURE) | (0 if self.sectioning else _FURNITURE)
        return kind

    def _count(self, kind: int, step: int) -> None:
        if kind & _FURNITURE:
            self.furniture += step
        if kind & _MAIN:
            self.main += step
        if kind & _ARTICLE:
            self.article += step
        if kind & _SECTIONING:
            self.sectioning += step

    def _text(self, text: str) -> None:
        self._append(text if self.pre_depth else _WHITESPACE.sub(" ", text))

    def _append(self, text: str) -> None:
        table = self.tables[-1] if self.tables else None
        if table is not None and table.cell is not None:
            table.cell.append(text)
        elif table is not None:
            if text.strip():  # text directly inside <table>/<tr> (e.g. a caption): its own cell
                table.start_cell()
                table.cell = [text]
                table.end_cell()
        else:
            self.inline.append(text)

    def _heading(self, level: int, text: str) -> None:
        self._flush_unless_in_table()
        if self.tables:
            self._append(" " + text + " ")
            return
        if text:
            self.blocks.append(_Block(text, level, self._kind()))

    def _flush_unless_in_table(self, *, preformatted: bool = False) -> None:
        if not self.tables:
            self._flush(preformatted=preformatted)

    def _flush(self, *, preformatted: bool = False) -> None:
        raw = "".join(self.inline)
        self.inline.clear()
        if preformatted:
            text = raw.strip("\n").rstrip()
        else:
            # Spaces around line breaks go line by line (a regex ` *\n *` scans a run of spaces from each
            # of its characters: quadratic in the run).
            text = "\n".join(line.strip(" ") for line in raw.split("\n")).strip()
        if text.strip():
            self._block(text)

    def _block(self, text: str) -> None:
        self.blocks.append(_Block(text, 0, self._kind()))

    def _kind(self) -> int:
        return ((_FURNITURE if self.furniture else 0) | (_MAIN if self.main else 0)
                | (_ARTICLE if self.article else 0))


def _is_permalink(attrs: Mapping[str, object], text: str | None = None) -> bool:
    """Whether a link is a permalink: to a place on its own page, with a permalink class (or, given
    `text`, only a permalink mark as its text)."""
    if not _attr_text(attrs.get("href", "")).startswith("#"):
        return False
    classes = attrs.get("class")
    if classes and not _PERMALINK_CLASSES.isdisjoint(_attr_text(classes).split()):
        return True
    return text is not None and text.strip() in _PERMALINK_MARKS


def _xhtml_prefix(text: str) -> str:
    """"x:" when the document binds the XHTML namespace to the prefix x (lowercased, as libxml2
    reports tag names), else ""."""
    match = _XHTML_PREFIX.search(text, 0, _PREFIX_SEARCH_CHARS)
    return match.group(1).lower() + ":" if match else ""


def _attr_text(value: object) -> str:
    """An attribute's value as text (BeautifulSoup gives multi-valued ones, like class, as lists)."""
    return " ".join(value) if isinstance(value, list) else str(value)


def _path(open_headings: list[tuple[int, str]]) -> tuple[str, ...]:
    return tuple(heading for _, heading in open_headings)


def _no_text() -> str:
    return ""


def _soup_text(tag: Tag) -> Callable[[], str]:
    return lambda: tag.get_text(" ")


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()
