"""Token-aware, structure-first chunking of a `ParsedDocument`.

Rules, in order of precedence:
- A chunk never crosses a heading boundary: consecutive sections with the same heading path form one
  group, and groups are chunked independently.
- Within a group, whole paragraphs are packed together; a paragraph that does not fit starts a new
  chunk once the current one is at least half full, otherwise the chunk is filled sentence by
  sentence. A sentence longer than a chunk is cut at word-starting token boundaries.
- Every chunk holds at most `chunk_tokens` tokens of the model tokenizer (no special tokens); the count
  is that of the final chunk text, and `Chunk.token_count` is that count.
- Consecutive chunks of one group overlap by up to `overlap_tokens` tokens: whole trailing sentences of
  the previous chunk where they fit, else its last words.

Offsets: `doc.text[chunk.start_char:chunk.end_char] == chunk.text`, and `chunk.text` has no leading or
trailing whitespace.

Limit: with `max_chunks` (a worker passes `limits.max_chunks_per_document`), a document that would make
more chunks is refused with `LimitExceeded` as soon as the count passes the limit: the groups after
that are never tokenized (the group being chunked was: its size is bounded by `limits.max_text_chars`).

Cost: each paragraph is tokenized once, in batches where the tokenizer offers them (`token_bounds`,
`token_offsets_batch`; the model's `ModelTokenizer` from remembered word runs). Each chunk's text is
tokenized once more for its exact count, except with a tokenizer of `word_runs` (its tokens never
cross whitespace) when the chunk begins and ends between runs and its group holds no text outside
its paragraphs: then the group's tokens inside the chunk are exactly its text's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby, pairwise
from typing import NamedTuple, Protocol

import numpy as np

from common.errors import LimitExceeded
from common.parsing.base import ParsedDocument, Section
from common.parsing.text import paragraph_spans
from common.settings import chunking_problem

TITLE_SEPARATOR = " > "

# The whitespace a word-run tokenizer splits at (`ModelTokenizer.word_runs`).
_RUN_GAP = frozenset(" \t\n\r")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})", re.M)
_LINE = re.compile(r"^[^\n]*", re.M)
# Where a sentence ends: a run of whitespace after terminal punctuation (optionally closed by a quote or
# bracket) or holding a line break, or right after CJK terminal punctuation. Runs are found whole and judged
# in Python (`_sentences`): a regex alternative `\s*\n\s*` scanned a long run from each of its characters.
_GAP_CANDIDATE = re.compile(r"\s+|(?<=[\u3002\uff01\uff1f])")
_TERMINAL = frozenset(".!?\u2026")
_CLOSING = frozenset("\"'\u201d\u2019)]")
_CJK_TERMINAL = frozenset("\u3002\uff01\uff1f")


class Tokenizer(Protocol):
    """What the chunker needs from a tokenizer; every `Embedder` provides it."""

    def count_tokens(self, text: str) -> int: ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]: ...


class ModelBound(Tokenizer, Protocol):
    """A model's tokenizer that knows how many tokens the model reads (every `Embedder`)."""

    @property
    def max_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Chunk:
    """One chunk of a document: `text` is `document.text[start_char:end_char]`; title is its heading path."""

    ordinal: int
    text: str
    title: str
    start_char: int
    end_char: int
    token_count: int
    page: int | None = None


class _Unit(NamedTuple):
    """A sentence, or a piece of an over-long one; tokens are indexes into the group's token list.
    (A tuple: tens of thousands are made per document, ~3x faster than a frozen dataclass.)"""

    start_char: int
    end_char: int
    first_token: int
    end_token: int
    paragraph_end_token: int
    starts_paragraph: bool
    page: int | None


@dataclass(slots=True)
class _Tokens:
    """All tokens of one group, as absolute character offsets into the document text."""

    starts: list[int]
    ends: list[int]

    def starts_word(self, index: int) -> bool:
        """Whether token `index` is preceded by a gap (whitespace), i.e. is not a word continuation."""
        return index == 0 or self.starts[index] > self.ends[index - 1]



