"""Corpus readers: documents, formats and every bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from leanbert.data.corpus import find_sources, iter_corpus, read_documents, split_sentences
from leanbert.errors import ConfigError, DataError


def test_text_documents_are_split_on_blank_lines(books):
    docs = list(read_documents(books[0]))
    assert docs[:3] == ["ALICE’S ADVENTURES IN WONDERLAND", "Lewis Carroll", "THE MILLENNIUM FULCRUM EDITION 3.0"]
    assert docs[4].startswith("Alice was beginning to get very tired of sitting by her sister on the bank,")
    assert "\n" not in docs[4]


def test_gzipped_text_reads_like_plain_text(books, tmp_path):
    gz = tmp_path / "alice.txt.gz"
    gz.write_bytes(gzip.compress(books[0].read_bytes()))
    assert list(read_documents(gz)) == list(read_documents(books[0]))


def test_jsonl_records_are_documents(tmp_path, books):
    paragraphs = list(read_documents(books[0]))[:5]
    f = tmp_path / "docs.jsonl"
    f.write_text("".join(json.dumps({"id": i, "body": p}) + "\n" for i, p in enumerate(paragraphs)), encoding="utf-8")
    assert list(read_documents(f, text_field="body")) == paragraphs


def test_jsonl_without_the_text_field_names_the_line_and_the_closest_field(tmp_path):
    f = tmp_path / "docs.jsonl"
    f.write_text('{"text": "fine"}\n{"txt": "typo"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"docs.jsonl:2: no field 'text' \(did you mean 'txt'\?\)"):
        list(read_documents(f))


def test_directory_lists_text_files_sorted_and_skips_others(tmp_path, books):
    (tmp_path / "b.txt").write_bytes(books[1].read_bytes())
    (tmp_path / "a.txt.gz").write_bytes(gzip.compress(books[2].read_bytes()))
    (tmp_path / "notes.md").write_text("not a corpus file")
    (tmp_path / ".hidden.txt").write_text("hidden")
    assert [s.path.name for s in find_sources(tmp_path)] == ["a.txt.gz", "b.txt"]


def test_non_utf8_names_the_file_and_byte_offset(tmp_path):
    f = tmp_path / "latin1.txt"
    good = "Caf\u00e9 au lait.\n\n".encode()  # 17 bytes of valid UTF-8
    f.write_bytes(good + "Cr\u00e8me.".encode("latin-1"))
    with pytest.raises(DataError, match=rf"latin1.txt is not UTF-8 text: bad byte 0xe8 at byte offset {len(good) + 2};"):
        list(read_documents(f))


def test_non_utf8_in_gzip_gives_the_decompressed_offset(tmp_path):
    f = tmp_path / "bad.txt.gz"
    f.write_bytes(gzip.compress(b"abc\xff"))
    with pytest.raises(DataError, match="bad byte 0xff at decompressed byte offset 3"):
        list(read_documents(f))


def test_errors_replace_substitutes_bad_bytes(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("Cr\u00e8me br\u00fbl\u00e9e.".encode("latin-1"))
    assert list(read_documents(f, errors="replace")) == ["Cr\ufffdme br\ufffdl\ufffde."]


def test_unknown_errors_mode_is_a_config_error(books):
    with pytest.raises(ConfigError, match="unknown errors mode 'ignore'; use one of: strict, replace"):
        list(iter_corpus(books, errors="ignore"))


def test_missing_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="corpus path not found"):
        find_sources(tmp_path / "nope.txt")


def test_empty_file_is_a_data_error(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty.txt is empty"):
        find_sources(tmp_path / "empty.txt")


def test_file_of_blank_lines_has_no_text(tmp_path):
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(DataError, match="blank.txt contains no text"):
        list(iter_corpus(tmp_path / "blank.txt"))


def test_directory_without_text_files_is_a_data_error(tmp_path):
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(DataError, match="has no text files"):
        find_sources(tmp_path)


def test_sentences_of_a_real_paragraph(books):
    docs = list(read_documents(books[0]))
    para = next(d for d in docs if d.startswith("There was nothing so VERY remarkable"))
    sentences = split_sentences(para)
    assert sentences[0] == "There was nothing so VERY remarkable in that; nor did Alice think it so VERY much out of the way to hear the Rabbit say to itself, ‘Oh dear!"
    assert sentences[1] == "Oh dear!"
    assert all(s.strip() == s and s for s in sentences)


def test_abbreviations_and_initials_do_not_end_sentences():
    text = "Mr. Smith met Dr. J. Watson at 5 p.m. in London. They talked."
    assert split_sentences(text) == ["Mr. Smith met Dr. J. Watson at 5 p.m. in London.", "They talked."]


def test_saved_hf_dataset_rows_are_documents(tmp_path):
    datasets = pytest.importorskip("datasets", reason="optional extra leanbert[datasets] not installed")
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["One doc.", "", "Two  docs."]})})
    ds.save_to_disk(str(tmp_path / "ds"))
    assert list(iter_corpus(tmp_path / "ds")) == ["One doc.", "Two docs."]
