"""GLUE TSV readers on the real files (official row counts, quirks) and on small hand-made
files for the tasks and failure modes the shipped data does not cover."""

from __future__ import annotations

import pytest

from leanbert.errors import DataError
from leanbert.tasks import get_task
from leanbert.tasks.glue import (
    align_predictions,
    format_prediction,
    read_glue,
    read_predictions,
    write_predictions,
)

OFFICIAL_ROWS = [
    ("cola", "train", 8551), ("cola", "dev", 1043), ("cola", "test", 1063),
    ("sst2", "train", 67349), ("sst2", "dev", 872), ("sst2", "test", 1821),
    ("mrpc", "train", 3668), ("mrpc", "dev", 408), ("mrpc", "test", 1725),
    ("wnli", "train", 635), ("wnli", "dev", 71), ("wnli", "test", 146),
    ("qnli", "dev", 5463), ("qnli", "test", 5463),
    ("mnli", "diagnostic", 1104),
]


@pytest.mark.parametrize(("task", "split", "rows"), OFFICIAL_ROWS)
def test_loaders_read_the_official_row_counts(glue_root, task, split, rows):
    data = read_glue(get_task(task), glue_root, split)
    assert len(data) == rows
    assert data.skipped_lines == []


def test_cola_train_has_no_header_so_the_first_line_is_an_example(glue_root):
    first = read_glue(get_task("cola"), glue_root / "CoLA", "train").examples[0]
    assert first.texts == ("Our friends won't buy this analysis, let alone the next one we propose.",)
    assert (first.label, first.line) == ("1", 1)


def test_cola_dev_without_trailing_newline_keeps_its_last_row(glue_root):
    last = read_glue(get_task("cola"), glue_root / "CoLA", "dev").examples[-1]
    assert last.line == 1043 and last.label in ("0", "1")


def test_mrpc_byte_order_mark_is_not_part_of_the_header(glue_root):
    data = read_glue(get_task("mrpc"), glue_root / "MRPC", "train")
    assert data.examples[0].label == "1"
    assert not any("\ufeff" in t for ex in data.examples for t in ex.texts)


def test_quotes_are_text_not_csv_quoting(glue_root):
    # GLUE reads with quoting off: a sentence starting with '"' keeps it and ends at the tab.
    ex = read_glue(get_task("mrpc"), glue_root / "MRPC", "dev").examples[0]
    assert ex.texts[1] == '" The foodservice pie business does not fit our long-term growth strategy .'


def test_test_files_have_no_labels_and_keep_the_index_column(glue_root):
    data = read_glue(get_task("qnli"), glue_root / "QNLI", "test")
    assert not data.has_labels
    assert [ex.guid for ex in data.examples[:3]] == ["0", "1", "2"]


def test_qnli_labels_are_the_nli_strings(glue_root):
    labels = {ex.label for ex in read_glue(get_task("qnli"), glue_root / "QNLI", "dev").examples}
    assert labels == {"entailment", "not_entailment"}


def test_the_glue_root_works_as_well_as_the_task_directory(glue_root):
    assert len(read_glue(get_task("wnli"), glue_root, "dev")) == 71


def test_mnli_reads_gold_label_from_the_last_column_and_both_dev_sets(mnli_dir):
    mnli = get_task("mnli")
    matched = read_glue(mnli, mnli_dir, "dev_matched")
    mismatched = read_glue(mnli, mnli_dir, "dev_mismatched")
    assert [ex.label for ex in matched.examples][:2] == ["entailment", "contradiction"]
    assert (len(matched), len(mismatched)) == (6, 3)
    assert read_glue(mnli, mnli_dir, "train").examples[0].texts == ("A man is playing a guitar.", "A man plays the guitar.")


def test_mnli_diagnostic_set_is_found_beside_the_task_directory(mnli_dir):
    assert len(read_glue(get_task("mnli"), mnli_dir, "diagnostic")) == 6


def test_stsb_scores_are_read_as_regression_targets(stsb_dir):
    data = read_glue(get_task("stsb"), stsb_dir, "train")
    assert [ex.label for ex in data.examples][:2] == ["4.800", "0.200"]


