"""The model tokenizer every backend shares: chunk sizing (counts, offsets) and model input ids.

Built from a Hugging Face `tokenizers.Tokenizer`, so it needs neither torch nor transformers: the ONNX
and OpenAI backends read `tokenizer.json` straight from the model directory.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer


def read_max_seq_length(model_dir: Path) -> int:
    """Tokens (special ones included) a sentence-transformers model reads before truncating.

    `sentence_bert_config.json` as sentence-transformers reads it; else the tokenizer's
    `model_max_length`, else the transformer's `max_position_embeddings`.
    """
    for file_name, key in (
        ("sentence_bert_config.json", "max_seq_length"),
        ("tokenizer_config.json", "model_max_length"),
        ("config.json", "max_position_embeddings"),
    ):
        path = model_dir / file_name
        if path.is_file():
            value = json.loads(path.read_text(encoding="utf-8")).get(key)
            # tokenizer_config.json says 1e30 when it has no real limit.
            if isinstance(value, int) and 0 < value < 1_000_000:
                return value
    raise ValueError(f"embedding model {model_dir} states no maximum sequence length")


class ModelTokenizer:
    """Thread-safe tokenization with a model's tokenizer.

    Two private copies of the tokenizer: one with truncation and padding off (`count_tokens`,
    `token_offsets`: chunking must see every token), one truncating to `max_seq_length` (model input,
    special tokens included). Neither is changed after construction, so concurrent calls are safe.
    """

    def __init__(self, tokenizer: Tokenizer, max_seq_length: int) -> None:
        serialized = tokenizer.to_str()
        self._plain = Tokenizer.from_str(serialized)
        self._plain.no_truncation()
        self._plain.no_padding()
        self._model_input = Tokenizer.from_str(serialized)
        self._model_input.no_padding()
        self._model_input.enable_truncation(max_length=max_seq_length)
        post_processor = self._plain.post_processor
        special = post_processor.num_special_tokens_to_add(False) if post_processor is not None else 0
        # max_seq_length counts the special tokens ([CLS], [SEP]) the model adds; count_tokens does not.
        self._special = int(special)
        self._max_seq_length = max_seq_length
        self._max_tokens = max_seq_length - self._special

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ModelTokenizer:
        """The tokenizer of a local sentence-transformers model directory (its `tokenizer.json`)."""
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"embedding model directory {model_dir} has no tokenizer.json")
        return cls(Tokenizer.from_file(str(path)), read_max_seq_length(model_dir))

    @property
    def max_tokens(self) -> int:
        """Content tokens the model reads before truncating: max_seq_length minus special tokens."""
        return self._max_tokens

    def count_tokens(self, text: str) -> int:
        return len(self._plain.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return list(self._plain.encode(text, add_special_tokens=False).offsets)

    def token_offsets_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """`token_offsets` of several texts in one call (tokenized in parallel by the Rust library)."""
        return [list(encoding.offsets) for encoding in self._plain.encode_batch(texts, add_special_tokens=False)]

    def model_input_lengths(self, texts: list[str], token_counts: Sequence[int | None] | None = None) -> list[int]:
        """`len` of each text's `model_input_ids`; a text whose `count_tokens` is given in `token_counts`
        (a chunk knows its own) is not tokenized again."""
        counts = list(token_counts) if token_counts is not None else [None] * len(texts)
        if len(counts) != len(texts):
            raise ValueError(f"got {len(counts)} token counts for {len(texts)} texts")
        unknown = [i for i, count in enumerate(counts) if count is None]
        lengths = [0 if count is None else min(count + self._special, self._max_seq_length) for count in counts]
        for i, ids in zip(unknown, self.model_input_ids([texts[i] for i in unknown]), strict=True):
            lengths[i] = len(ids)
        return lengths

    def model_input_ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids as the model reads them: special tokens added, truncated to max_seq_length."""
        return [encoding.ids for encoding in self._model_input.encode_batch(texts, add_special_tokens=True)]
