"""`like` matching without backtracking (vectordb/like.py), held equal to a straightforward reference."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vectordb.evaluation import evaluate
from vectordb.expr import compile_filter
from vectordb.like import LikePattern

from .conftest import make_schema
from .test_expr import Rows


def reference_like(pattern: str, text: str) -> bool:
    """The textbook definition, by dynamic programming over pattern tokens (`%` any run, `_` one character,
    a backslash takes the next character literally): the text positions reachable after each token."""
    reachable = [True] + [False] * len(text)
    i = 0
    while i < len(pattern):
        c, literal = pattern[i], False
        if c == "\\" and i + 1 < len(pattern):
            c, literal = pattern[i + 1], True
            i += 1
        i += 1
        if c == "%" and not literal:
            for p in range(1, len(text) + 1):
                reachable[p] = reachable[p] or reachable[p - 1]
        else:
            wild = c == "_" and not literal
            reachable = [False] + [reachable[p] and (wild or text[p] == c) for p in range(len(text))]
    return reachable[len(text)]


# Small alphabets make matches, near misses, overlaps and escapes likely.
patterns = st.text(alphabet="ab%_\\", max_size=12)
texts = st.text(alphabet="ab%_\\\n", max_size=24)


@given(patterns, texts)
@example("%a%a%", "aa")
@example("%a%a%", "a")
@example("a%", "a")
@example("%ab", "aab")
@example("_%_", "a")
@example("\\%", "%")
@example("\\%", "a")
@example("a\\", "a\\")
@example("%ab_b%", "abab_b")
@example("%_b%b", "abb")
@settings(max_examples=3000, deadline=None)
def test_matches_the_reference(pattern: str, text: str) -> None:
    assert LikePattern.compile(pattern).matches(text) == reference_like(pattern, text)


@st.composite
def wide_cases(draw: st.DrawFn) -> tuple[str, str]:
    """Pieces with `_` up to 40 wide, and a text that realises the pattern (its `%`s filled, its `_`s
    chosen), then maybe has one character changed: matches and near misses."""
    sizes = st.integers(0, 40)  # parts are made 8 wide below
    pieces = draw(st.lists(sizes.flatmap(lambda n: st.text(alphabet="ab_", min_size=n, max_size=n)), min_size=1,
                           max_size=3))
    pattern = "%".join(pieces)
    text = "".join(draw(st.sampled_from("ab")) if c == "_" else draw(st.text(alphabet="ab", max_size=40))
                   if c == "%" else c for c in pattern)
    if text and draw(st.booleans()):
        i = draw(st.integers(0, len(text) - 1))
        text = text[:i] + ("b" if text[i] == "a" else "a") + text[i + 1:]
    return pattern, text


@given(wide_cases())
@example(("%" + "a_" * 10 + "b%", "a" * 10 + "ab" * 10 + "b"))  # a piece wider than one part, found late
@example(("%" + "a_" * 10 + "b%", "a" * 30))
@settings(max_examples=1000, deadline=None)
def test_wide_pieces_match_the_reference(case: tuple[str, str]) -> None:
    """Pieces with `_` wider than one regex part (1,024 characters; 8 here) are searched by their first part
    and checked by the others where it is found."""
    pattern, text = case
    assert LikePattern.compile(pattern, part_chars=8).matches(text) == reference_like(pattern, text)


def test_a_piece_wider_than_a_part() -> None:
    text = "a" * 3000 + "ab" * 800 + "b"
    assert LikePattern.compile("%" + "a_" * 800 + "b%").matches(text)
    assert not LikePattern.compile("%" + "a_" * 800 + "c%").matches(text)
    assert LikePattern.compile("%" + "a_" * 800 + "b%").checks == 1  # 1,601 wide: two parts


@given(st.text(max_size=8), st.text(max_size=30))
@settings(max_examples=500, deadline=None)
def test_any_characters_match_the_reference(pattern: str, text: str) -> None:
    """Regex metacharacters, newlines and non-ASCII text are plain characters to `like`."""
    assert LikePattern.compile(pattern).matches(text) == reference_like(pattern, text)


HOSTILE = [
    "%a" * 500 + "%",  # the filter that froze the API: backtracking made it exponential
    "%a" * 500 + "%b",  # a suffix that is never there
    "%" + "a_" * 200 + "b%",  # `_` pieces compared at every position of a run of "a"
    "_%" * 500 + "b",
]


@pytest.mark.parametrize("pattern", HOSTILE)
@pytest.mark.parametrize("text", ["a" * 10_000, "ab" * 5_000, "a" * 9_999 + "b", ("x" * 99 + "a") * 100])
def test_500_wildcards_over_10000_characters(pattern: str, text: str) -> None:
    """Each of these took longer than any test timeout with `%` as `.*` under `re.fullmatch`."""
    assert LikePattern.compile(pattern).matches(text) == reference_like(pattern, text)


def test_like_over_segment_rows():
    """The hostile pattern through the filter compiler and the evaluator."""
    schema = make_schema()
    rows = [{"id": i, "vec": [0.0] * 16, "title": ("a" * 63 + "b") if i % 2 else "a" * 64, "n": i, "score": 0.0,
             "ok": True, "meta": {"text": "a" * 10_000}} for i in range(50)]
    title = evaluate(compile_filter('title like "' + "%a" * 30 + '%b"', schema), Rows(rows))
    assert title.tolist() == [i % 2 == 1 for i in range(50)]
    text = evaluate(compile_filter('meta["text"] like "' + "%a" * 500 + '%"', schema), Rows(rows))
    assert text.all()
