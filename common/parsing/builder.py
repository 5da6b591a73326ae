"""`DocumentBuilder`: assembles a `ParsedDocument` from blocks, keeping section offsets right.

Used by the parsers whose document text is rendered (PDF, Office, CSV, JSON) rather than the upload's
own characters: blocks are joined by a blank line; headings are part of the text but not sections,
except a heading with nothing under it, which is a section of its own (`outline`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.parsing.base import ParsedDocument, Section
from common.parsing.outline import Heading, with_lone_headings

BLOCK_SEPARATOR = "\n\n"


@dataclass(slots=True)
class DocumentBuilder:
    """Collects text blocks in reading order; `build` returns the finished document."""

    parts: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    headings: list[Heading] = field(default_factory=list)
    length_chars: int = 0

    def heading(self, text: str, heading_path: tuple[str, ...] | None = None, level: int = 1,
                page: int | None = None) -> None:
        """A heading line: readable in the document text, carried by sections as their heading path.
        `heading_path` (ending with this heading) makes it an outline heading: a section of its own if
        nothing belongs to it. Without one (a made-up "Slide 3") it is only text."""
        text = text.strip()
        if text:
            start = self._append(text)
            if heading_path is not None:
                self.headings.append(Heading(text, level, heading_path, start, page))

    def section(self, text: str, heading_path: tuple[str, ...] = (), page: int | None = None) -> None:
        """A body block; blank blocks are dropped, surrounding whitespace is trimmed."""
        text = text.strip()
        if text:
            start = self._append(text)
            self.sections.append(Section(text=text, heading_path=heading_path, start_char=start, page=page))

    def build(self, format_name: str, title: str = "", pages: int | None = None) -> ParsedDocument:
        return ParsedDocument(
            format=format_name,
            text="".join(self.parts),
            sections=with_lone_headings(self.sections, self.headings),
            title=title.strip()[:200],
            pages=pages,
        )

    def _append(self, text: str) -> int:
        if self.parts:
            self.parts.append(BLOCK_SEPARATOR)
            self.length_chars += len(BLOCK_SEPARATOR)
        start = self.length_chars
        self.parts.append(text)
        self.length_chars += len(text)
        return start
