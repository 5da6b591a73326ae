"""`like` patterns matched without backtracking.

A pattern is pieces separated by `%` (any run of characters, possibly empty); inside a piece `_` is any
one character and `\\x` is `x` itself (so `\\%` and `\\_` are literal). The text matches when the first
piece is its prefix, the last piece its suffix, and the pieces between occur in order, without overlap,
in what lies between. Finding each middle piece at its leftmost place is optimal (a piece has a fixed
length, so the leftmost occurrence also ends leftmost and leaves the most room for the next), so the
pieces are found left to right, each search starting where the previous piece ended: no position is
ever tried twice for the same piece. A piece without `_` is found by `str.find`; one with `_` by
regular expressions of fixed length (`.` per `_`, no quantifier or alternation, so they cannot backtrack
across pieces: at worst they compare the piece at every position of the window; see `_Piece`).

Translating `%` to `.*` for `re.fullmatch` instead backtracks exponentially in the number of `%`s
(4 wildcards over 200 characters took seconds, holding the GIL), which is what this replaces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A piece with `_` is matched in parts this wide, so that one regex call (which holds the GIL) compares at
# most this many characters per position: ~35 ms over the longest VARCHAR (65,535 characters).
_PART_CHARS = 1024


@dataclass(frozen=True, slots=True)
class _Part:
    """A stretch of a piece at `offset` within it: plain text, or a fixed-length regex when it has `_`."""

    offset: int
    text: str
    rx: re.Pattern[str] | None

    def at(self, s: str, pos: int) -> bool:
        if self.rx is None:
            return s.startswith(self.text, pos)
        return self.rx.match(s, pos) is not None

    def find(self, s: str, start: int, end: int) -> int:
        """The leftmost occurrence inside `s[start:end]` (-1: none)."""
        if self.rx is None:
            return s.find(self.text, start, end)
        m = self.rx.search(s, start, end)
        return -1 if m is None else m.start()


@dataclass(frozen=True, slots=True)
class _Piece:
    """A run of pattern characters between `%`s (`text` holds `_` where the pattern's wildcard was).

    A piece with `_` is split into parts of at most `_PART_CHARS` characters: the first is searched for,
    the others checked at their offsets from each place it is found. So one call into the regex engine
    (which holds the GIL) compares at most `_PART_CHARS` characters per position of the text, however
    wide the piece, and the checks between calls are Python steps that let other threads run.
    """

    text: str
    parts: tuple[_Part, ...]  # empty for an empty piece
    wild: bool  # has `_`

    def __len__(self) -> int:
        return len(self.text)

    def at(self, s: str, pos: int) -> bool:
        """Whether the piece matches `s` at `pos` exactly."""
        return len(s) - pos >= len(self.text) and all(p.at(s, pos + p.offset) for p in self.parts)

    def find(self, s: str, start: int, end: int) -> int:
        """The leftmost match of the piece inside `s[start:end]` (-1: none)."""
        last = end - len(self.text)  # the last place it may start
        if not self.parts:
            return start if start <= last else -1
        first, rest = self.parts[0], self.parts[1:]
        while start <= last:
            found = first.find(s, start, last + len(first.text))
            if found < 0 or not rest or all(p.at(s, found + p.offset) for p in rest):
                return found
            start = found + 1
        return -1


def _piece(chars: list[tuple[str, bool]], part_chars: int) -> _Piece:
    text = "".join(c for c, _ in chars)
    wild = any(w for _, w in chars)
    if not text:
        return _Piece(text, (), False)
    if not wild:
        return _Piece(text, (_Part(0, text, None),), False)
    parts = []
    for offset in range(0, len(chars), part_chars):
        stretch = chars[offset : offset + part_chars]
        part = "".join(c for c, _ in stretch)
        if any(w for _, w in stretch):
            rx = re.compile("".join("." if w else re.escape(c) for c, w in stretch), re.DOTALL)
            parts.append(_Part(offset, part, rx))
        else:
            parts.append(_Part(offset, part, None))
    return _Piece(text, tuple(parts), True)


@dataclass(frozen=True, slots=True)
class LikePattern:
    """A compiled `like` pattern; `matches(s)` decides in time linear in `len(s)` per piece."""

    pattern: str
    pieces: tuple[_Piece, ...]  # split on `%`: len 1 when the pattern has no `%`
    width: int = field(init=False)  # the widest piece with `_` (0: none), for the work estimate
    checks: int = field(init=False)  # the most parts a piece checks where its first part is found

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", max((len(p) for p in self.pieces if p.wild), default=0))
        object.__setattr__(self, "checks", max((len(p.parts) - 1 for p in self.pieces), default=0))

    @classmethod
    def compile(cls, pattern: str, *, part_chars: int = _PART_CHARS) -> LikePattern:
        """`part_chars`: how wide a regex part of a piece with `_` may be (smaller only to test parts)."""
        pieces: list[_Piece] = []
        current: list[tuple[str, bool]] = []  # (character, is the `_` wildcard)
        i = 0
        while i < len(pattern):
            c = pattern[i]
            if c == "\\" and i + 1 < len(pattern):
                current.append((pattern[i + 1], False))
                i += 2
                continue
            if c == "%":
                pieces.append(_piece(current, part_chars))
                current = []
            else:
                current.append((c, c == "_"))
            i += 1
        pieces.append(_piece(current, part_chars))
        return cls(pattern, tuple(pieces))

    def matches(self, s: str) -> bool:
        pieces = self.pieces
        first = pieces[0]
        if len(pieces) == 1:
            return len(s) == len(first) and first.at(s, 0)
        last = pieces[-1]
        end = len(s) - len(last)  # where the suffix starts
        if end < len(first) or not first.at(s, 0) or not last.at(s, end):
            return False
        pos = len(first)
        for piece in pieces[1:-1]:
            if not piece.text:
                continue  # `%%`
            found = piece.find(s, pos, end)
            if found < 0:
                return False
            pos = found + len(piece)
        return True

    def text_work(self, chars: int) -> int:
        """Steps (see `vectordb.evaluation.FilterBudget`) of passing over `chars` characters of text: `str.find`
        scans ~64 characters in a step; a piece with `_` compares up to its first part's width at each
        position (in C, ~200 characters a step, counted as 64), then checks its other parts (a Python
        call each, three steps) where the first is found."""
        return chars * (1 + min(self.width, _PART_CHARS)) // 64 + chars * 3 * self.checks
