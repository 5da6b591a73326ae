"""Word (.docx) via python-docx: paragraphs under "Heading N" styles, tables as " | " rows.

Body paragraphs and tables are read in document order; each body paragraph and each table is one
section whose heading path comes from the "Heading 1".."Heading 9" paragraphs above it (a heading with
nothing under it is a section of its own). The "Title" style (or the core properties' title) gives the
document title. The ZIP is checked for bombs first.
"""

from __future__ import annotations

import io
import re

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from common.parsing.base import ParsedDocument
from common.parsing.builder import DocumentBuilder
from common.parsing.office import check_zip, damaged
from common.parsing.sniff import DOCX
from common.settings import LimitsSettings

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.I)
_KIND = "Word (.docx)"


class DocxParser:
    """Parser for Word documents."""

    format = DOCX

    def __init__(self, limits: LimitsSettings) -> None:
        self._limits = limits

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        check_zip(data, filename, _KIND, self._limits)
        try:
            return self._read(data)
        except Exception as exc:  # python-docx/lxml fail in open-ended ways on damaged parts
            raise damaged(filename, _KIND, exc) from exc

    def _read(self, data: bytes) -> ParsedDocument:
        document = docx.Document(io.BytesIO(data))
        builder = DocumentBuilder()
        headings: list[tuple[int, str]] = []
        title = ""
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                builder.section(render_table(block), _path(headings))
                continue
            text = block.text.strip()
            level = _heading_level(block)
            if level is None:
                builder.section(text, _path(headings))
            elif text:
                while headings and headings[-1][0] >= level:
                    headings.pop()
                headings.append((level, text))
                builder.heading(text, _path(headings), level=level + 1)  # "Title" is level 0
                title = title or (text if level <= 1 else "")
        core_title = document.core_properties.title or ""
        return builder.build(self.format, title=core_title or title)


def _heading_level(paragraph: Paragraph) -> int | None:
    """1-9 for "Heading N" paragraphs, 0 for the "Title" style, None for body text."""
    style_name = (paragraph.style.name if paragraph.style is not None else "") or ""
    if style_name.lower() == "title":
        return 0
    match = _HEADING_STYLE.match(style_name.strip())
    return int(match.group(1)) if match else None


def render_table(table: Table) -> str:
    """One line per row, cells joined by " | "; merged cells repeat once, empty rows are dropped."""
    lines = []
    for row in table.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            if cell._tc is previous:  # a horizontally merged cell is listed once per grid column
                continue
            previous = cell._tc
            cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append(" | ".join(cells))
    return "\n".join(lines)


def _path(headings: list[tuple[int, str]]) -> tuple[str, ...]:
    return tuple(text for _, text in headings)
