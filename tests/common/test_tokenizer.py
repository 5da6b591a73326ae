"""`ModelTokenizer`'s word runs (common/embedding/tokenizer.py): for a BERT-style tokenizer, the tokens of
each whitespace-separated run tokenized alone and remembered must be exactly what the Rust tokenizer
gives for the whole text, on real and hostile text; other tokenizers tokenize whole texts."""

from __future__ import annotations

import json
import pickle
import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from common.embedding import tokenizer as tokenizer_module
from common.embedding.st_embedder import bundled_model_path
from common.embedding.tokenizer import ModelTokenizer, splits_at_whitespace

HOSTILE = [
    "a\x0cb c", "e\u0301cole  naïve", "日本語のテキスト。次の文", "x\u00a0y", "\u200bzero width", "a" * 150 + " b",
    "İstanbul ΣΑΣ", "emoji 😀😀 a©b", "[CLS] x [MASK]y", "\x85z\u2028w", "  lead  trail  ", "", "\t\n\r",
    "don't-stop (now)... os.path.join(a,b)", "\U0001d400bold", "tab\tsep\nnew\r\nline", "x\x00y\ufffdz",
]


WORDS = ("the river carries silt past granite cliffs while engineers measure flow, pressure and "
         "temperature; os.path.join(root, name) returns a path. Déjà vu: naïve café owners' "
         "co-operative (est. 1999) sells 3.5kg bags at $12.50 each!").split()


def prose(words: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + ("\n\n" if rng.random() < 0.05 else "") for _ in range(words))


@pytest.fixture(scope="module")
def tokenizer() -> ModelTokenizer:
    return ModelTokenizer.from_model_dir(bundled_model_path())


def _whole(tokenizer: ModelTokenizer, texts: list[str]) -> list[list[tuple[int, int]]]:
    rust = Tokenizer.from_file(str(bundled_model_path() / "tokenizer.json"))
    rust.no_truncation()
    rust.no_padding()
    return [list(encoding.offsets) for encoding in rust.encode_batch(texts, add_special_tokens=False)]


def test_word_runs_give_the_tokens_of_the_whole_text(tokenizer: ModelTokenizer) -> None:
    texts = [*HOSTILE, *(prose(40, seed=seed) for seed in range(5)), " ".join(HOSTILE)]
    expected = _whole(tokenizer, texts)
    assert tokenizer.token_offsets_batch(texts) == expected
    assert tokenizer.token_offsets_batch(texts) == expected, "from the remembered runs, the same again"
    assert tokenizer.count_tokens_batch(texts) == [len(offsets) for offsets in expected]
    assert [tokenizer.count_tokens(text) for text in texts] == [len(offsets) for offsets in expected]
    assert tokenizer.token_offsets(texts[-1]) == expected[-1]


def test_token_bounds_are_the_tokens_of_each_span_in_turn(tokenizer: ModelTokenizer) -> None:
    """What the chunker asks for: the tokens of several spans of one text (cut anywhere, even inside a
    run or empty), as offsets into the text."""
    fresh = pickle.loads(pickle.dumps(tokenizer))  # nothing remembered yet: every run is new
    text = " ".join(HOSTILE) + "\n\n" + prose(80, seed=9)
    spans = [(0, 40), (41, 41), (43, 300), (300, 302), (310, len(text))]
    expected = [(start + s, start + e) for start, end in spans for s, e in _whole(fresh, [text[start:end]])[0]]
    for _ in range(2):  # tokenized, then remembered
        starts, ends = fresh.token_bounds(text, spans)
        assert list(zip(starts, ends, strict=True)) == expected
    assert fresh.token_bounds(text, []) == ([], [])


def test_the_remembered_runs_are_bounded(tokenizer: ModelTokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = pickle.loads(pickle.dumps(tokenizer))
    monkeypatch.setattr(tokenizer_module, "RUN_CACHE_ENTRIES", 50)
    texts = [prose(30, seed=seed) for seed in range(6)]
    for text in texts:
        assert fresh.count_tokens(text) == len(_whole(fresh, [text])[0])
        assert len(fresh._runs) <= 50 + len(set(text.split()))


def test_a_pickled_tokenizer_is_the_same_tokenizer(tokenizer: ModelTokenizer) -> None:
    copy = pickle.loads(pickle.dumps(tokenizer))
    text = prose(20, seed=3)
    assert copy.token_offsets(text) == tokenizer.token_offsets(text)
    assert copy.max_tokens == tokenizer.max_tokens
    assert copy.model_input_ids([text]) == tokenizer.model_input_ids([text])


def test_tokenizers_whose_tokens_carry_spaces_tokenize_whole_texts() -> None:
    bert = json.loads((bundled_model_path() / "tokenizer.json").read_text())
    assert splits_at_whitespace(bert)
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()
    byte_level.decoder = decoders.ByteLevel()
    metaspace = Tokenizer(models.Unigram())
    metaspace.pre_tokenizer = pre_tokenizers.Metaspace()
    for other in (byte_level, metaspace):
        assert not splits_at_whitespace(json.loads(other.to_str()))
    assert not splits_at_whitespace({**bert, "pre_tokenizer": None})
    stripping = {**bert, "added_tokens": [*bert["added_tokens"], {"content": "<x>", "lstrip": True}]}
    assert not splits_at_whitespace(stripping)
    assert not splits_at_whitespace({**bert, "normalizer": {"type": "Replace", "pattern": {"String": " "},
                                                             "content": ""}})
