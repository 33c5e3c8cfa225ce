"""The official metrics of GLUE and SQuAD, implemented once, in plain Python/NumPy.

GLUE (Wang et al. 2019, Table 1): accuracy; F1 of the positive class (MRPC, QQP);
Matthews correlation (CoLA); Pearson and Spearman correlation (STS-B). Definitions match
``sklearn.metrics.accuracy_score``, ``f1_score``, ``matthews_corrcoef`` and
``scipy.stats.pearsonr`` / ``spearmanr`` (the tests check against them), without needing
either library at run time.

SQuAD: a line-by-line port of the official evaluation scripts, v1.1
(``evaluate-v1.1.py``: answers normalised by lower-casing and removing punctuation,
articles and extra white space; exact match and bag-of-tokens F1, best over the gold
answers; both in percent) and v2.0 (``evaluate-v2.0.py``: unanswerable questions have the
gold answer ``""``; an empty token list scores F1 1 only against an empty one; the
no-answer probability threshold; the HasAns/NoAns breakdown; the best thresholds).
Where the scripts print a warning and go on (a question without a prediction), leanbert
raises a :class:`~leanbert.errors.DataError` unless ``allow_missing=True``.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from leanbert.errors import DataError
from leanbert.tasks.registry import TaskSpec

# ----------------------------------------------------------------------------------------
# GLUE
# ----------------------------------------------------------------------------------------


def _arrays(gold: Sequence[Any], pred: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    g, p = np.asarray(gold), np.asarray(pred)
    if g.shape != p.shape or g.ndim != 1:
        raise ValueError(f"gold and predictions must be 1-d of equal length, got {g.shape} and {p.shape}")
    if g.size == 0:
        raise ValueError("no examples to score")
    return g, p


def accuracy(gold: Sequence[Any], pred: Sequence[Any]) -> float:
    g, p = _arrays(gold, pred)
    return float(np.mean(g == p))


def f1_binary(gold: Sequence[int], pred: Sequence[int], positive: int = 1) -> float:
    """F1 of the positive class; 0 when there are no true positives (as scikit-learn)."""
    g, p = _arrays(gold, pred)
    tp = float(np.sum((p == positive) & (g == positive)))
    fp = float(np.sum((p == positive) & (g != positive)))
    fn = float(np.sum((p != positive) & (g == positive)))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def f1_macro(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Unweighted mean of the per-class F1 over the classes in gold or predictions
    (``sklearn.metrics.f1_score(average="macro")``); for the tasks on the user's own data."""
    g, p = _arrays(gold, pred)
    return float(np.mean([f1_binary(g, p, positive=c) for c in np.unique(np.concatenate([g, p]))]))


