"""SQuAD v1.1 / v2.0: the official JSON files, sliding-window features, n-best span search.

Follows BERT's SQuAD recipe (Devlin et al. 2019, Sec. 4.2-4.3, and ``run_squad.py`` of the
reference code):

- **Features.** The question (at most ``max_query_length`` tokens) and a window of the
  context form ``[CLS] question [SEP] window [SEP]`` of at most ``max_seq_length`` tokens.
  Long contexts are covered by several windows whose starts are ``doc_stride`` tokens
  apart. Token-to-character offsets come from the fast ``tokenizers`` tokenizer, so answers
  are cut out of the original context verbatim (no de-tokenisation heuristics).
  A training answer outside the window, or an unanswerable question (v2.0), points at
  ``[CLS]`` (position 0).
- **Prediction.** For each window, the ``n_best_size`` best start and end logits are
  paired; a span is kept if both ends lie in the context, ``start <= end``, it is at most
  ``max_answer_length`` tokens long, and this window gives the start token its maximum
  context (``_check_is_max_context``). Spans are ranked by ``start + end`` logit across all
  windows of a question.
- **No answer (v2.0).** The null score is the smallest ``[CLS]`` start+end logit over the
  windows; the question is predicted unanswerable when
  ``null score - best span score > null_score_diff_threshold``. That difference is also
  written as the question's no-answer score, from which the official v2.0 script finds
  the best threshold.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leanbert.errors import DataError
from leanbert.tasks.registry import TaskSpec


@dataclass(frozen=True)
class SquadExample:
    qid: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]  # gold texts; () for unanswerable questions (v2.0)
    answer_starts: tuple[int, ...]  # character offsets into context

    @property
    def is_impossible(self) -> bool:
        return not self.answers


@dataclass
class SquadData:
    """A SQuAD file: the raw ``data`` list (what the official metric reads) and examples."""

    path: Path
    version: str
    articles: list[dict[str, Any]]
    examples: list[SquadExample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)


def load_squad_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a directory; give a SQuAD JSON file such as dev-v1.1.json")
    if not path.is_file():
        raise DataError(f"SQuAD file not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 (byte {e.start}); SQuAD files are UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
        raise DataError(f"{path}: not a SQuAD file (expected an object with a 'data' list of articles)")
    return obj


def examples_from_articles(articles: Sequence[Mapping[str, Any]], version: str, where: str) -> list[SquadExample]:
    """Examples of a SQuAD ``data`` list, checked: every field present, ids unique, answer
    offsets inside the context, v1.1 questions answerable."""
    out: list[SquadExample] = []
    seen: set[str] = set()
    try:
        for a_i, article in enumerate(articles):
            title = str(article.get("title", f"article {a_i}"))
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    qid = str(qa["id"])
                    if qid in seen:
                        raise DataError(f"{where}: question id {qid} appears twice; ids must be unique")
                    seen.add(qid)
                    answers = qa.get("answers", [])
                    if qa.get("is_impossible", False):
                        answers = []  # v2.0 keeps 'plausible_answers' apart; they are not gold
                    texts = tuple(str(x["text"]) for x in answers)
                    starts = tuple(int(x["answer_start"]) for x in answers)
                    for t, s in zip(texts, starts, strict=True):
                        if not 0 <= s <= len(context) - len(t):
                            raise DataError(
                                f"{where}: question {qid}: answer_start {s} of '{t[:30]}' lies outside its context"
                            )
                    if not texts and version == "1.1":
                        raise DataError(
                            f"{where}: question {qid} has no answer; this looks like a SQuAD v2.0 file, use --task squad2"
                        )
                    out.append(SquadExample(qid, title, context, str(qa["question"]), texts, starts))
    except KeyError as e:
        raise DataError(f"{where}: a SQuAD entry lacks the field {e}; is this the official SQuAD format?") from None
    except (TypeError, ValueError, AttributeError):
        raise DataError(f"{where}: malformed SQuAD entry (wrong types); is this the official SQuAD format?") from None
    if not out:
        raise DataError(f"{where} holds no questions")
    return out


def read_squad(path: str | Path, task: TaskSpec) -> SquadData:
    """Read a SQuAD v1.1 or v2.0 JSON file as distributed."""
    path = Path(path)
    obj = load_squad_json(path)
    articles = obj["data"]
    return SquadData(path, task.squad_version, articles, examples_from_articles(articles, task.squad_version, str(path)))


def split_by_article(data: SquadData, n_train: int) -> tuple[SquadData, SquadData]:
    """Split a SQuAD file by article: the first ``n_train`` articles train, the rest evaluate.
    (Used where only the dev set is available; questions of one article never cross over.)"""
    n = len(data.articles)
    if not 0 < n_train < n:
        raise DataError(f"cannot split {data.path.name} by article at {n_train}: it has {n} articles; pick 1..{n - 1}")
    parts = []
    for arts, tag in ((data.articles[:n_train], "train"), (data.articles[n_train:], "eval")):
        where = f"{data.path} ({tag} articles)"
        parts.append(SquadData(data.path, data.version, arts, examples_from_articles(arts, data.version, where)))
    return parts[0], parts[1]


# ----------------------------------------------------------------------------------------
# Features: sliding windows over the context
# ----------------------------------------------------------------------------------------


@dataclass
class QAFeature:
    example_index: int
    input_ids: list[int]
    token_type_ids: list[int]
    # per position: (char start, char end) in the context for window tokens, None otherwise
    offsets: list[tuple[int, int] | None]
    max_context: list[bool]  # per position: this window is the token's best context
    start_position: int = 0
    end_position: int = 0


def plain_tokenizer(tokenizer: Any) -> Any:
    """A copy of a ``tokenizers.Tokenizer`` with truncation and padding off (a loaded
    ``tokenizer.json`` may carry them); special tokens are added by hand here."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer.to_str())
    tok.no_truncation()
    tok.no_padding()
    return tok


