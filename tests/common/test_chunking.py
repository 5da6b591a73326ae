"""Token-aware, structure-first chunking (`common/chunking.py`)."""

from __future__ import annotations

import random
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.chunking import Chunk, Chunker
from common.embedding.st_embedder import SentenceTransformerEmbedder
from common.errors import LimitExceeded
from common.parsing.base import ParsedDocument, Section
from common.parsing.markdown import MarkdownParser
from common.parsing.text import TextParser

_TOKEN = re.compile(r"\w+|[^\w\s]")


class WordTokenizer:
    """Words and punctuation marks are tokens; no batch method, so the chunker's plain path is used."""

    def __init__(self) -> None:
        self.calls = 0

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        self.calls += 1
        return [(m.start(), m.end()) for m in _TOKEN.finditer(text)]

    def count_tokens(self, text: str) -> int:
        self.calls += 1
        return len(_TOKEN.findall(text))


WORDS = (
    "river stone lamp quiet northern market signal copper forest engine harbor window ledger orbit "
    "meadow thunder paper silver garden canyon"
).split()


def sentence(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words)).capitalize() + "."


def paragraph(rng: random.Random, n_sentences: int) -> str:
    return " ".join(sentence(rng, rng.randint(4, 14)) for _ in range(n_sentences))


def text_doc(text: str) -> ParsedDocument:
    return TextParser().parse_text(text, "t.txt")


def check_invariants(doc: ParsedDocument, chunks: list[Chunk], tokenizer: WordTokenizer, limit: int) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert doc.text[chunk.start_char : chunk.end_char] == chunk.text
        assert chunk.text == chunk.text.strip() and chunk.text
        assert chunk.token_count == tokenizer.count_tokens(chunk.text) <= limit
    # Every token of every section is in some chunk, under its own heading path.
    for section in doc.sections:
        title = " > ".join(section.heading_path)
        spans = [(c.start_char, c.end_char) for c in chunks if c.title == title]
        for start, end in tokenizer.token_offsets(section.text):
            absolute = (section.start_char + start, section.start_char + end)
            assert any(s <= absolute[0] and absolute[1] <= e for s, e in spans), absolute


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        Chunker(WordTokenizer(), chunk_tokens=0, overlap_tokens=0)
    with pytest.raises(ValueError):
        Chunker(WordTokenizer(), chunk_tokens=10, overlap_tokens=10)


def test_small_paragraphs_are_packed_into_one_chunk() -> None:
    doc = text_doc("One two three.\n\nFour five six.\n\nSeven eight.")
    chunks = Chunker(WordTokenizer(), chunk_tokens=64, overlap_tokens=8).chunk(doc)
    assert [(c.text, c.start_char, c.end_char, c.token_count, c.title) for c in chunks] == [
        ("One two three.\n\nFour five six.\n\nSeven eight.", 0, len(doc.text), 11, "")
    ]


def test_a_full_chunk_breaks_at_the_paragraph_boundary() -> None:
    first = "A b c d e f g h i j k l m n o p q r s t u v w x y z aa bb cc dd."  # 31 tokens
    second = "Next one. " + "Word " * 20 + "end."  # does not fit in the first chunk's remainder
    chunks = Chunker(WordTokenizer(), chunk_tokens=40, overlap_tokens=0).chunk(text_doc(f"{first}\n\n{second}"))
    assert chunks[0].text == first
    assert chunks[1].text.startswith("Next one.")


def test_long_paragraph_splits_at_sentences_with_sentence_overlap() -> None:
    rng = random.Random(7)
    sentences = [sentence(rng, 6) for _ in range(30)]  # 7 tokens each
    doc = text_doc(" ".join(sentences))
    tokenizer = WordTokenizer()
    chunks = Chunker(tokenizer, chunk_tokens=30, overlap_tokens=10).chunk(doc)
    check_invariants(doc, chunks, tokenizer, 30)
    assert len(chunks) > 5
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert previous.text.endswith(".")
        assert current.text[0].isupper()
        overlap = previous.end_char - current.start_char
        assert overlap > 0  # one 7-token sentence of overlap fits in 10 tokens
        assert tokenizer.count_tokens(doc.text[current.start_char : previous.end_char]) == 7
        assert current.text.startswith(previous.text[-overlap:])


