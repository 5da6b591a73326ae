"""Headings with nothing under them become sections of their own, so that their text is searchable.

A heading's text reaches the index through the heading paths (chunk titles) of the sections under it.
A heading with no body text and no subheading before the next heading of its level or above (a
Markdown file that is one `# Title`, a title-only slide, an empty last chapter) would be in no chunk
at all: such a heading is a section whose text is the heading itself, under its own heading path.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.parsing.base import Section


@dataclass(frozen=True, slots=True)
class Heading:
    """A heading where it stands in the document text (`text` is `document.text[start_char:...]`);
    `level` 1 is the outermost; `heading_path` ends with this heading's own (cleaned) text."""

    text: str
    level: int
    heading_path: tuple[str, ...]
    start_char: int
    page: int | None = None


def with_lone_headings(sections: list[Section], headings: list[Heading]) -> list[Section]:
    """`sections` (in document order) plus a section for each heading of `headings` (in document order)
    that nothing belongs to: the next section or heading after it is a heading of its level or above,
    or there is none."""
    if not headings:
        return sections
    merged: list[Section | Heading] = sorted([*sections, *headings], key=lambda item: item.start_char)
    out: list[Section] = []
    for index, item in enumerate(merged):
        if isinstance(item, Section):
            out.append(item)
            continue
        following = merged[index + 1] if index + 1 < len(merged) else None
        if following is None or (isinstance(following, Heading) and following.level <= item.level):
            if item.text.strip():
                out.append(Section(text=item.text, heading_path=item.heading_path, start_char=item.start_char,
                                   page=item.page))
    return out
