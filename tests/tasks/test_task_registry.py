"""The task registry: every GLUE task and SQuAD version, with the GLUE server's file names."""

from __future__ import annotations

import pytest

from leanbert.errors import ConfigError
from leanbert.tasks import get_task, task_names


def test_every_task_of_the_issue_is_registered():
    assert task_names() == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli", "squad1", "squad2"]


def test_unknown_task_is_a_config_error_with_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown task 'sst3' \(did you mean 'sst2'\?\)"):
        get_task("sst3")


def test_task_names_are_case_insensitive_and_accept_glue_spellings():
    assert get_task("SST-2").name == "sst2"
    assert get_task("STS-B").name == "stsb"


def test_test_predictions_use_the_glue_server_file_names():
    names = {f for t in task_names() for f in get_task(t).test_splits.values()}
    assert names == {"CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv",
                     "MNLI-mm.tsv", "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"}


def test_mnli_evaluates_matched_and_mismatched_dev_sets():
    mnli = get_task("mnli")
    assert mnli.eval_splits == ("dev_matched", "dev_mismatched")
    assert mnli.split("dev_mismatched").file == "dev_mismatched.tsv"
    assert mnli.labels == ("contradiction", "entailment", "neutral")


def test_stsb_is_a_single_output_regression():
    stsb = get_task("stsb")
    assert (stsb.kind, stsb.num_labels, stsb.metrics) == ("regression", 1, ("pearson", "spearmanr"))


@pytest.mark.parametrize(
    ("task", "metrics"),
    [("cola", ("matthews_correlation",)), ("mrpc", ("f1", "accuracy")), ("qqp", ("f1", "accuracy")),
     ("sst2", ("accuracy",)), ("squad1", ("f1", "exact_match"))],
)
def test_metric_names_are_the_official_ones(task, metrics):
    assert get_task(task).metrics == metrics


def test_unknown_split_names_the_valid_ones():
    with pytest.raises(ConfigError, match="task 'mnli' has no split 'dev'.*dev_matched, dev_mismatched"):
        get_task("mnli").split("dev")
