"""HTML via lxml (libxml2's C parser): readable text blocks under h1-h6 heading paths.

The document text is the rendered text (blocks separated by blank lines, headings on their own
block), not the markup, so chunk offsets point into what a reader sees. Scripts, styles, navigation
and the head are dropped; tables become one block with a line per row and " | " between cells.
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
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bs4 import BeautifulSoup, NavigableString, Tag
from bs4.element import CData, Comment, Declaration, Doctype, ProcessingInstruction
from lxml import etree

from common.errors import CorruptDocument
from common.parsing.base import ParsedDocument, Section
from common.parsing.sniff import HTML, decode_text

_DROPPED = frozenset(
    {"script", "style", "nav", "head", "noscript", "template", "svg", "iframe", "object", "canvas", "button"}
)
_HEADING_LEVELS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "dialog", "div",
        "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "header", "hgroup", "hr", "html",
        "legend", "li", "main", "menu", "ol", "p", "section", "summary", "ul",
    }
)  # fmt: skip
_CELLS = frozenset({"td", "th"})
_SKIPPED_STRINGS = (Comment, Declaration, Doctype, ProcessingInstruction)
_WHITESPACE = re.compile(r"\s+")
_SPACES_AROUND_NEWLINE = re.compile(r" *\n *")
_BLOCK_SEPARATOR = "\n\n"


class HtmlParser:
    """Parser for HTML documents."""

    format = HTML

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        return self.parse_text(decode_text(data, filename), filename)

    def parse_text(self, text: str, filename: str) -> ParsedDocument:
        renderer = _Renderer()
        if not text.strip():
            return renderer.document(self.format, "")
        target = _Events(renderer)
        # As UTF-8 bytes: lxml refuses a str that declares an encoding (`<?xml ... encoding=...?>`).
        parser = etree.HTMLParser(target=target, encoding="utf-8", remove_comments=True, remove_pis=True,
                                  huge_tree=True)
        try:
            etree.fromstring(text.encode("utf-8", "surrogatepass"), parser=parser)
        except (etree.ParserError, etree.XMLSyntaxError, ValueError) as exc:
            raise CorruptDocument(f'file "{filename}": not parseable as HTML ({exc})') from exc
        if any(error.level_name == "FATAL" for error in parser.error_log):  # nested beyond libxml2's limit
            return self._parse_nested(text, filename)
        return renderer.document(self.format, _collapse(" ".join(target.title or ())))

    def _parse_nested(self, text: str, filename: str) -> ParsedDocument:
        """BeautifulSoup's "html.parser", which has no depth limit (and is ~7x slower)."""
        try:
            soup = BeautifulSoup(text, "html.parser")
            renderer = _Renderer()
            renderer.walk_soup(soup)
        except RecursionError as exc:
            raise CorruptDocument(f'file "{filename}": HTML is nested too deeply to parse') from exc
        title_tag = soup.find("title")
        title = _collapse(title_tag.get_text(" ")) if isinstance(title_tag, Tag) else ""
        return renderer.document(self.format, title)


class _Events:
    """libxml2's parse events, straight into a `_Renderer`: no tree is built, and no Python object is
    made per element (walking lxml's tree cost twice what parsing did). Text arrives in pieces: the
    pieces of one text node (between two tags) are joined before the renderer sees them, as the tree's
    text and tails were. Inside a dropped element nothing counts; inside a heading all text is its
    text, joined by spaces per text node (as `itertext` gave it); the first <title>'s text is kept."""

    __slots__ = ("_renderer", "_text", "_dropped", "_heading", "_heading_depth", "_heading_level",
                 "title", "_in_title")

    def __init__(self, renderer: _Renderer) -> None:
        self._renderer = renderer
        self._text: list[str] = []
        self._dropped = 0  # depth inside a dropped element
        self._heading: list[str] = []
        self._heading_depth = 0  # depth inside a heading
        self._heading_level = 0
        self.title: list[str] | None = None
        self._in_title = False

    def start(self, tag: str, attrib: object) -> None:
        if self._text:
            self._node()
        if tag == "title" and self.title is None:
            self.title, self._in_title = [], True
        if self._dropped:
            self._dropped += 1
        elif self._heading_depth:
            self._heading_depth += 1
        elif tag in _HEADING_LEVELS:
            self._heading_depth, self._heading_level = 1, _HEADING_LEVELS[tag]
        elif not self._renderer._enter(tag, _no_text):
            self._dropped = 1

    def end(self, tag: str) -> None:
        if self._text:
            self._node()
        if tag == "title":
            self._in_title = False
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
        if self._dropped:
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
    text: str
    heading_path: tuple[str, ...]
    is_heading: bool