def doc_spans(n_tokens: int, max_tokens_for_doc: int, doc_stride: int) -> list[tuple[int, int]]:
    """(start, length) of the windows over ``n_tokens`` context tokens (run_squad.py)."""
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n_tokens:
        length = min(n_tokens - start, max_tokens_for_doc)
        spans.append((start, length))
        if start + length == n_tokens:
            break
        start += min(length, doc_stride)
    return spans or [(0, 0)]


def is_max_context(spans: Sequence[tuple[int, int]], cur: int, position: int) -> bool:
    """``_check_is_max_context`` of run_squad.py: a token seen by several windows is scored
    by the window where it has the most context on both sides."""
    best_score, best_index = None, None
    for i, (start, length) in enumerate(spans):
        end = start + length - 1
        if position < start or position > end:
            continue
        score = min(position - start, end - position) + 0.01 * length
        if best_score is None or score > best_score:
            best_score, best_index = score, i
    return cur == best_index


def char_span_to_tokens(offsets: Sequence[tuple[int, int]], start_char: int, end_char: int) -> tuple[int, int] | None:
    """First and last token of the context overlapping characters [start_char, end_char)."""
    if not offsets:
        return None
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    ends = np.fromiter((o[1] for o in offsets), dtype=np.int64, count=len(offsets))
    tok_start = int(np.searchsorted(ends, start_char, side="right"))
    tok_end = int(np.searchsorted(starts, end_char, side="left")) - 1
    if tok_start >= len(offsets) or tok_end < tok_start:
        return None
    return tok_start, tok_end