def test_qqp_malformed_rows_are_skipped_and_counted(tmp_path, write_tsv):
    rows = [["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            ["0", "1", "2", "How do I learn Python?", "What is the best way to learn Python?", "1"],
            ["1", "3", "4", "What is love?"],  # a question broken over two lines in the file
            ["is it chemistry?", "0"],
            ["2", "5", "6", "Where is Paris?", "Why is the sky blue?", "0"]]
    data = read_glue(get_task("qqp"), write_tsv(tmp_path / "QQP" / "train.tsv", rows).parent, "train")
    assert [ex.guid for ex in data.examples] == ["0", "2"]
    assert data.skipped_lines == [3, 4]


def test_a_malformed_row_is_an_error_naming_file_and_line(tmp_path, write_tsv):
    rows = [["sentence", "label"], ["a fine film", "1"], ["no label here"]]
    write_tsv(tmp_path / "SST-2" / "train.tsv", rows)
    with pytest.raises(DataError, match=r"train.tsv:3: malformed row with 1 tab-separated fields, expected 2"):
        read_glue(get_task("sst2"), tmp_path, "train")


def test_a_label_outside_the_label_set_is_an_error(tmp_path, write_tsv):
    write_tsv(tmp_path / "SST-2" / "dev.tsv", [["sentence", "label"], ["a fine film", "1"], ["dull", "positive"]])
    with pytest.raises(DataError, match=r"dev.tsv:3: label 'positive' is not in the sst2 label set \(0, 1\)"):
        read_glue(get_task("sst2"), tmp_path, "dev")


def test_a_non_numeric_stsb_score_is_an_error(stsb_dir, write_tsv):
    rows = [["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
            ["0", "g", "f", "y", "o", "s", "s", "a", "b", "high"]]
    write_tsv(stsb_dir / "dev.tsv", rows)
    with pytest.raises(DataError, match="stsb score 'high' is not a number"):
        read_glue(get_task("stsb"), stsb_dir, "dev")


def test_a_missing_split_file_is_an_error_naming_the_expected_path(glue_root):
    with pytest.raises(DataError, match=r"no train file for qnli under .*QNLI.*train.tsv"):
        read_glue(get_task("qnli"), glue_root / "QNLI", "train")


def test_a_missing_data_directory_is_an_error(tmp_path):
    with pytest.raises(DataError, match="data path not found"):
        read_glue(get_task("rte"), tmp_path / "nowhere", "dev")


def test_a_file_that_is_not_utf8_is_an_error(tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_bytes(b"index\tsentence1\tsentence2\tlabel\n0\t\xff\xfe\tb\tentailment\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_glue(get_task("rte"), tmp_path, "dev")


def test_submission_files_round_trip(tmp_path):
    path = tmp_path / "MNLI-m.tsv"
    write_predictions(path, ["0", "1"], ["entailment", "neutral"])
    assert path.read_text(encoding="utf-8") == "index\tprediction\n0\tentailment\n1\tneutral\n"
    assert read_predictions(path) == {"0": "entailment", "1": "neutral"}


def test_predictions_are_label_strings_and_stsb_scores_clipped_to_the_scale():
    assert format_prediction(get_task("qnli"), 1) == "not_entailment"
    assert format_prediction(get_task("cola"), 0) == "0"
    assert format_prediction(get_task("stsb"), 5.7) == "5.000"
    assert format_prediction(get_task("stsb"), 2.34567) == "2.346"


def test_predictions_missing_ids_are_an_error(tmp_path, glue_root):
    dev = read_glue(get_task("wnli"), glue_root, "dev")
    write_predictions(tmp_path / "p.tsv", ["0", "1"], ["1", "0"])
    with pytest.raises(DataError, match=r"lacks predictions for 69 of 71 examples \(index 2, 3, 4, 5, 6 \.\.\.\)"):
        align_predictions(get_task("wnli"), dev, read_predictions(tmp_path / "p.tsv"), "p.tsv")


def test_a_predictions_file_without_the_submission_header_is_an_error(tmp_path):
    (tmp_path / "p.tsv").write_text("0\t1\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected the GLUE submission header"):
        read_predictions(tmp_path / "p.tsv")
