"""PowerPoint (.pptx) via python-pptx: one section per slide, the slide title as its heading.

A slide's text is its shapes' text frames and tables (" | " rows) in shape order, group shapes
walked with an explicit stack, then its speaker notes (a slide with a title and nothing else is its
title). Sections carry the slide number as `page`; the slide count is checked against
`limits.max_pages`. The ZIP is checked for bombs first.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator

import pptx
from pptx.shapes.autoshape import Shape
from pptx.shapes.base import BaseShape
from pptx.shapes.graphfrm import GraphicFrame
from pptx.shapes.group import GroupShape

from common.errors import LimitExceeded
from common.parsing.base import ParsedDocument
from common.parsing.builder import DocumentBuilder
from common.parsing.office import check_zip, damaged
from common.parsing.sniff import PPTX
from common.settings import LimitsSettings

_KIND = "PowerPoint (.pptx)"


class PptxParser:
    """Parser for PowerPoint presentations."""

    format = PPTX

    def __init__(self, limits: LimitsSettings) -> None:
        self._limits = limits

    def parse(self, data: bytes, filename: str) -> ParsedDocument:
        check_zip(data, filename, _KIND, self._limits)
        try:
            presentation = pptx.Presentation(io.BytesIO(data))
            slide_count = len(presentation.slides)
        except Exception as exc:  # python-pptx/lxml fail in open-ended ways on damaged parts
            raise damaged(filename, _KIND, exc) from exc
        if slide_count > self._limits.max_pages:
            raise LimitExceeded(
                f'file "{filename}" is a presentation with {slide_count} slides, above the limit of '
                f"{self._limits.max_pages} (limits.max_pages); split it into smaller files"
            )
        try:
            return self._read(presentation, slide_count)
        except Exception as exc:  # as above, for slide parts loaded lazily
            raise damaged(filename, _KIND, exc) from exc

    def _read(self, presentation: object, slide_count: int) -> ParsedDocument:
        builder = DocumentBuilder()
        for number, slide in enumerate(presentation.slides, start=1):  # type: ignore[attr-defined]
            title_shape = slide.shapes.title
            title = " ".join(title_shape.text_frame.text.split()) if title_shape is not None else ""
            heading = title or f"Slide {number}"
            builder.heading(heading, (heading,) if title else None, page=number)  # a title-only slide is its title
            title_id = title_shape.shape_id if title_shape is not None else None
            texts = [_shape_text(shape) for shape in _walk(slide.shapes) if shape.shape_id != title_id]
            if slide.has_notes_slide:
                texts.append(slide.notes_slide.notes_text_frame.text if slide.notes_slide.notes_text_frame else "")
            builder.section("\n".join(text for text in texts if text.strip()), (heading,), page=number)
        core_title = presentation.core_properties.title or ""  # type: ignore[attr-defined]
        first_title = builder.parts[0] if builder.parts else ""
        return builder.build(self.format, title=core_title or first_title, pages=slide_count)


def _walk(shapes: Iterable[BaseShape]) -> Iterator[BaseShape]:
    """Shapes in order, group members in place of their group, without recursion."""
    stack = [iter(shapes)]
    while stack:
        shape = next(stack[-1], None)
        if shape is None:
            stack.pop()
        elif isinstance(shape, GroupShape):
            stack.append(iter(shape.shapes))
        else:
            yield shape


def _shape_text(shape: BaseShape) -> str:
    if isinstance(shape, GraphicFrame) and shape.has_table:
        rows = (" | ".join(" ".join(cell.text.split()) for cell in row.cells) for row in shape.table.rows)
        return "\n".join(row for row in rows if row.replace("|", "").strip())
    if isinstance(shape, Shape) and shape.has_text_frame:
        return shape.text_frame.text.strip()
    return ""
