"""The model tokenizer every backend shares: chunk sizing (counts, offsets) and model input ids.

Built from a Hugging Face `tokenizers.Tokenizer`, so it needs neither torch nor transformers: the ONNX
and OpenAI backends read `tokenizer.json` straight from the model directory.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

# A run of characters between the ASCII whitespace every BERT-style tokenizer splits at (other Unicode
# spaces are left inside runs: some are removed rather than split at, and the tokenizer handles them).
_RUN = re.compile(r"[^ \t\n\r]+")
_SEPARATED = re.compile(r"([ \t\n\r]+)")  # splits a text into runs with the whitespace between them
# Normalizers and pre-tokenizers that act on each character or each whitespace-separated word alone.
_WORD_LOCAL_NORMALIZERS = frozenset({"BertNormalizer", "Lowercase", "NFD", "NFKD", "NFC", "NFKC", "StripAccents"})
_WORD_LOCAL_PRE_TOKENIZERS = frozenset({"BertPreTokenizer", "Whitespace", "WhitespaceSplit", "Punctuation", "Digits"})
# Distinct runs whose tokens are remembered (a few tens of MB at most); the memory starts over when full.
RUN_CACHE_ENTRIES = 200_000


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

    Word runs: when the tokenizer normalizes characters one by one and splits at whitespace before
    anything else (BERT's WordPiece, the default model's), a text's tokens are the tokens of its
    whitespace-separated runs tokenized alone. `token_offsets_batch` and `count_tokens_batch` then
    tokenize each distinct run once and remember its token offsets: real text repeats its words, so
    most runs are found, not tokenized (chunking the Python docs: 4x less time than the Rust
    tokenizer over whole paragraphs). Other tokenizers (byte-level BPE, SentencePiece: a token may
    carry the space before it) tokenize whole texts.
    """

    def __init__(self, tokenizer: Tokenizer, max_seq_length: int) -> None:
        serialized = tokenizer.to_str()
        self._serialized = serialized
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
        self._word_runs = splits_at_whitespace(json.loads(serialized))
        self._runs: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def __reduce__(self) -> tuple[object, tuple[str, int]]:
        """Pickled as its tokenizer's JSON (what a parsing process builds its own copy from)."""
        return _from_serialized, (self._serialized, self._max_seq_length)

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> ModelTokenizer:
        """The tokenizer of a local sentence-transformers model directory (its `tokenizer.json`)."""
        path = model_dir / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"embedding model directory {model_dir} has no tokenizer.json")
        return cls(Tokenizer.from_file(str(path)), read_max_seq_length(model_dir))

    @property
    def word_runs(self) -> bool:
        """Whether a text's tokens are those of its runs between ASCII whitespace, each tokenized alone
        (then a span from run boundary to run boundary has exactly the tokens found inside it)."""
        return self._word_runs

    @property
    def max_tokens(self) -> int:
        """Content tokens the model reads before truncating: max_seq_length minus special tokens."""
        return self._max_tokens

    def count_tokens(self, text: str) -> int:
        return self.count_tokens_batch([text])[0]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.token_offsets_batch([text])[0]

    def token_offsets_batch(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        """`token_offsets` of several texts in one call (word runs, see the class doc; else tokenized in
        parallel by the Rust library)."""
        if not self._word_runs:
            return [list(encoding.offsets) for encoding in self._plain.encode_batch(texts, add_special_tokens=False)]
        out: list[list[tuple[int, int]]] = []
        for text in texts:
            starts, ends = self.token_bounds(text, [(0, len(text))])
            out.append(list(zip(starts, ends, strict=True)))
        return out

    def token_bounds(self, text: str, spans: Sequence[tuple[int, int]]) -> tuple[list[int], list[int]]:
        """The tokens of `text[start:end]` for each (start, end) of `spans` in turn, as two lists: their
        start and end offsets in `text` (what the chunker indexes a heading group by)."""
        if not self._word_runs:
            starts: list[int] = []
            ends: list[int] = []
            pieces = [text[start:end] for start, end in spans]
            for (base, _), encoding in zip(spans, self._plain.encode_batch(pieces, add_special_tokens=False),
                                           strict=True):
                starts.extend(base + start for start, _ in encoding.offsets)
                ends.extend(base + end for _, end in encoding.offsets)
            return starts, ends
        runs: list[str] = []
        bases: list[int] = []
        for start, end in spans:
            # run, whitespace, run, ..., run (the first and last may be empty): each run's offset from
            # the running sum of the lengths before it, all in C (a Python loop per run costs 2x).
            parts = _SEPARATED.split(text[start:end])
            runs.extend(parts[0::2])
            bases.extend(list(accumulate(map(len, parts), initial=start))[0::2])
        known = self._remember(runs)
        run_starts, run_ends = zip(*map(known.__getitem__, runs), strict=True) if runs else ((), ())
        counts = list(map(len, run_starts))
        total = sum(counts)
        shift = np.repeat(np.array(bases, dtype=np.int64), counts)
        starts = (shift + np.fromiter(chain.from_iterable(run_starts), dtype=np.int64, count=total)).tolist()
        ends = (shift + np.fromiter(chain.from_iterable(run_ends), dtype=np.int64, count=total)).tolist()
        return starts, ends

    def count_tokens_batch(self, texts: list[str]) -> list[int]:
        """`count_tokens` of several texts in one call."""
        if not self._word_runs:
            return [len(encoding.ids) for encoding in self._plain.encode_batch(texts, add_special_tokens=False)]
        per_text = [_RUN.findall(text) for text in texts]
        runs = self._remember(run for text_runs in per_text for run in text_runs)
        return [sum(len(runs[run][0]) for run in text_runs) for text_runs in per_text]

    def _remember(self, runs: Iterable[str]) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
        """The remembered runs, with the token (starts, ends) within the run of each of `runs` not known
        yet tokenized now."""
        known = self._runs
        if len(known) > RUN_CACHE_ENTRIES:
            known = self._runs = {}
        missing = list(set(runs).difference(known))
        if missing:
            # One text of the runs, a space apart (their tokens are the same: see the class doc), each
            # token given to the run it starts in: ~1.5x less work than one encoding per run.
            encoding = self._plain.encode(" ".join(missing), add_special_tokens=False)
            offsets = np.array(encoding.offsets, dtype=np.int64).reshape(-1, 2)
            bases = np.fromiter(accumulate((len(run) + 1 for run in missing[:-1]), initial=0), dtype=np.int64,
                                count=len(missing))
            owner = np.searchsorted(bases, offsets[:, 0], "right") - 1
            relative = offsets - bases[owner][:, None]
            cuts = np.searchsorted(owner, np.arange(len(missing) + 1)).tolist()
            starts, ends = relative[:, 0].tolist(), relative[:, 1].tolist()
            for index, run in enumerate(missing):
                first, last = cuts[index], cuts[index + 1]
                known[run] = (tuple(starts[first:last]), tuple(ends[first:last]))
        return known

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


def _from_serialized(serialized: str, max_seq_length: int) -> ModelTokenizer:
    return ModelTokenizer(Tokenizer.from_str(serialized), max_seq_length)


def splits_at_whitespace(tokenizer_json: dict) -> bool:
    """Whether a tokenizer (its `tokenizer.json`) tokenizes each whitespace-separated run of a text
    alone: a character-local normalizer, a pre-tokenizer that splits at whitespace first and a model
    that never sees across its pieces (no added token that holds or strips whitespace)."""
    normalizer = tokenizer_json.get("normalizer")
    normalizers = normalizer.get("normalizers", [normalizer]) if isinstance(normalizer, dict) else []
    if normalizer is not None and not all(
        isinstance(n, dict) and n.get("type") in _WORD_LOCAL_NORMALIZERS for n in normalizers
    ):
        return False
    pre = tokenizer_json.get("pre_tokenizer")
    pres = pre.get("pretokenizers", [pre]) if isinstance(pre, dict) else []
    if not pres or not all(isinstance(p, dict) and p.get("type") in _WORD_LOCAL_PRE_TOKENIZERS for p in pres):
        return False
    if pres[0].get("type") not in {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}:
        return False
    added = tokenizer_json.get("added_tokens") or []
    return not any(token.get("lstrip") or token.get("rstrip") or token.get("single_word")
                   or any(c.isspace() for c in token.get("content", "")) for token in added)
