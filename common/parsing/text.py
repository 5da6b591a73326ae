"""Plain text: each paragraph (lines separated by a blank line) becomes one section."""

from __future__ import annotations

import re

from common.parsing.base import ParsedDocument, Section
from common.parsing.sniff import TEXT, decode_text

_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")


class TextParser:
    """Parser for plain text; the document text is the decoded input with "\\n" newlines."""

    format = TEXT

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        return self.parse_text(decode_text(data, filename), filename)

    def parse_text(self, text: str, filename: str) -> ParsedDocument:
        sections = [Section(text=text[start:end], start_char=start) for start, end in paragraph_spans(text)]
        return ParsedDocument(format=self.format, text=text, sections=sections, title=_first_line(sections))


def _first_line(sections: list[Section]) -> str:
    if not sections:
        return ""
    return sections[0].text.split("\n", 1)[0].strip()[:200]


def paragraph_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each paragraph of `text`, without surrounding whitespace; blank lines separate them."""
    spans: list[tuple[int, int]] = []
    position = 0
    for separator in _BLANK_LINE.finditer(text):
        _append_stripped(text, position, separator.start(), spans)
        position = separator.end()
    _append_stripped(text, position, len(text), spans)
    return spans


def _append_stripped(text: str, start: int, end: int, spans: list[tuple[int, int]]) -> None:
    chunk = text[start:end]
    stripped = chunk.strip()
    if stripped:
        start += len(chunk) - len(chunk.lstrip())
        spans.append((start, start + len(stripped)))
