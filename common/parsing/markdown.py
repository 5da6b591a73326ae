"""Markdown: ATX (`# Title`) and setext (`Title` over `===`/`---`) headings build the heading path.

The document text is the Markdown source itself, so section offsets point into what the user uploaded
(newlines normalized). Heading lines are not part of any section: their text lives in `heading_path`;
a heading with nothing under it is a section of its own, its text as written (`outline`).
Fenced code blocks (``` or ~~~) are kept verbatim and lines inside them are never headings.
A leading YAML front-matter block (`---` ... `---`) is skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from common.parsing.base import ParsedDocument, Section
from common.parsing.outline import Heading, with_lone_headings
from common.parsing.sniff import MARKDOWN, decode_text

_LINE = re.compile(r"^[^\n]*", re.M)
_ATX_OPEN = re.compile(r" {0,3}(#{1,6})(?=[ \t]|$)")  # the rest of the line is cut in Python (`_atx`)
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_NOT_PARAGRAPH = re.compile(r"^ {0,3}(?:[-*+][ \t]|\d{1,9}[.)][ \t]|>|\|)|^(?: {4}|\t)")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n.*?\n(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
# Link text without brackets and a destination with at most one level of parentheses, so that an attempt
# stops at the next bracket or parenthesis: `[[[...` or `[a](` repeated cost each position one character,
# not a scan to the end of the line (quadratic: 20,000 characters of `[` took 1.8 s).
_INLINE_LINK = re.compile(r"!?\[([^\[\]]*)\]\((?:[^()]|\([^()]*\))*+\)")
_INLINE_MARKS = re.compile(r"[*_`]+")


class MarkdownParser:
    """Parser for Markdown documents."""

    format = MARKDOWN

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        return self.parse_text(decode_text(data, filename), filename)

    def parse_text(self, text: str, filename: str) -> ParsedDocument:
        state = _State(text)
        front_matter = _FRONT_MATTER.match(text)
        start = front_matter.end() if front_matter else 0
        for line in _LINE.finditer(text, start):
            state.feed(line.start(), line.end())
        state.flush()
        sections = with_lone_headings(state.sections, state.heading_marks)
        return ParsedDocument(format=self.format, text=text, sections=sections, title=state.title)


@dataclass(slots=True)
class _Fence:
    char: str
    length: int


@dataclass(slots=True)
class _State:
    """Line-by-line scanner: the current heading stack and the body lines of the open section."""

    text: str
    sections: list[Section] = field(default_factory=list)
    title: str = ""
    title_is_h1: bool = False
    headings: list[tuple[int, str]] = field(default_factory=list)
    heading_marks: list[Heading] = field(default_factory=list)
    """Every heading with text, where its text stands in the source."""
    body: list[tuple[int, int]] = field(default_factory=list)
    fence: _Fence | None = None
    paragraph_lines: int = 0
    """How many of the last body lines form a plain paragraph (candidates for a setext heading)."""

    def feed(self, start: int, end: int) -> None:
        line = self.text[start:end]
        if self.fence is not None:
            self.body.append((start, end))
            closing = line.strip()
            if closing.startswith(self.fence.char * self.fence.length) and not closing.strip(self.fence.char):
                self.fence = None
            return
        if opening := _FENCE_OPEN.match(line):
            marker = opening.group(1)
            self.fence = _Fence(marker[0], len(marker))
            self.body.append((start, end))
            self.paragraph_lines = 0
            return
        if atx := _atx(line):
            self.flush()
            level, heading, offset = atx
            self._push_heading(level, heading, start + offset)
            return
        if self.paragraph_lines and _SETEXT.match(line):
            heading_lines = self.body[-self.paragraph_lines :]
            del self.body[-self.paragraph_lines :]
            heading = " ".join(self.text[s:e].strip() for s, e in heading_lines)
            self.flush()
            first_start, first_end = heading_lines[0]
            first_line = self.text[first_start:first_end]
            content_start = first_start + len(first_line) - len(first_line.lstrip())
            source = self.text[content_start : heading_lines[-1][1]].rstrip()
            self._push_heading(1 if line.strip()[0] == "=" else 2, heading, content_start, source)
            return
        self.body.append((start, end))
        is_paragraph = bool(line.strip()) and not _NOT_PARAGRAPH.match(line)
        self.paragraph_lines = self.paragraph_lines + 1 if is_paragraph else 0

    def flush(self) -> None:
        """Close the open section (if it has any text) under the current heading path."""
        self.paragraph_lines = 0
        if not self.body:
            return
        start, end = self.body[0][0], self.body[-1][1]
        self.body.clear()
        raw = self.text[start:end]
        stripped = raw.strip()
        if not stripped:
            return
        start += len(raw) - len(raw.lstrip())
        path = self._path()
        self.sections.append(Section(text=stripped, heading_path=path, start_char=start))

    def _path(self) -> tuple[str, ...]:
        """The texts of the open headings (empty headings left out)."""
        return tuple(heading for _, heading in self.headings if heading)

    def _push_heading(self, level: int, raw: str, start: int, source: str | None = None) -> None:
        """A heading of `level` whose text `raw` starts at `start` (`source`: its text as written, where
        that is more than `raw`: a setext heading's lines)."""
        heading = _clean_heading(raw)
        while self.headings and self.headings[-1][0] >= level:
            self.headings.pop()
        self.headings.append((level, heading))
        if heading:
            self.heading_marks.append(Heading(source if source is not None else raw, level, self._path(), start))
        # The title is the first level-1 heading, or the first heading if there is none.
        if heading and (not self.title or (level == 1 and not self.title_is_h1)):
            self.title, self.title_is_h1 = heading, level == 1


def _atx(line: str) -> tuple[int, str, int] | None:
    """An ATX heading line (`## Title ##`) as (level, text, the text's offset in the line), or None.

    Cut with string methods, not one regex: a lazy `(.*?)` before an optional closing `#`s and trailing
    whitespace re-scanned the whitespace at each of its characters (20,000 spaces took 3.4 s)."""
    opening = _ATX_OPEN.match(line)
    if opening is None:
        return None
    text = line[opening.end():].lstrip(" \t")
    offset = len(line) - len(text)
    text = text.rstrip(" \t")
    unclosed = text.rstrip("#")
    if unclosed != text and (not unclosed or unclosed[-1] in " \t"):  # a closing sequence: ` ##`
        text = unclosed.rstrip(" \t")
    return len(opening.group(1)), text, offset


def _clean_heading(raw: str) -> str:
    """Heading text without inline Markdown: links become their text, emphasis/code marks go."""
    text = _INLINE_LINK.sub(r"\1", raw)
    return " ".join(_INLINE_MARKS.sub("", text).split())
