"""Parsed-document records and the `Parser` protocol."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Section:
    """A run of body text under one heading path (e.g. ("Guide", "Install")).

    `start_char` is the offset of `text` in the document's full text (`ParsedDocument.text`).
    """

    text: str
    heading_path: tuple[str, ...] = ()
    start_char: int = 0
    page: int | None = None


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """What a parser returns: the format it detected, the full text and its sections in order."""

    format: str
    text: str
    sections: list[Section] = field(default_factory=list)
    title: str = ""
    pages: int | None = None


class Parser(Protocol):
    """Turns one document's bytes into a `ParsedDocument`; raises `PermanentError` on bad input."""

    format: str

    def parse(self, data: bytes, filename: str) -> ParsedDocument: ...
