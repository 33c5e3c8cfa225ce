"""Fixtures for the data-pipeline tests: a small slice of the real text in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

GUTENBERG = "pretrain/gutenberg/clean"
BOOKS = ("11-0.txt", "1952-0.txt", "pg7256.txt")  # Alice in Wonderland and two short texts


@pytest.fixture(scope="session")
def books(shared_file) -> list[Path]:
    return [shared_file(f"{GUTENBERG}/{b}") for b in BOOKS]


@pytest.fixture(scope="session")
def wiki_valid(shared_file) -> Path:
    return shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens")


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, books):
    """A 2,000-token WordPiece tokenizer trained on three real books."""
    from leanbert.data.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(books, vocab_size=2000)
    return save_tokenizer(tok, tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from leanbert.data.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def _prepare(tmp_path_factory, books, tokenizer, name, **cfg):
    from leanbert.data.shards import prepare

    out = tmp_path_factory.mktemp(name)
    cfg = {"validation_fraction": 0.1, "shard_size": 300, **cfg}
    prepare(books, tokenizer, out, cfg)
    return out


@pytest.fixture(scope="session")
def packed_dir(tmp_path_factory, books, tokenizer):
    return _prepare(tmp_path_factory, books, tokenizer, "packed", mode="packed")


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory, books, tokenizer):
    return _prepare(tmp_path_factory, books, tokenizer, "pairs", mode="pairs", next_sentence="nsp")
