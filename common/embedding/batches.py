"""How a local model's texts are cut into batches: sorted by token length, each batch within a budget.

A batch costs its longest text times its count (every row is padded to the longest), and on CPU a
batch of long texts runs faster per token when it is small (the activations and attention scores of
32 x 256 tokens no longer fit in cache; measured with MiniLM on 2 cores: batches of ~2,048 padded
tokens embed the same chunks ~1.4x faster than 32 texts sorted by characters). So texts are sorted by
their token count (characters misjudge code and markup) and a batch takes texts while its padded
size stays within `max_tokens`: short texts share large batches, long ones go a few at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.embedding.tokenizer import ModelTokenizer

MAX_TEXTS_PER_BATCH = 512


def batches_by_tokens(lengths: Sequence[int], max_tokens: int,
                      max_texts: int = MAX_TEXTS_PER_BATCH) -> list[list[int]]:
    """Indices into `lengths` (model input tokens per text), shortest first, cut so that each batch's
    count times its longest length is at most `max_tokens` (a longer text gets a batch of its own) and
    each holds at most `max_texts`."""
    if max_tokens < 1 or max_texts < 1:
        raise ValueError(f"max_tokens and max_texts must be >= 1, got {max_tokens} and {max_texts}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in order:
        # Sorted ascending, so this text is the batch's longest if it joins.
        if batch and ((len(batch) + 1) * max(lengths[i], 1) > max_tokens or len(batch) == max_texts):
            batches.append(batch)
            batch = []
        batch.append(i)
    if batch:
        batches.append(batch)
    return batches


def batches_by_count(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices into `lengths`, shortest first, `batch_size` at a time."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def plan_local_batches(tokenizer: ModelTokenizer, texts: list[str], batch_size: int, batch_tokens: int,
                       token_counts: Sequence[int | None] | None = None) -> list[list[int]]:
    """A local model's plan: by token budget when `batch_tokens` > 0, else `batch_size` texts, by token
    length (`token_counts`: what is known of each text's `count_tokens`, see `Embedder.plan_batches`)."""
    lengths = tokenizer.model_input_lengths(texts, token_counts) if texts else []
    if batch_tokens > 0:
        return batches_by_tokens(lengths, batch_tokens)
    return batches_by_count(lengths, batch_size)