def test_overlong_sentence_splits_by_tokens_with_word_overlap() -> None:
    doc = text_doc(" ".join(f"w{i}" for i in range(100)))
    tokenizer = WordTokenizer()
    chunks = Chunker(tokenizer, chunk_tokens=20, overlap_tokens=5).chunk(doc)
    check_invariants(doc, chunks, tokenizer, 20)
    assert chunks[0].text == " ".join(f"w{i}" for i in range(15))  # 20 - 5 leaves room for overlap
    assert chunks[1].text.startswith("w10 ")  # the last 5 words of chunk 0
    assert chunks[1].token_count == 20
    assert chunks[-1].text.endswith("w99")


def test_no_overlap_gives_disjoint_ordered_chunks() -> None:
    rng = random.Random(3)
    doc = text_doc("\n\n".join(paragraph(rng, rng.randint(1, 6)) for _ in range(20)))
    tokenizer = WordTokenizer()
    chunks = Chunker(tokenizer, chunk_tokens=25, overlap_tokens=0).chunk(doc)
    check_invariants(doc, chunks, tokenizer, 25)
    for previous, current in zip(chunks, chunks[1:], strict=False):
        assert previous.end_char < current.start_char


def test_never_crosses_a_heading_and_titles_are_paths() -> None:
    source = "# Guide\n\nIntro words here.\n\n## Setup\n\nSetup words.\n\n# Other\n\nOther words."
    doc = MarkdownParser().parse_text(source, "g.md")
    chunks = Chunker(WordTokenizer(), chunk_tokens=100, overlap_tokens=10).chunk(doc)
    assert [(c.title, c.text) for c in chunks] == [
        ("Guide", "Intro words here."),
        ("Guide > Setup", "Setup words."),
        ("Other", "Other words."),
    ]


def test_a_heading_only_document_is_one_chunk_and_an_empty_heading_is_searchable() -> None:
    tokenizer = WordTokenizer()
    only = MarkdownParser().parse_text("# Kayaks are great for calm lakes\n", "kayaks.md")
    chunks = Chunker(tokenizer, chunk_tokens=100, overlap_tokens=10).chunk(only)
    assert [(c.title, c.text) for c in chunks] == [("Kayaks are great for calm lakes",) * 2]
    source = "# Guide\n\n## Setup\n\n## Usage\n\nUsage words."
    doc = MarkdownParser().parse_text(source, "g.md")
    chunks = Chunker(tokenizer, chunk_tokens=100, overlap_tokens=10).chunk(doc)
    assert [(c.title, c.text) for c in chunks] == [("Guide > Setup", "Setup"), ("Guide > Usage", "Usage words.")]
    check_invariants(doc, chunks, tokenizer, 100)


def test_consecutive_sections_with_one_heading_path_are_packed_together_and_keep_pages() -> None:
    text = "Alpha beta.\n\nGamma delta.\n\nEpsilon."
    sections = [
        Section("Alpha beta.", ("H",), 0, page=1),
        Section("Gamma delta.", ("H",), 13, page=2),
        Section("Epsilon.", ("I",), 27, page=2),
    ]
    doc = ParsedDocument(format="text", text=text, sections=sections)
    chunks = Chunker(WordTokenizer(), chunk_tokens=50, overlap_tokens=5).chunk(doc)
    assert [(c.text, c.title, c.page) for c in chunks] == [
        ("Alpha beta.\n\nGamma delta.", "H", 1),
        ("Epsilon.", "I", 2),
    ]


