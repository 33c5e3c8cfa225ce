"""`prepare`: packing, shards, manifest, determinism, re-runs and bad inputs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from leanbert.data.corpus import read_documents
from leanbert.data.shards import prepare, read_manifest
from leanbert.errors import ConfigError, DataError

CLS, SEP = 2, 3


def _load(path):
    return np.load(path, allow_pickle=False)


def test_shard_counts_equal_the_manifest(packed_dir):
    m = read_manifest(packed_dir)
    for split in ("train", "validation"):
        info = m["splits"][split]
        arrays = [_load(packed_dir / s["input_ids"]) for s in info["shards"]]
        assert [len(a) for a in arrays] == [s["examples"] for s in info["shards"]]
        assert sum(len(a) for a in arrays) == info["examples"] > 0
        assert sum(int(np.count_nonzero(a)) for a in arrays) == info["tokens"]
        assert all(a.shape[1] == 128 and a.dtype == np.uint16 for a in arrays)


def test_packed_examples_are_full_and_framed(packed_dir):
    m = read_manifest(packed_dir)
    rows = np.concatenate([_load(packed_dir / s["input_ids"]) for s in m["splits"]["train"]["shards"]])
    assert (rows[:, 0] == CLS).all()
    padded = (rows == 0).any(axis=1)
    assert padded.sum() <= 1  # only the last example of the split can have padding
    assert (rows[~padded, -1] == SEP).all()


def test_manifest_records_sources_tokenizer_and_settings(packed_dir, books, tokenizer_dir):
    m = read_manifest(packed_dir)
    assert [s["sha256"] for s in m["sources"]] == [hashlib.sha256(b.read_bytes()).hexdigest() for b in books]
    assert m["tokenizer"]["sha256"] == hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()
    assert (m["mode"], m["next_sentence"], m["seq_length"], m["seed"], m["dtype"]) == ("packed", None, 128, 0, "uint16")
    assert (packed_dir / "tokenizer" / "vocab.txt").read_bytes() == (tokenizer_dir / "vocab.txt").read_bytes()


def test_split_is_by_document_and_covers_every_document(packed_dir, books):
    m = read_manifest(packed_dir)
    total = sum(len(list(read_documents(b))) for b in books)
    assert m["splits"]["train"]["documents"] + m["splits"]["validation"]["documents"] == total
    assert 0.05 < m["splits"]["validation"]["documents"] / total < 0.15  # validation_fraction 0.1


def test_pairs_have_two_segments_and_balanced_nsp_labels(pairs_dir):
    m = read_manifest(pairs_dir)
    assert (m["mode"], m["next_sentence"]) == ("pairs", "nsp")
    shard = m["splits"]["train"]["shards"][0]
    rows, labels = _load(pairs_dir / shard["input_ids"]), _load(pairs_dir / shard["nsp"])
    assert (rows[:, 0] == CLS).all()
    assert ((rows == SEP).sum(axis=1) == 2).all()
    assert set(np.unique(labels)) == {0, 1}
    assert 0.4 < m["splits"]["train"]["label_1_fraction"] < 0.65


def test_sop_swaps_about_half_of_the_pairs(tmp_path, books, tokenizer):
    m = prepare(books[2], tokenizer, tmp_path, {"mode": "pairs", "next_sentence": "sop", "validation_fraction": 0.0})
    assert m["next_sentence"] == "sop"
    assert 0.4 < m["splits"]["train"]["label_1_fraction"] < 0.6


def test_same_seed_same_bytes_whatever_the_workers(tmp_path, books, tokenizer):
    cfg = {"mode": "pairs", "validation_fraction": 0.1}
    prepare(books[1:], tokenizer, tmp_path / "w0", cfg, workers=0)
    prepare(books[1:], tokenizer, tmp_path / "w2", cfg, workers=2)
    for f in sorted((tmp_path / "w0").glob("*.npy")):
        assert f.read_bytes() == (tmp_path / "w2" / f.name).read_bytes()


def test_another_seed_gives_other_shards(tmp_path, books, tokenizer):
    a = prepare(books[2], tokenizer, tmp_path / "a", {"seed": 1})
    b = prepare(books[2], tokenizer, tmp_path / "b", {"seed": 2})
    assert a["fingerprint"] != b["fingerprint"]
    assert (tmp_path / "a" / "train-00000.input_ids.npy").read_bytes() != (tmp_path / "b" / "train-00000.input_ids.npy").read_bytes()


def test_rerun_skips_work_already_done(tmp_path, books, tokenizer):
    prepare(books[2], tokenizer, tmp_path, {})
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()}
    again = prepare(books[2], tokenizer, tmp_path, {})
    assert again["skipped"] is True
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.is_file()} == before


def test_changed_settings_reuse_the_token_cache(tmp_path, books, tokenizer):
    prepare(books[2], tokenizer, tmp_path, {"seq_length": 64})
    cache = sorted((tmp_path / ".cache" / "tokens").iterdir())
    stamp = (cache[0] / "meta.json").stat().st_mtime_ns
    m = prepare(books[2], tokenizer, tmp_path, {"seq_length": 32}, overwrite=True)
    assert m["seq_length"] == 32 and _load(tmp_path / "train-00000.input_ids.npy").shape[1] == 32
    assert (cache[0] / "meta.json").stat().st_mtime_ns == stamp


def test_mismatched_tokenizer_vs_existing_shards_is_an_error(tmp_path, books, tokenizer):
    from leanbert.data.tokenizer import train_tokenizer

    prepare(books[2], tokenizer, tmp_path, {})
    other = train_tokenizer(books[2], vocab_size=300)
    with pytest.raises(DataError, match="prepared with a different tokenizer .*; pass --overwrite"):
        prepare(books[2], other, tmp_path, {})


def test_interrupted_output_without_manifest_is_not_valid(tmp_path, books, tokenizer):
    prepare(books[2], tokenizer, tmp_path, {})
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(DataError, match="has no manifest.json"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"seq_length": 4}, "key 'seq_length': Input should be greater than or equal to 8"),
        ({"mode": "pair"}, "key 'mode': Input should be 'packed' or 'pairs'"),
        ({"validation_fraction": 1.0}, "key 'validation_fraction': Input should be less than 1"),
        ({"sequence_length": 128}, "unknown key 'sequence_length'"),
    ],
)
def test_out_of_range_options_are_config_errors(tmp_path, books, tokenizer, cfg, message):
    with pytest.raises(ConfigError, match=message):
        prepare(books[2], tokenizer, tmp_path, cfg)


def test_vocabulary_over_16_bits_uses_uint32():
    from leanbert.data.shards import dtype_for_vocab

    assert (dtype_for_vocab(30522), dtype_for_vocab(65536), dtype_for_vocab(65537)) == (np.uint16, np.uint16, np.uint32)


def test_manifest_is_plain_json(packed_dir):
    assert json.loads((packed_dir / "manifest.json").read_text())["format_version"] == 1


@pytest.mark.parametrize(("busy", "cores", "workers"), [(1.9, 2, 0), (1.0, 2, 2), (1.0, 8, 8), (3.0, 32, 10),
                                                         (4.0, 4, 0), (0.5, 4, 4)])
def test_worker_count_follows_the_cores_the_tokenizer_leaves_idle(busy, cores, workers):
    from leanbert.data.shards import workers_for

    assert workers_for(busy, cores) == workers


def test_measured_worker_count_is_in_process_on_one_core(books, tokenizer):
    from leanbert.data.shards import auto_workers

    assert auto_workers(books, tokenizer, cores=1) == 0


def test_default_worker_count_gives_the_same_shards(tmp_path, books, tokenizer):
    auto = prepare(books, tokenizer, tmp_path / "auto", {"seq_length": 64})
    inproc = prepare(books, tokenizer, tmp_path / "inproc", {"seq_length": 64}, workers=0)
    assert auto["splits"] == inproc["splits"]