class Chunker:
    """Splits parsed documents into chunks of at most `chunk_tokens` tokens (see the module doc)."""

    def __init__(self, tokenizer: Tokenizer, chunk_tokens: int, overlap_tokens: int) -> None:
        if chunk_tokens < 1:
            raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
        problem = chunking_problem(chunk_tokens, overlap_tokens)
        if problem:
            raise ValueError(problem)
        # An embedder's `chunk_tokenizer`, where it has one, directly: its batch methods and word runs.
        self._tokenizer = getattr(tokenizer, "chunk_tokenizer", tokenizer)
        self._chunk_tokens = chunk_tokens
        self._overlap_tokens = overlap_tokens

    @classmethod
    def for_model(cls, tokenizer: ModelBound, chunk_tokens: int, overlap_tokens: int) -> Chunker:
        """A chunker within what the model reads: chunks never longer than `tokenizer.max_tokens` (the
        model would silently drop the tail of every full chunk), overlap at most half a chunk."""
        chunk_tokens = min(chunk_tokens, tokenizer.max_tokens)
        return cls(tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=min(overlap_tokens, chunk_tokens // 2))

    def chunk(self, doc: ParsedDocument, *, max_chunks: int | None = None, filename: str = "") -> list[Chunk]:
        """Chunks of `doc` in document order, with ordinals 0..n-1; `LimitExceeded` (naming `filename`)
        once they would be more than `max_chunks`."""
        spans: list[tuple[str, int, int, int | None]] = []
        packed: list[int | None] = []  # a span's count from its group's tokens, where that is exact
        text = doc.text
        word_runs = getattr(self._tokenizer, "word_runs", False)
        for heading_path, sections in groupby(doc.sections, key=lambda section: section.heading_path):
            title = TITLE_SEPARATOR.join(heading_path)
            for start, end, page, tokens in self._group_spans(text, list(sections)):
                start, end = _strip_span(text, start, end)
                if start < end:
                    spans.append((title, start, end, page))
                    whole_runs = (start == 0 or text[start - 1] in _RUN_GAP) and (
                        end == len(text) or text[end] in _RUN_GAP)
                    packed.append(tokens if word_runs and whole_runs else None)
                    if max_chunks is not None and len(spans) > max_chunks:
                        raise too_many_chunks(filename, max_chunks, estimate=len(spans) * len(text) // end)
        counts = self._span_counts(text, spans, packed)
        chunks: list[Chunk] = []
        for (title, start, end, page), count in zip(spans, counts, strict=True):
            for piece_start, piece_end, piece_count in self._fit(doc.text, start, end, count):
                chunks.append(
                    Chunk(
                        ordinal=len(chunks),
                        text=doc.text[piece_start:piece_end],
                        title=title,
                        start_char=piece_start,
                        end_char=piece_end,
                        token_count=piece_count,
                        page=page,
                    )
                )
        if max_chunks is not None and len(chunks) > max_chunks:  # pieces re-split by `_fit`
            raise too_many_chunks(filename, max_chunks, count=len(chunks))
        return chunks

    # -- one heading group -------------------------------------------------------------------------

    def _group_spans(self, text: str, sections: list[Section]) -> Iterator[tuple[int, int, int | None, int | None]]:
        """(start_char, end_char, page, tokens) of each chunk of one heading group, before the final
        check; `tokens`: how many of the group's tokens it spans, or None where the group's paragraphs
        are apart by more than whitespace (a heading repeated under the same path: text no paragraph
        holds, so no token of the group counts it)."""
        paragraphs = [
            (section.start_char + start, section.start_char + end, section.page)
            for section in sections
            for start, end in _paragraphs(_checked_section_text(text, section))
        ]
        if not paragraphs:
            return
        tokens = self._tokenize(text, paragraphs)
        units = self._units(text, paragraphs, tokens)
        apart = any(text[end:start].strip(" \t\n\r") for (_, end, _), (start, _, _) in pairwise(paragraphs))
        for start, end, page, count in self._pack(units, tokens):
            yield start, end, page, None if apart else count

    def _tokenize(self, text: str, paragraphs: list[tuple[int, int, int | None]]) -> _Tokens:
        bounds = getattr(self._tokenizer, "token_bounds", None)
        if bounds is not None:
            return _Tokens(*bounds(text, [(start, end) for start, end, _ in paragraphs]))
        per_paragraph = self._token_offsets([text[start:end] for start, end, _ in paragraphs])
        starts: list[int] = []
        ends: list[int] = []
        for (paragraph_start, _, _), offsets in zip(paragraphs, per_paragraph, strict=True):
            starts.extend(paragraph_start + start for start, _ in offsets)
            ends.extend(paragraph_start + end for _, end in offsets)
        return _Tokens(starts, ends)

    def _token_offsets(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        batch = getattr(self._tokenizer, "token_offsets_batch", None)
        if batch is not None:
            return list(batch(texts))
        return [self._tokenizer.token_offsets(text) for text in texts]

    def _span_counts(self, text: str, spans: list[tuple[str, int, int, int | None]],
                     packed: list[int | None]) -> list[int]:
        """Each span's token count: its group's tokens where its tokenizer tokenizes word runs alone and
        the span begins and ends between runs (then those are exactly the tokens of its text), else
        its text tokenized again."""
        todo = [i for i, count in enumerate(packed) if count is None]
        counts = self._count_tokens([text[spans[i][1]:spans[i][2]] for i in todo])
        exact = list(packed)
        for i, count in zip(todo, counts, strict=True):
            exact[i] = count
        return [count for count in exact if count is not None]

    def _count_tokens(self, texts: list[str]) -> list[int]:
        batch = getattr(self._tokenizer, "count_tokens_batch", None)
        if batch is not None:
            return list(batch(texts))
        if hasattr(self._tokenizer, "token_offsets_batch"):
            return [len(offsets) for offsets in self._token_offsets(texts)]
        return [self._tokenizer.count_tokens(text) for text in texts]

    def _units(
        self, text: str, paragraphs: list[tuple[int, int, int | None]], tokens: _Tokens
    ) -> list[_Unit]:
        """The sentences of the group's paragraphs, each with its token range: one sorted search of the
        group's token starts for every paragraph and sentence edge at once."""
        sentences = [list(_sentences(text, start, end)) for start, end, _ in paragraphs]
        edges: list[int] = [edge for start, end, _ in paragraphs for edge in (start, end)]
        for spans in sentences:
            edges.extend(edge for span in spans for edge in span)
        found = np.searchsorted(np.asarray(tokens.starts, dtype=np.int64), edges).tolist()
        at = iter(found[2 * len(paragraphs):])
        long_units = self._chunk_tokens
        units: list[_Unit] = []
        for index, ((_, _, page), spans) in enumerate(zip(paragraphs, sentences, strict=True)):
            paragraph_end_token = found[2 * index + 1]
            starts_paragraph = True
            for start, end in spans:
                first_token, end_token = next(at), next(at)
                sentence = _Unit(start, end, first_token, end_token, paragraph_end_token, starts_paragraph, page)
                if end_token - first_token <= long_units:
                    units.append(sentence)
                else:
                    units.extend(self._split_long(sentence, tokens))
                starts_paragraph = False
        return units

    def _split_long(self, unit: _Unit, tokens: _Tokens) -> list[_Unit]:
        """Cut a sentence longer than a chunk into pieces that leave room for the overlap."""
        if unit.end_token - unit.first_token <= self._chunk_tokens:
            return [unit]
        piece_tokens = self._chunk_tokens - self._overlap_tokens
        pieces: list[_Unit] = []
        first = unit.first_token
        while first < unit.end_token:
            end = min(first + piece_tokens, unit.end_token)
            if end < unit.end_token:  # prefer to cut before a word, not inside one
                floor = first + max(piece_tokens // 2, 1)
                end = next((cut for cut in range(end, floor - 1, -1) if tokens.starts_word(cut)), end)
            start_char = unit.start_char if first == unit.first_token else tokens.starts[first]
            end_char = unit.end_char if end == unit.end_token else tokens.ends[end - 1]
            starts_paragraph = unit.starts_paragraph and not pieces
            pieces.append(
                _Unit(start_char, end_char, first, end, unit.paragraph_end_token, starts_paragraph, unit.page)
            )
            first = end
        return pieces

    def _pack(self, units: list[_Unit], tokens: _Tokens) -> Iterator[tuple[int, int, int | None, int]]:
        limit = self._chunk_tokens
        first_unit = 0
        start_char, start_token, page = units[0].start_char, units[0].first_token, units[0].page
        end_char, end_token = units[0].end_char, units[0].end_token
        for index in range(1, len(units)):
            unit = units[index]
            size = end_token - start_token
            fits = unit.end_token - start_token <= limit
            paragraph_fits = unit.paragraph_end_token - start_token <= limit
            if fits and not (unit.starts_paragraph and not paragraph_fits and size >= limit // 2):
                end_char, end_token = unit.end_char, unit.end_token
                continue
            yield start_char, end_char, page, end_token - start_token
            start_char, start_token, page = self._overlap_start(units, first_unit, index, start_token, tokens)
            first_unit = index
            end_char, end_token = unit.end_char, unit.end_token
        yield start_char, end_char, page, end_token - start_token

    def _overlap_start(
        self, units: list[_Unit], first_unit: int, next_unit: int, chunk_start_token: int, tokens: _Tokens
    ) -> tuple[int, int, int | None]:
        """Where the chunk that begins with `units[next_unit]` starts, counting its overlap."""
        unit = units[next_unit]
        budget = min(self._overlap_tokens, self._chunk_tokens - (unit.end_token - unit.first_token))
        previous_end = units[next_unit - 1].end_token
        if budget <= 0:
            return unit.start_char, unit.first_token, unit.page
        # Whole sentences first; never repeat the entire previous chunk.
        best: _Unit | None = None
        for candidate in reversed(units[first_unit:next_unit]):
            if previous_end - candidate.first_token > budget or candidate.first_token <= chunk_start_token:
                break
            best = candidate
        if best is not None:
            return best.start_char, best.first_token, best.page
        # Else the last words of the previous chunk.
        for token in range(max(previous_end - budget, chunk_start_token + 1), previous_end):
            if tokens.starts_word(token):
                return tokens.starts[token], token, units[next_unit - 1].page
        return unit.start_char, unit.first_token, unit.page

    # -- final check ---------------------------------------------------------------------------------

    def _fit(self, text: str, start: int, end: int, count: int) -> Iterator[tuple[int, int, int]]:
        """Yield (start, end, exact token count) for a stripped span of `count` tokens, re-split if too long.

        Counting the chunk text can differ from the per-paragraph count for tokenizers whose tokens
        depend on context across whitespace; this keeps the limit a guarantee for any tokenizer.
        """
        if count <= self._chunk_tokens:
            yield start, end, count
            return
        offsets = self._tokenizer.token_offsets(text[start:end])
        window = self._chunk_tokens
        index = 0
        while index < len(offsets):
            piece_end = min(index + window, len(offsets))
            piece_start_char = start + offsets[index][0]
            piece_end_char = start + offsets[piece_end - 1][1] if piece_end < len(offsets) else end
            piece_start_char, piece_end_char = _strip_span(text, piece_start_char, piece_end_char)
            piece_count = self._tokenizer.count_tokens(text[piece_start_char:piece_end_char])
            if piece_count > self._chunk_tokens and window > 1:
                window = max(window * 3 // 4, 1)
                continue
            if piece_start_char < piece_end_char:
                yield piece_start_char, piece_end_char, piece_count
            index = piece_end
            window = self._chunk_tokens


def too_many_chunks(filename: str, limit: int, *, count: int | None = None, estimate: int | None = None
                    ) -> LimitExceeded:
    """The error for a document of more than `limit` chunks: its exact `count`, or an `estimate` where
    chunking stopped at the limit (the chunks so far, scaled to the whole text)."""
    name = f'file "{filename}"' if filename else "the document"
    how_many = f"{count} chunks" if count is not None else f"more than {limit} chunks (about {estimate} in all)"
    return LimitExceeded(
        f"{name} makes {how_many}, above the limit of {limit} (limits.max_chunks_per_document); split it into "
        "smaller files, or raise the limit for documents this large"
    )


def _checked_section_text(text: str, section: Section) -> str:
    if not text.startswith(section.text, section.start_char):
        raise ValueError(f"section at {section.start_char} does not match the document text (parser bug)")
    return section.text


def _paragraphs(section_text: str) -> list[tuple[int, int]]:
    """Paragraph spans of a section; blank lines inside fenced code blocks do not end a paragraph."""
    if not _FENCE.search(section_text):
        return paragraph_spans(section_text)
    spans: list[tuple[int, int]] = []
    start: int | None = None
    end = 0
    fence: str | None = None
    for line in _LINE.finditer(section_text):
        content = line.group().strip()
        if fence is None and not content:
            if start is not None:
                spans.append((start, end))
                start = None
            continue
        if fence is None:
            opening = _FENCE.match(line.group())
            fence = opening.group(1) if opening else None
        elif content.startswith(fence) and not content.strip(fence[0]):
            fence = None
        if start is None:
            start = line.start() + len(line.group()) - len(line.group().lstrip())
        if content:
            end = line.start() + len(line.group().rstrip())
    if start is not None:
        spans.append((start, end))
    return spans


def _sentences(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Absolute spans of the sentences (and lines) in text[start:end], without surrounding whitespace."""
    position = start
    for gap in _GAP_CANDIDATE.finditer(text, start, end):
        if not _ends_sentence(text, gap.start(), gap.end()):
            continue
        if gap.start() > position:
            yield position, gap.start()
        position = max(position, gap.end())
    if end > position:
        yield position, end


def _ends_sentence(text: str, start: int, end: int) -> bool:
    """Whether the whitespace text[start:end] (empty: right after CJK punctuation) separates sentences."""
    before = text[start - 1] if start else ""
    if start == end or before in _CJK_TERMINAL or "\n" in text[start:end] or before in _TERMINAL:
        return True
    return before in _CLOSING and start > 1 and text[start - 2] in _TERMINAL


def _strip_span(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