@dataclass(slots=True)
class _Renderer:
    """Turns parse events or a soup into text blocks; all state of one document lives here."""

    blocks: list[_Block] = field(default_factory=list)
    inline: list[str] = field(default_factory=list)
    headings: list[tuple[int, str]] = field(default_factory=list)
    tables: list[_Table] = field(default_factory=list)
    pre_depth: int = 0
    first_h1: str = ""

    def walk_soup(self, root: Tag) -> None:
        """Render a BeautifulSoup tree (libxml2's parse events go through `_Events` instead)."""
        stack: list[tuple[Tag | NavigableString, bool]] = [(root, False)]
        while stack:
            node, leaving = stack.pop()
            if isinstance(node, NavigableString):
                if not isinstance(node, _SKIPPED_STRINGS) or isinstance(node, CData):
                    self._text(str(node))
            elif leaving:
                self._leave(node.name)
            elif self._enter(node.name, _soup_text(node)):
                stack.append((node, True))
                children = reversed(node.contents)  # every element is a Tag or a NavigableString (Comment...)
                stack.extend((child, False) for child in children if isinstance(child, Tag | NavigableString))
        self._flush()

    def document(self, format_name: str, title: str) -> ParsedDocument:
        parts: list[str] = []
        sections: list[Section] = []
        offset = 0
        for block in self.blocks:
            if parts:
                offset += len(_BLOCK_SEPARATOR)
            parts.append(block.text)
            if not block.is_heading:
                sections.append(Section(text=block.text, heading_path=block.heading_path, start_char=offset))
            offset += len(block.text)
        return ParsedDocument(
            format=format_name,
            text=_BLOCK_SEPARATOR.join(parts),
            sections=sections,
            title=title or self.first_h1,
        )

    def _enter(self, name: str, heading_text: Callable[[], str]) -> bool:
        """Handle an opening tag (`heading_text`: all the text inside it); return whether to descend
        into its children."""
        if name in _DROPPED:
            return False
        if name in _HEADING_LEVELS:
            self._heading(_HEADING_LEVELS[name], _collapse(heading_text()))
            return False
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
        if not text:
            return
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        self.headings.append((level, text))
        if level == 1 and not self.first_h1:
            self.first_h1 = text
        self.blocks.append(_Block(text, self._path(), is_heading=True))

    def _flush_unless_in_table(self, *, preformatted: bool = False) -> None:
        if not self.tables:
            self._flush(preformatted=preformatted)

    def _flush(self, *, preformatted: bool = False) -> None:
        raw = "".join(self.inline)
        self.inline.clear()
        if preformatted:
            text = raw.strip("\n").rstrip()
        else:
            text = _SPACES_AROUND_NEWLINE.sub("\n", raw).strip()
        if text.strip():
            self._block(text)

    def _block(self, text: str) -> None:
        self.blocks.append(_Block(text, self._path(), is_heading=False))

    def _path(self) -> tuple[str, ...]:
        return tuple(heading for _, heading in self.headings)


def _no_text() -> str:
    return ""


def _soup_text(tag: Tag) -> Callable[[], str]:
    return lambda: tag.get_text(" ")


def _collapse(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()