def make_features(
    examples: Sequence[SquadExample],
    tokenizer: Any,
    *,
    max_seq_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
    training: bool = False,
) -> list[QAFeature]:
    """Sliding-window features for ``examples`` (see the module docstring)."""
    tok = plain_tokenizer(tokenizer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        raise DataError("the tokenizer lacks [CLS] or [SEP]; SQuAD features need a BERT vocabulary")
    contexts = sorted({ex.context for ex in examples})
    encoded = dict(zip(contexts, tok.encode_batch(contexts, add_special_tokens=False), strict=True))
    questions = tok.encode_batch([ex.question for ex in examples], add_special_tokens=False)
    features: list[QAFeature] = []
    for ex_i, (ex, q) in enumerate(zip(examples, questions, strict=True)):
        q_ids = q.ids[:max_query_length]
        ctx = encoded[ex.context]
        ctx_ids, ctx_offsets = ctx.ids, ctx.offsets
        max_tokens_for_doc = max_seq_length - len(q_ids) - 3
        if max_tokens_for_doc < 1:
            raise DataError(
                f"max_seq_length {max_seq_length} leaves no room for the context after the "
                f"{len(q_ids)}-token question {ex.qid}; raise max_seq_length or lower max_query_length"
            )
        spans = doc_spans(len(ctx_ids), max_tokens_for_doc, doc_stride)
        answer_tokens = None
        if training and not ex.is_impossible:
            s_char = ex.answer_starts[0]
            answer_tokens = char_span_to_tokens(ctx_offsets, s_char, s_char + len(ex.answers[0]))
        prefix = [cls_id, *q_ids, sep_id]
        for span_i, (start, length) in enumerate(spans):
            window = range(start, start + length)
            input_ids = prefix + [ctx_ids[t] for t in window] + [sep_id]
            type_ids = [0] * len(prefix) + [1] * (length + 1)
            offsets: list[tuple[int, int] | None] = [None] * len(prefix)
            offsets += [tuple(ctx_offsets[t]) for t in window] + [None]
            max_ctx = [False] * len(prefix) + [is_max_context(spans, span_i, t) for t in window] + [False]
            feat = QAFeature(ex_i, input_ids, type_ids, offsets, max_ctx)
            if answer_tokens is not None and start <= answer_tokens[0] and answer_tokens[1] < start + length:
                feat.start_position = answer_tokens[0] - start + len(prefix)
                feat.end_position = answer_tokens[1] - start + len(prefix)
            features.append(feat)
    return features


# ----------------------------------------------------------------------------------------
# Post-processing: n-best spans and the null score
# ----------------------------------------------------------------------------------------


def _best_indexes(logits: np.ndarray, n_best_size: int) -> np.ndarray:
    k = min(n_best_size, len(logits))
    return np.argsort(-logits, kind="stable")[:k]


def postprocess_predictions(
    examples: Sequence[SquadExample],
    features: Sequence[QAFeature],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2: bool = False,
    null_score_diff_threshold: float = 0.0,
) -> tuple[dict[str, str], dict[str, float], dict[str, list[dict[str, Any]]]]:
    """(predictions by question id, no-answer scores by id, n-best lists by id).

    ``start_logits[i]``/``end_logits[i]`` belong to ``features[i]`` (any trailing padding
    positions are ignored). Each n-best entry has the span's ``text``, ``score`` (start + end
    logit), ``probability`` (softmax over the n best) and character ``start`` / ``end`` in the
    context (None for the empty answer). No-answer scores are ``null score - best span score``
    (``null_odds`` in BERT's run_squad.py); they are only meaningful for v2.0.
    """
    by_example: dict[int, list[int]] = {}
    for i, f in enumerate(features):
        by_example.setdefault(f.example_index, []).append(i)
    predictions: dict[str, str] = {}
    na_scores: dict[str, float] = {}
    nbest_out: dict[str, list[dict[str, Any]]] = {}
    for ex_i, ex in enumerate(examples):
        prelim: list[tuple[float, int, int, int]] = []  # (score, feature, start, end)
        score_null = math.inf
        for f_i in by_example.get(ex_i, []):
            feat = features[f_i]
            n = len(feat.input_ids)
            s_log = np.asarray(start_logits[f_i], dtype=np.float64)[:n]
            e_log = np.asarray(end_logits[f_i], dtype=np.float64)[:n]
            if version_2:
                score_null = min(score_null, float(s_log[0] + e_log[0]))
            for s in _best_indexes(s_log, n_best_size):
                if feat.offsets[s] is None or not feat.max_context[s]:
                    continue
                for e in _best_indexes(e_log, n_best_size):
                    if feat.offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    prelim.append((float(s_log[s] + e_log[e]), f_i, int(s), int(e)))
        prelim.sort(key=lambda x: x[0], reverse=True)
        nbest: list[dict[str, Any]] = []
        seen: set[str] = set()
        for score, f_i, s, e in prelim:
            if len(nbest) >= n_best_size:
                break
            offsets = features[f_i].offsets
            text = ex.context[offsets[s][0] : offsets[e][1]]  # type: ignore[index]
            if text in seen:
                continue
            seen.add(text)
            # start / end: the span's character offsets in the context (end exclusive)
            nbest.append({"text": text, "score": score, "start": offsets[s][0], "end": offsets[e][1]})  # type: ignore[index]
        if version_2 and "" not in seen and math.isfinite(score_null):
            nbest.append({"text": "", "score": score_null, "start": None, "end": None})
        if not nbest:
            nbest.append({"text": "", "score": 0.0, "start": None, "end": None})
        nbest.sort(key=lambda x: x["score"], reverse=True)
        scores = np.array([c["score"] for c in nbest])
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        for c, p in zip(nbest, probs, strict=True):
            c["probability"] = float(p)
        non_null = [c for c in nbest if c["text"]]
        if version_2:
            if non_null:
                diff = score_null - non_null[0]["score"]
            else:
                diff = 1e9  # no span at all: certainly unanswerable
            na_scores[ex.qid] = float(diff)
            predictions[ex.qid] = "" if diff > null_score_diff_threshold else non_null[0]["text"]
        else:
            predictions[ex.qid] = non_null[0]["text"] if non_null else ""
            na_scores[ex.qid] = 0.0
        nbest_out[ex.qid] = nbest
    return predictions, na_scores, nbest_out


def _read_json_mapping(path: str | Path, what: str, value: str, value_types: tuple[type, ...]) -> dict:
    """A JSON object mapping question id to a ``value`` (one of ``value_types``), or a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{path} is not a JSON file; expected {{question id: {value}}}") from None
    if not isinstance(obj, dict) or not all(isinstance(v, value_types) for v in obj.values()):
        raise DataError(f"{path}: expected a JSON object mapping question id to {value}")
    return obj


def read_predictions(path: str | Path) -> dict[str, str]:
    """A SQuAD predictions file: a JSON object mapping question id to answer text."""
    return _read_json_mapping(path, "predictions", "answer text", (str,))


def read_na_probs(path: str | Path) -> dict[str, float]:
    """A no-answer probability (or score) file: a JSON object mapping question id to a number."""
    obj = _read_json_mapping(path, "no-answer probability", "a number", (int, float))
    return {k: float(v) for k, v in obj.items()}
