"""WordPiece training, saving and loading."""

from __future__ import annotations

import hashlib

import pytest

from leanbert.data.corpus import read_documents
from leanbert.data.tokenizer import (
    SPECIAL_TOKENS,
    load_tokenizer,
    resolve_tokenizer,
    tokenizer_hash,
    train_tokenizer,
)
from leanbert.errors import ConfigError, DataError


def test_special_tokens_have_fixed_ids(tokenizer):
    assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert tokenizer.get_vocab_size() == 2000


def test_round_trip_on_real_paragraphs(tokenizer, books):
    paragraphs = [d for d in read_documents(books[0]) if len(d) > 200][:50]
    for text in paragraphs:
        enc = tokenizer.encode(text)
        assert enc.ids[0] == 2 and enc.ids[-1] == 3  # [CLS] ... [SEP]
        assert 1 not in enc.ids  # no [UNK] on the training text
        decoded = tokenizer.decode(enc.ids)
        assert "".join(decoded.split()) == "".join(text.lower().split())


def test_transformers_loads_the_directory_with_the_same_ids(tokenizer_dir, tokenizer, books):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertTokenizerFast.from_pretrained(str(tokenizer_dir))
    for text in list(read_documents(books[1]))[:30]:
        assert hf(text)["input_ids"] == tokenizer.encode(text).ids


def test_saved_directory_has_all_files_and_reloads_identically(tokenizer_dir, tokenizer):
    assert sorted(p.name for p in tokenizer_dir.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert tokenizer_hash(load_tokenizer(tokenizer_dir)) == tokenizer_hash(tokenizer)
    assert tokenizer_hash(tokenizer) == hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()


def test_vocab_txt_alone_gives_the_same_ids(tokenizer_dir, tokenizer, books):
    from_vocab = resolve_tokenizer(tokenizer_dir / "vocab.txt")
    for text in list(read_documents(books[2]))[:30]:
        assert from_vocab.encode(text).ids == tokenizer.encode(text).ids


def test_cased_training_keeps_case(books):
    tok = train_tokenizer(books[2], vocab_size=500, lowercase=False)
    assert "Alice" not in tok.decode(tok.encode("alice").ids)
    assert tok.decode(tok.encode("The").ids) == "The"


def test_bert_base_uncased_vocab_from_the_cache():
    from leanbert.assets import cache_dir

    if not (cache_dir() / "models" / "all-minilm-l6-v2-0.1.0" / ".complete").is_file():
        pytest.skip("bert-base-uncased vocab not in the leanbert cache (run 'leanbert tokenizer from-vocab bert-base-uncased --out DIR' once)")
    tok = resolve_tokenizer("bert-base-uncased")
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 100, 101, 102, 103]
    assert tok.encode("Hello world").ids == [101, 7592, 2088, 102]


def test_too_small_vocab_is_a_config_error(books):
    with pytest.raises(ConfigError, match="vocab size must be an integer of at least 6"):
        train_tokenizer(books[2], vocab_size=3)


def test_missing_tokenizer_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="tokenizer not found"):
        resolve_tokenizer(tmp_path / "nothing")