def matthews_correlation(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Matthews correlation coefficient, multiclass form (Gorodkin 2004) as in scikit-learn;
    0 when it is undefined (a constant prediction or gold)."""
    g, p = _arrays(gold, pred)
    classes, inv = np.unique(np.concatenate([g, p]), return_inverse=True)
    k = len(classes)
    gi, pi = inv[: len(g)], inv[len(g):]
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (gi, pi), 1)
    t_sum, p_sum = cm.sum(axis=1), cm.sum(axis=0)
    n_correct, n = np.trace(cm), cm.sum()
    cov_ytyp = n_correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def pearson(gold: Sequence[float], pred: Sequence[float]) -> float:
    g, p = _arrays(gold, pred)
    g, p = g.astype(np.float64) - g.mean(), p.astype(np.float64) - p.mean()
    denom = np.sqrt(np.dot(g, g) * np.dot(p, p))
    return float(np.dot(g, p) / denom) if denom > 0 else float("nan")


def rankdata(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the average of their ranks (``scipy.stats.rankdata``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    sorted_x = x[order]
    # boundaries of runs of equal values
    starts = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])
    run_id = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(x)]]) - 1
    avg = (first + last) / 2.0 + 1.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = avg[run_id]
    return ranks


def spearman(gold: Sequence[float], pred: Sequence[float]) -> float:
    g, p = _arrays(gold, pred)
    return pearson(rankdata(g), rankdata(p))


def glue_metrics(task: TaskSpec, gold: Sequence[Any], pred: Sequence[Any]) -> dict[str, float]:
    """The task's official metrics (names as in ``task.metrics``); values in [0, 1] / [-1, 1]."""
    fns = {
        "accuracy": accuracy,
        "f1": f1_binary,
        "f1_macro": f1_macro,
        "matthews_correlation": matthews_correlation,
        "pearson": pearson,
        "spearmanr": spearman,
    }
    return {name: fns[name](gold, pred) for name in task.metrics}


# ----------------------------------------------------------------------------------------
# SQuAD (official evaluation scripts v1.1 and v2.0)
# ----------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (both scripts)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _f1_tokens(gold_toks: list[str], pred_toks: list[str]) -> float:
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def f1_v1(prediction: str, ground_truth: str) -> float:
    """``f1_score`` of evaluate-v1.1.py."""
    return _f1_tokens(normalize_answer(ground_truth).split(), normalize_answer(prediction).split())


def exact_match_v1(prediction: str, ground_truth: str) -> float:
    """``exact_match_score`` of evaluate-v1.1.py."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_v2(a_gold: str, a_pred: str) -> float:
    """``compute_f1`` of evaluate-v2.0.py: if either is empty (no answer), F1 is 1 iff both are."""
    gold_toks, pred_toks = normalize_answer(a_gold).split(), normalize_answer(a_pred).split()
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return float(gold_toks == pred_toks)
    return _f1_tokens(gold_toks, pred_toks)


def exact_v2(a_gold: str, a_pred: str) -> float:
    """``compute_exact`` of evaluate-v2.0.py."""
    return float(normalize_answer(a_gold) == normalize_answer(a_pred))


def _questions(dataset: Sequence[Mapping[str, Any]]):
    """(qid, [gold answer texts]) for every question of a SQuAD ``data`` list."""
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                yield qa["id"], [a["text"] for a in qa["answers"]]


def _check_missing(dataset: Sequence[Mapping[str, Any]], predictions: Mapping[str, Any], source: str) -> None:
    missing = [qid for qid, _ in _questions(dataset) if qid not in predictions]
    if missing:
        total = sum(1 for _ in _questions(dataset))
        shown = ", ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise DataError(
            f"{source} lacks predictions for {len(missing)} of {total} questions (id {shown}); "
            "predict every question, or pass allow_missing/--allow-missing to score them 0 "
            "(v1.1) or leave them out (v2.0) as the official scripts do"
        )


def squad_v1_evaluate(
    dataset: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    *,
    allow_missing: bool = False,
    source: str = "predictions",
) -> dict[str, float]:
    """``evaluate`` of evaluate-v1.1.py: ``{"exact_match": ..., "f1": ...}`` in percent.

    ``dataset`` is the ``"data"`` list of the SQuAD JSON. A question without a prediction
    scores 0 and still counts (official behaviour) when ``allow_missing``."""
    if not allow_missing:
        _check_missing(dataset, predictions, source)
    f1 = exact_match = 0.0
    total = 0
    for qid, ground_truths in _questions(dataset):
        total += 1
        if qid not in predictions:
            continue
        prediction = predictions[qid]
        exact_match += max(exact_match_v1(prediction, gt) for gt in ground_truths)
        f1 += max(f1_v1(prediction, gt) for gt in ground_truths)
    if total == 0:
        raise DataError(f"{source}: the SQuAD file holds no questions")
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def _raw_scores_v2(dataset, preds):
    exact_scores, f1_scores = {}, {}
    for qid, answers in _questions(dataset):
        gold_answers = [a for a in answers if normalize_answer(a)]
        if not gold_answers:
            gold_answers = [""]  # for unanswerable questions, the only correct answer is ""
        if qid not in preds:
            continue
        a_pred = preds[qid]
        exact_scores[qid] = max(exact_v2(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(f1_v2(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def _apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
    return new_scores


def _eval_dict(exact_scores, f1_scores, qid_list=None) -> dict[str, float]:
    if qid_list is None:
        total = len(exact_scores)
        return {
            "exact": 100.0 * sum(exact_scores.values()) / total,
            "f1": 100.0 * sum(f1_scores.values()) / total,
            "total": total,
        }
    total = len(qid_list)
    return {
        "exact": 100.0 * sum(exact_scores[k] for k in qid_list) / total,
        "f1": 100.0 * sum(f1_scores[k] for k in qid_list) / total,
        "total": total,
    }


def _find_best_thresh(preds, scores, na_probs, qid_to_has_ans) -> tuple[float, float]:
    """``find_best_thresh`` of evaluate-v2.0.py: start from answering nothing, then answer the
    questions in order of increasing no-answer probability, keeping the best cut."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = best_score = num_no_ans
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda k: na_probs[k]):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def squad_v2_evaluate(
    dataset: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    *,
    na_prob_thresh: float = 1.0,
    allow_missing: bool = False,
    source: str = "predictions",
) -> dict[str, float]:
    """``main`` of evaluate-v2.0.py; ``""`` predicts "no answer".

    Returns ``exact``, ``f1``, ``total``, then ``HasAns_*`` and ``NoAns_*`` where the file
    has such questions, and — when ``na_probs`` (the no-answer probability or score per
    question) is given — ``best_exact``, ``best_exact_thresh``, ``best_f1``, ``best_f1_thresh``.
    """
    if not allow_missing:
        _check_missing(dataset, predictions, source)
    qid_to_has_ans = {qid: bool(answers) for qid, answers in _questions(dataset)}
    if not qid_to_has_ans:
        raise DataError(f"{source}: the SQuAD file holds no questions")
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    given_na = na_probs is not None
    if na_probs is None:
        na_probs = {k: 0.0 for k in predictions}
    elif not allow_missing:
        missing = [k for k in predictions if k in qid_to_has_ans and k not in na_probs]
        if missing:
            raise DataError(f"the no-answer probabilities lack {len(missing)} question(s) (id {missing[0]})")
    exact_raw, f1_raw = _raw_scores_v2(dataset, predictions)
    if not exact_raw:
        raise DataError(f"{source} predicts none of the questions of the SQuAD file")
    exact_thresh = _apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = _apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out = _eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        for k, v in _eval_dict(exact_thresh, f1_thresh, has_ans_qids).items():
            out[f"HasAns_{k}"] = v
    if no_ans_qids:
        for k, v in _eval_dict(exact_thresh, f1_thresh, no_ans_qids).items():
            out[f"NoAns_{k}"] = v
    if given_na:
        out["best_exact"], out["best_exact_thresh"] = _find_best_thresh(predictions, exact_raw, na_probs, qid_to_has_ans)
        out["best_f1"], out["best_f1_thresh"] = _find_best_thresh(predictions, f1_raw, na_probs, qid_to_has_ans)
    return out


def squad_metrics(
    task: TaskSpec,
    dataset: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    na_probs: Mapping[str, float] | None = None,
    **kwargs: Any,
) -> dict[str, float]:
    """The official SQuAD script for the task's version (``squad1``: v1.1, ``squad2``: v2.0)."""
    if task.squad_version == "2.0":
        return squad_v2_evaluate(dataset, predictions, na_probs, **kwargs)
    kwargs.pop("na_prob_thresh", None)
    return squad_v1_evaluate(dataset, predictions, **kwargs)
