"""How local models cut texts into batches (`common.embedding.batches`), and the real model's plan."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.embedding.batches import batches_by_count, batches_by_tokens
from common.embedding.st_embedder import SentenceTransformerEmbedder


@given(lengths=st.lists(st.integers(min_value=0, max_value=600), max_size=300),
       budget=st.integers(min_value=1, max_value=5000), max_texts=st.integers(min_value=1, max_value=64))
def test_token_batches_cover_every_text_once_within_the_budget(lengths: list[int], budget: int,
                                                                max_texts: int) -> None:
    batches = batches_by_tokens(lengths, budget, max_texts)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths), "shortest first, across and within batches"
    for batch in batches:
        assert 1 <= len(batch) <= max_texts
        longest = max(max(lengths[i] for i in batch), 1)
        assert len(batch) == 1 or len(batch) * longest <= budget, "only a lone text may exceed the budget"
    for batch, following in zip(batches, batches[1:], strict=False):
        # Greedy: a batch was closed only because the next text did not fit (or the count was full).
        grown = max(lengths[following[0]], 1) * (len(batch) + 1)
        assert len(batch) == max_texts or grown > budget


def test_short_texts_share_a_batch_and_long_ones_go_a_few_at_a_time() -> None:
    lengths = [256] * 20 + [16] * 100
    batches = batches_by_tokens(lengths, 2048)
    assert [len(b) for b in batches] == [100, 8, 8, 4]
    assert batches_by_count(lengths, 32)[0] == list(range(20, 52))


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        batches_by_tokens([1, 2], 0)
    with pytest.raises(ValueError, match="batch_size"):
        batches_by_count([1, 2], 0)


def test_the_model_plans_by_its_own_token_counts(st_embedder: SentenceTransformerEmbedder) -> None:
    budgeted = SentenceTransformerEmbedder(batch_tokens=512)
    code = "for key, value in sorted(mapping.items()): print(f'{key!r}: {value:>{width}}')"
    prose = "The harbour master noticed that the tide tables had been wrong for a decade."
    # Nearly as many characters, far more tokens: a character sort would put them the other way round.
    texts = [code * 3, prose * 3, "a title", prose, code]
    lengths = [st_embedder.count_tokens(t) + 2 for t in texts]
    plan = budgeted.plan_batches(texts, batch_size=32)
    flat = [i for batch in plan for i in batch]
    assert [lengths[i] for i in flat] == sorted(lengths)
    assert all(len(b) * max(lengths[i] for i in b) <= 512 for b in plan if len(b) > 1)
    # Embedding batch by batch is the same as one call.
    out = np.zeros((len(texts), budgeted.dim), np.float32)
    for rows in plan:
        out[rows] = budgeted.encode([texts[i] for i in rows], len(rows))
    np.testing.assert_allclose(out, st_embedder.encode(texts, 32), atol=1e-5)
    # Without a budget the plan is batch_size texts, by token length.
    assert [len(b) for b in st_embedder.plan_batches(texts, batch_size=2)] == [2, 2, 1]


def test_known_token_counts_plan_as_tokenizing_would(st_embedder: SentenceTransformerEmbedder) -> None:
    """A chunk's own token count stands for tokenizing it again (special tokens added, truncated to the
    model's input); texts without a count are tokenized; a count is taken as given."""
    budgeted = SentenceTransformerEmbedder(batch_tokens=512)
    texts = ["word " * n for n in (3, 40, 700, 12, 90)] + ["an unknown title"]
    counts: list[int | None] = [st_embedder.count_tokens(t) for t in texts[:-1]] + [None]
    tokenizer = budgeted._tokenizer
    assert tokenizer.model_input_lengths(texts, counts) == [len(ids) for ids in tokenizer.model_input_ids(texts)]
    assert budgeted.plan_batches(texts, 32, counts) == budgeted.plan_batches(texts, 32)
    claimed = [1] * (len(texts) - 1) + [None]  # said to be one token each: planned by the claim
    assert tokenizer.model_input_lengths(texts, claimed)[:-1] == [3] * (len(texts) - 1)
    with pytest.raises(ValueError, match="token counts"):
        tokenizer.model_input_lengths(texts, counts[:2])