def test_the_chunk_limit_stops_the_chunker_before_the_rest_of_the_document() -> None:
    rng = random.Random(3)
    source = "\n\n".join(f"## Part {i}\n\n{paragraph(rng, 6)}" for i in range(40))
    doc = MarkdownParser().parse_text(source, "parts.md")
    everything = Chunker(WordTokenizer(), chunk_tokens=30, overlap_tokens=5).chunk(doc)
    assert len(everything) > 40
    exact = Chunker(WordTokenizer(), chunk_tokens=30, overlap_tokens=5).chunk(doc, max_chunks=len(everything))
    assert exact == everything  # at the limit is within it
    tokenizer = WordTokenizer()
    with pytest.raises(LimitExceeded) as caught:
        Chunker(tokenizer, chunk_tokens=30, overlap_tokens=5).chunk(doc, max_chunks=10, filename="parts.md")
    message = caught.value.message
    assert '"parts.md"' in message and "limits.max_chunks_per_document" in message and "10" in message
    estimate = re.search(r"about (\d+)", message)
    assert estimate and len(everything) / 2 <= int(estimate.group(1)) <= len(everything) * 2, message
    assert tokenizer.calls < len(doc.sections) // 2, "the chunker went on tokenizing past the limit"


@pytest.mark.timeout(60)
def test_long_runs_of_whitespace_are_split_in_linear_time() -> None:
    """A run of spaces without a line break is not a sentence gap; finding that must not rescan the run from
    each of its characters (2,000,000 spaces: hours with the old regex's `\\s*\\n\\s*` alternative)."""
    text = "start of it" + " " * 2_000_000 + "end of it. " + "\t" * 1_000_000 + "\n" + " " * 1_000_000 + "last"
    doc = TextParser().parse_text(text, "spaces.txt")
    chunks = Chunker(WordTokenizer(), chunk_tokens=4, overlap_tokens=0).chunk(doc)
    assert [word for c in chunks for word in c.text.split()] == text.split()


def test_section_offsets_that_do_not_match_are_a_bug() -> None:
    doc = ParsedDocument(format="text", text="abc def", sections=[Section("def", (), 0)])
    with pytest.raises(ValueError, match="parser bug"):
        Chunker(WordTokenizer(), chunk_tokens=10, overlap_tokens=0).chunk(doc)


def test_code_fence_with_blank_lines_stays_one_paragraph() -> None:
    source = "# Code\n\n```\nline one\n\nline two\n```\n\nAfter the fence."
    doc = MarkdownParser().parse_text(source, "c.md")
    chunks = Chunker(WordTokenizer(), chunk_tokens=10, overlap_tokens=0).chunk(doc)  # fence: 10 tokens
    assert chunks[0].text == "```\nline one\n\nline two\n```"


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    chunk_tokens=st.integers(4, 80),
    overlap_ratio=st.floats(0, 0.9),
    paragraphs=st.integers(1, 12),
)
def test_invariants_hold_for_random_documents(
    seed: int, chunk_tokens: int, overlap_ratio: float, paragraphs: int
) -> None:
    rng = random.Random(seed)
    parts = []
    for _ in range(paragraphs):
        kind = rng.random()
        if kind < 0.15:
            parts.append(f"{'#' * rng.randint(1, 3)} {rng.choice(WORDS)}")
        elif kind < 0.25:
            parts.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(50, 200))))  # no full stop
        else:
            parts.append(paragraph(rng, rng.randint(1, 8)))
    doc = MarkdownParser().parse_text("\n\n".join(parts), "r.md")
    tokenizer = WordTokenizer()
    overlap = min(int(chunk_tokens * overlap_ratio), chunk_tokens - 1)
    chunks = Chunker(tokenizer, chunk_tokens=chunk_tokens, overlap_tokens=overlap).chunk(doc)
    check_invariants(doc, chunks, tokenizer, chunk_tokens)


