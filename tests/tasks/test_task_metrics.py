"""Metrics against known values: scikit-learn and scipy for GLUE, hand-worked cases and the
real SQuAD dev set for the official SQuAD scripts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leanbert.errors import DataError
from leanbert.tasks import get_task
from leanbert.tasks.metrics import (
    accuracy,
    exact_match_v1,
    f1_binary,
    f1_v1,
    f1_v2,
    glue_metrics,
    matthews_correlation,
    normalize_answer,
    pearson,
    spearman,
    squad_v1_evaluate,
    squad_v2_evaluate,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")
stats = pytest.importorskip("scipy.stats")


@pytest.fixture
def labels():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 500)
    pred = np.where(rng.random(500) < 0.7, gold, 1 - gold)
    return gold, pred


def test_accuracy_matches_sklearn(labels):
    assert accuracy(*labels) == pytest.approx(sklearn_metrics.accuracy_score(*labels))


def test_f1_of_the_positive_class_matches_sklearn(labels):
    assert f1_binary(*labels) == pytest.approx(sklearn_metrics.f1_score(*labels))


def test_matthews_matches_sklearn_binary(labels):
    assert matthews_correlation(*labels) == pytest.approx(sklearn_metrics.matthews_corrcoef(*labels))


def test_matthews_matches_sklearn_multiclass():
    rng = np.random.default_rng(1)
    gold, pred = rng.integers(0, 3, 300), rng.integers(0, 3, 300)
    pred[:150] = gold[:150]
    assert matthews_correlation(gold, pred) == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, pred))


def test_matthews_of_a_constant_prediction_is_zero():
    # CoLA's majority-class baseline scores 0 (GLUE paper, Table 4)
    assert matthews_correlation([0, 1, 1, 0], [1, 1, 1, 1]) == 0.0


def test_pearson_matches_scipy():
    rng = np.random.default_rng(2)
    gold = rng.uniform(0, 5, 200)
    pred = gold + rng.normal(0, 1, 200)
    assert pearson(gold, pred) == pytest.approx(stats.pearsonr(gold, pred)[0])


def test_spearman_with_ties_matches_scipy():
    gold = np.array([0.0, 1.0, 1.0, 2.5, 2.5, 2.5, 4.0, 5.0])  # STS-B scores repeat
    pred = np.array([0.3, 0.9, 1.5, 2.0, 2.0, 3.5, 3.0, 4.8])
    assert spearman(gold, pred) == pytest.approx(stats.spearmanr(gold, pred)[0])


def test_glue_metrics_use_the_task_metric_names():
    assert glue_metrics(get_task("mrpc"), [1, 0, 1, 1], [1, 0, 0, 1]) == pytest.approx({"f1": 0.8, "accuracy": 0.75})


# --- SQuAD -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Cat", "cat"),
        ("  a  dog,  an owl and the\tfox! ", "dog owl and fox"),
        ("theater", "theater"),  # articles only as whole words
        ("U.S.", "us"),
        ("1,000", "1000"),
    ],
)
def test_normalisation_lowercases_and_strips_punctuation_articles_and_spaces(text, normalized):
    assert normalize_answer(text) == normalized


def test_exact_match_is_after_normalisation():
    assert exact_match_v1("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match_v1("Eiffel", "Eiffel Tower") == 0.0


def test_f1_is_the_harmonic_mean_of_token_precision_and_recall():
    # pred tokens [cat, sat]; gold [cat, sat, on, mat]: precision 1, recall 1/2 -> F1 2/3
    assert f1_v1("the cat sat", "a cat sat on the mat") == pytest.approx(2 / 3)


def test_f1_counts_repeated_tokens_once_per_occurrence():
    # pred [new, new, york]; gold [new, york]: 2 shared -> P 2/3, R 1 -> F1 0.8
    assert f1_v1("new new york", "New York") == pytest.approx(0.8)


def test_empty_answers_differ_between_v1_and_v2():
    assert f1_v1("", "") == 0.0  # v1.1: no shared tokens
    assert f1_v2("", "") == 1.0  # v2.0: both say "no answer"
    assert f1_v2("", "Paris") == 0.0


def _dataset(questions):
    """A SQuAD 'data' list from (id, [gold texts]) pairs."""
    qas = [{"id": qid, "question": "q?", "answers": [{"text": t, "answer_start": 0} for t in golds]}
           for qid, golds in questions]
    return [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]


def test_v1_takes_the_best_over_several_gold_answers():
    data = _dataset([("q1", ["Denver Broncos", "the Broncos", "Broncos"]), ("q2", ["in 1990", "1990s"])])
    got = squad_v1_evaluate(data, {"q1": "Broncos", "q2": "1990"})
    # q1: exact with "Broncos"; q2: no exact; F1 with "in 1990" = 2*(1*0.5)/1.5 = 2/3
    assert got == pytest.approx({"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2})


def test_v1_missing_predictions_are_an_error_naming_the_ids():
    data = _dataset([("q1", ["a"]), ("q2", ["b"])])
    with pytest.raises(DataError, match=r"lacks predictions for 1 of 2 questions \(id q2\)"):
        squad_v1_evaluate(data, {"q1": "a"})


def test_v1_allow_missing_scores_them_zero_as_the_official_script():
    data = _dataset([("q1", ["a b"]), ("q2", ["c"])])
    assert squad_v1_evaluate(data, {"q1": "a b"}, allow_missing=True) == {"exact_match": 50.0, "f1": 50.0}


V2 = _dataset([("h1", ["Paris"]), ("h2", ["blue sky"]), ("n1", []), ("n2", [])])


def test_v2_breaks_down_answerable_and_unanswerable_questions():
    preds = {"h1": "Paris", "h2": "sky", "n1": "", "n2": "London"}
    got = squad_v2_evaluate(V2, preds)
    assert got == pytest.approx({
        "exact": 50.0, "f1": 100 * (1 + 2 / 3 + 1 + 0) / 4, "total": 4,
        "HasAns_exact": 50.0, "HasAns_f1": 100 * (1 + 2 / 3) / 2, "HasAns_total": 2,
        "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2,
    })


def test_v2_best_threshold_as_the_official_script():
    # Answers for all; the no-answer probabilities rank n2 and n1 as most likely unanswerable.
    preds = {"h1": "Paris", "h2": "London", "n1": "Rome", "n2": "Oslo"}
    na = {"h1": 0.1, "h2": 0.3, "n1": 0.6, "n2": 0.9}
    got = squad_v2_evaluate(V2, preds, na)
    # Start with "no answer" everywhere: 2 of 4 right. Answer h1 (p 0.1): 3. h2 wrong: +0.
    # n1, n2 answered: -1 each. Best: 3/4 at threshold 0.1.
    assert (got["best_exact"], got["best_exact_thresh"]) == (75.0, 0.1)
    assert (got["best_f1"], got["best_f1_thresh"]) == (75.0, 0.1)


def test_v2_no_answer_threshold_turns_confident_predictions_into_no_answer():
    preds = {"h1": "Paris", "h2": "blue sky", "n1": "Rome", "n2": "Oslo"}
    na = {"h1": 0.1, "h2": 0.2, "n1": 0.8, "n2": 0.9}
    got = squad_v2_evaluate(V2, preds, na, na_prob_thresh=0.5)
    assert got["exact"] == 100.0 and got["NoAns_exact"] == 100.0


def test_gold_answers_score_100_on_the_real_dev_set(squad_dev):
    data = json.loads(squad_dev.read_text(encoding="utf-8"))["data"]
    gold = {qa["id"]: qa["answers"][0]["text"] for a in data for p in a["paragraphs"] for qa in p["qas"]}
    assert len(gold) == 10570
    assert squad_v1_evaluate(data, gold) == {"exact_match": 100.0, "f1": 100.0}


def test_a_gold_answer_that_normalises_to_nothing_keeps_the_v1_quirk(squad_dev):
    # Question 57340d124776f419006617bf's last gold answer is "." : normalised to "", it matches
    # exactly (EM 1) but shares no token with itself (F1 0), as in evaluate-v1.1.py.
    data = json.loads(squad_dev.read_text(encoding="utf-8"))["data"]
    gold = {qa["id"]: qa["answers"][-1]["text"] for a in data for p in a["paragraphs"] for qa in p["qas"]}
    assert gold["57340d124776f419006617bf"] == "."
    assert squad_v1_evaluate(data, gold) == pytest.approx({"exact_match": 100.0, "f1": 100.0 * 10569 / 10570})
