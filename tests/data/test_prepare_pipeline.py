"""The fast paths of ``data prepare`` compute exactly what the plain per-document code does:
white-space cleaning, the pipelined in-process tokenisation, the vectorised packing; and a
tokenizer.json that pads or truncates does not leak into the token stream."""

from __future__ import annotations

import re

import numpy as np
import pytest

from leanbert.data.corpus import _clean, find_sources, read_documents
from leanbert.data.shards import (
    PrepareConfig,
    TokenizedFile,
    _chunks,
    _ExampleWriter,
    _pack_stream,
    prepare,
    tokenize_documents,
    tokenize_sources,
)


def test_cleaning_equals_the_regular_expression_on_every_white_space_character(books):
    text = books[0].read_text(encoding="utf-8")[:50_000]
    spaces = "".join(chr(c) for c in range(0x3100) if chr(c).isspace()) + "\u3000\ufeff\u200b"
    tricky = f"  a{spaces}b \u00a0c\u2028d\x1ce\t\n  "
    for doc in (text, tricky, "", "   "):
        assert _clean(doc) == re.sub(r"\s+", " ", doc).strip()


def test_in_process_pipeline_writes_the_tokens_of_each_chunk_in_order(tmp_path, books, tokenizer):
    source = find_sources([books[0]])
    cfg = PrepareConfig()
    [cache] = tokenize_sources(source, ["0" * 64], tokenizer, cfg, tmp_path, workers=0)
    got = TokenizedFile.open(cache)
    parts = [tokenize_documents(tokenizer, docs) for docs in _chunks(source[0], cfg)]
    assert len(parts) >= 1 and got.n_docs == sum(len(p[2]) for p in parts)
    assert np.array_equal(np.asarray(got.ids), np.concatenate([p[0] for p in parts]))
    assert np.array_equal(np.diff(got.tok_off), np.concatenate([p[1] for p in parts]))
    assert np.array_equal(np.diff(got.doc_off), np.concatenate([p[2] for p in parts]))
    assert got.n_docs == len(list(read_documents(books[0])))


def _packed_one_by_one(files, docs, seq_length, ids):
    """The plain definition: every document's tokens then [SEP], one stream, cut into rows."""
    stream = [t for f, d in zip(files, docs, strict=True) for doc in d
              for t in [*f.doc_tokens(int(doc)).tolist(), ids["[SEP]"]]]
    body = seq_length - 2
    rows = []
    for k in range(0, len(stream), body):
        part = stream[k:k + body]
        row = [ids["[CLS]"], *part, ids["[SEP]"]]
        rows.append(row + [0] * (seq_length - len(row)))
    return np.array(rows, np.int64)


@pytest.mark.parametrize("block", [7, 1000, 1 << 20])
def test_vectorised_packing_equals_packing_document_by_document(tmp_path, books, tokenizer, block):
    sources = find_sources(books[:2])
    caches = tokenize_sources(sources, ["1" * 64, "2" * 64], tokenizer, PrepareConfig(), tmp_path / "c", workers=0)
    files = [TokenizedFile.open(c) for c in caches]
    rng = np.random.default_rng(0)
    docs = [np.flatnonzero(rng.random(f.n_docs) < 0.9) for f in files]  # gaps, as a validation split leaves
    ids = {"[CLS]": 2, "[SEP]": 3}
    writer = _ExampleWriter(tmp_path / "rows.bin", 64, np.dtype(np.uint16))
    _pack_stream(files, docs, 64, ids, writer, block=block)
    writer.close()
    got = np.fromfile(tmp_path / "rows.bin", np.uint16).reshape(-1, 64)
    want = _packed_one_by_one(files, docs, 64, ids)
    assert got.shape == want.shape and np.array_equal(got, want)


def test_a_tokenizer_json_that_pads_and_truncates_does_not_reach_the_shards(tmp_path, books, tokenizer):
    from tokenizers import Tokenizer

    padded = Tokenizer.from_str(tokenizer.to_str())
    padded.enable_padding(length=16)
    padded.enable_truncation(max_length=8)
    a = prepare(books[2], tokenizer, tmp_path / "plain", {"seq_length": 64}, workers=0)
    b = prepare(books[2], padded, tmp_path / "padded", {"seq_length": 64}, workers=0)
    assert a["splits"] == b["splits"]
    for f in sorted((tmp_path / "plain").glob("*.npy")):
        assert f.read_bytes() == (tmp_path / "padded" / f.name).read_bytes()


@pytest.mark.parametrize("extra,marker", [
    ("", "\u00b6"),
    ("A pilcrow \u00b6 in the text. So another marker.", "\u00a7"),
    ("Every marker \u00b6 \u00a7 \u2021 \u2016 \u2020 at once. Sentence by sentence then.", None),
])
def test_whole_document_encoding_gives_the_tokens_of_each_sentence(books, minilm_dir, extra, marker):
    from leanbert.data.shards import _encode, segment_documents, sentence_markers
    from leanbert.data.tokenizer import tokenizer_from_vocab

    tok = tokenizer_from_vocab(minilm_dir / "vocab.txt")  # BERT's uncased vocabulary: it has the markers
    assert [c for c, _ in sentence_markers(tok)] == list("\u00b6\u00a7\u2021\u2016\u2020")
    docs = [*list(read_documents(books[0]))[:300], extra, "Short.", "x"]
    sentences, per_doc = segment_documents(docs)
    assert _encode(tok, sentences, per_doc).marker_id == (tok.token_to_id(marker) if marker else None)
    one_by_one = [tok.encode(s, add_special_tokens=False).ids for s in sentences]
    ids, lengths, n_per_doc = tokenize_documents(tok, docs)
    assert np.array_equal(ids, np.array([i for e in one_by_one for i in e], np.uint32))
    assert lengths.tolist() == [len(e) for e in one_by_one if e]
    assert n_per_doc.sum() == len(lengths) and len(n_per_doc) == sum(1 for n in per_doc if n)


def test_two_cores_or_fewer_tokenise_in_process_without_measuring(tmp_path, books, tokenizer, monkeypatch):
    import concurrent.futures

    from leanbert.data import shards

    monkeypatch.setattr(shards.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", None)  # any pool would fail
    m = prepare(books[2], tokenizer, tmp_path / "auto", {"seq_length": 64})
    assert m["splits"] == prepare(books[2], tokenizer, tmp_path / "w0", {"seq_length": 64}, workers=0)["splits"]
    assert shards.auto_workers(books, tokenizer, cores=2) == 0