def test_one_megabyte_chunks_in_linear_time() -> None:
    rng = random.Random(11)
    parts: list[str] = []
    size = 0
    while size < 1_000_000:
        parts.append(paragraph(rng, rng.randint(1, 8)))
        size += len(parts[-1]) + 2
    doc = text_doc("\n\n".join(parts))
    tokenizer = WordTokenizer()
    started = time.perf_counter()
    chunks = Chunker(tokenizer, chunk_tokens=256, overlap_tokens=32).chunk(doc)
    elapsed = time.perf_counter() - started
    # One tokenization per paragraph plus one count per chunk: no re-tokenization loops.
    assert tokenizer.calls <= len(parts) + len(chunks) + 10
    assert elapsed < 10, elapsed
    assert all(c.token_count <= 256 for c in chunks)
    assert sum(c.token_count for c in chunks) / len(chunks) > 180  # chunks are well filled


def test_real_tokenizer(st_embedder: SentenceTransformerEmbedder) -> None:
    rng = random.Random(5)
    body = "\n\n".join(paragraph(rng, rng.randint(2, 12)) for _ in range(40))
    long_word_run = " ".join(["Pneumonoultramicroscopicsilicovolcanoconiosis"] * 120)  # many subwords
    source = f"# Title\n\n{body}\n\n## Words\n\n{long_word_run}\n\n## Naïve café ✓\n\nÜbergröße — «quoted» text."
    doc = MarkdownParser().parse_text(source, "real.md")
    chunks = Chunker(st_embedder, chunk_tokens=64, overlap_tokens=8).chunk(doc)
    for chunk in chunks:
        assert doc.text[chunk.start_char : chunk.end_char] == chunk.text
        assert chunk.token_count == st_embedder.count_tokens(chunk.text) <= 64
    titles = [c.title for c in chunks]
    assert titles[0] == "Title" and titles[-1] == "Title > Naïve café ✓"
    words_chunks = [c for c in chunks if c.title == "Title > Words"]
    assert len(words_chunks) > 5
    assert all(c.text.startswith("Pneumono") and c.text.endswith("coniosis") for c in words_chunks)
    assert min(c.token_count for c in chunks if c.title == "Title") > 20


class _WholeTexts:
    """The model's tokenizer with its word runs hidden: every chunk's count comes from its text."""

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer = tokenizer
        self.max_tokens = tokenizer.max_tokens  # type: ignore[attr-defined]

    def count_tokens(self, text: str) -> int:
        return self._tokenizer.count_tokens(text)  # type: ignore[attr-defined]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self._tokenizer.token_offsets(text)  # type: ignore[attr-defined]


def test_counts_from_word_runs_equal_counting_each_chunk_again() -> None:
    from common.embedding.st_embedder import bundled_model_path
    from common.embedding.tokenizer import ModelTokenizer

    tokenizer = ModelTokenizer.from_model_dir(bundled_model_path())
    assert tokenizer.word_runs
    rng = random.Random(7)
    words = ["river", "granite", "os.path.join(a,b)", "naïve", "日本語", "x" * 300, "y." * 60,
             "thermodynamically" * 5, "e\u0301t\u00e9", "\u2028",
             "don't", "(est.", "1999)", "a\u00a0b"]
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 40))) + "." for _ in range(120)]
    distinct = "\n\n".join(f"## Part {i}\n\n{' '.join(sentences[i:i + 5])}\f" for i in range(0, 110, 5))
    # The same heading again: its text lies between two paragraphs of one group, in no paragraph.
    repeated = "\n\n".join(f"## Same\n\n{' '.join(sentences[i:i + 4])}\n\n## Same\n\n{sentences[i + 4]}"
                           for i in range(0, 110, 5))
    for markdown in (distinct, repeated):
        document = MarkdownParser().parse_text(markdown, "runs.md")
        for size, overlap in ((48, 8), (16, 4)):  # 16: the 30-token word is cut inside, where its tokens change
            fast = Chunker.for_model(tokenizer, size, overlap).chunk(document)
            slow = Chunker.for_model(_WholeTexts(tokenizer), size, overlap).chunk(document)  # type: ignore[arg-type]
            assert fast == slow
            assert all(chunk.token_count == tokenizer.count_tokens(chunk.text) <= size for chunk in fast)
