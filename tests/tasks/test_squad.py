"""SQuAD files, sliding-window features and n-best span search (BERT run_squad.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from leanbert.errors import DataError
from leanbert.tasks import get_task
from leanbert.tasks.metrics import squad_v1_evaluate
from leanbert.tasks.squad import (
    QAFeature,
    SquadExample,
    doc_spans,
    is_max_context,
    make_features,
    postprocess_predictions,
    read_predictions,
    read_squad,
    split_by_article,
)

SQUAD1 = get_task("squad1")
SQUAD2 = get_task("squad2")


@pytest.fixture(scope="module")
def dev(squad_dev):
    return read_squad(squad_dev, SQUAD1)


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from leanbert.data.tokenizer import load_tokenizer

    return load_tokenizer(minilm_dir)  # its tokenizer.json pads and truncates to 128


def test_reader_gets_the_official_counts(dev):
    paragraphs = sum(len(a["paragraphs"]) for a in dev.articles)
    assert (len(dev.articles), paragraphs, len(dev)) == (48, 2067, 10570)


def test_split_by_article_keeps_each_article_on_one_side(dev):
    train, held_out = split_by_article(dev, 36)
    assert (len(train.articles), len(held_out.articles)) == (36, 12)
    assert len(train) + len(held_out) == 10570
    assert not {ex.title for ex in train.examples} & {ex.title for ex in held_out.examples}


def test_split_by_article_outside_the_range_is_an_error(dev):
    with pytest.raises(DataError, match="it has 48 articles; pick 1..47"):
        split_by_article(dev, 48)


def test_doc_spans_start_doc_stride_tokens_apart_and_cover_the_end():
    assert doc_spans(10, 4, 2) == [(0, 4), (2, 4), (4, 4), (6, 4)]
    assert doc_spans(3, 4, 2) == [(0, 3)]


def test_a_token_belongs_to_the_window_where_it_has_most_context():
    spans = [(0, 4), (2, 4), (4, 4)]
    # token 3: 3 left/0 right in window 0, 1/2 in window 1, absent from window 2
    assert is_max_context(spans, 1, 3) and not is_max_context(spans, 0, 3)


def _long_example() -> SquadExample:
    context = " ".join(f"word{i}" for i in range(200)) + " The answer is Lisbon ."
    start = context.index("Lisbon")
    return SquadExample("q", "t", context, "What is the answer?", ("Lisbon",), (start,))


def test_features_are_cls_question_sep_window_sep_with_segment_ids(tokenizer):
    feats = make_features([_long_example()], tokenizer, max_seq_length=64, doc_stride=32)
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    assert len(feats) > 1 and all(len(f.input_ids) <= 64 for f in feats)
    f = feats[0]
    q_len = f.token_type_ids.index(1) - 2
    assert f.input_ids[0] == cls and f.input_ids[q_len + 1] == sep and f.input_ids[-1] == sep
    assert f.token_type_ids[: q_len + 2] == [0] * (q_len + 2)
    assert f.offsets[0] is None and f.offsets[q_len + 2] is not None and f.offsets[-1] is None


def test_the_answer_is_labelled_only_in_windows_that_contain_it(tokenizer):
    ex = _long_example()
    feats = make_features([ex], tokenizer, max_seq_length=64, doc_stride=32, training=True)
    labelled = [f for f in feats if f.start_position > 0]
    assert len(labelled) >= 1 and feats[0].start_position == 0  # first window: points at [CLS]
    f = labelled[0]
    start, end = f.offsets[f.start_position][0], f.offsets[f.end_position][1]
    assert ex.context[start:end] == "Lisbon"


def test_the_question_is_cut_to_max_query_length(tokenizer):
    ex = SquadExample("q", "t", "short context", "why " * 100, (), ())
    f = make_features([ex], tokenizer, max_seq_length=64, max_query_length=10)[0]
    assert f.token_type_ids.index(1) == 12  # [CLS] + 10 question tokens + [SEP]


def _oracle_logits(features):
    starts, ends = [], []
    for f in features:
        s, e = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
        s[f.start_position] += 10
        e[f.end_position] += 10
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_oracle_logits_recover_the_gold_answers_of_real_questions(dev, tokenizer):
    # Token boundaries can differ from a gold answer's characters ("1990s" vs gold "1990"), so a
    # perfect span model scores just under 100 on the real questions of two articles.
    _, held_out = split_by_article(dev, 46)
    feats = make_features(held_out.examples, tokenizer, max_seq_length=128, doc_stride=48, training=True)
    preds, _, _ = postprocess_predictions(held_out.examples, feats, *_oracle_logits(feats))
    got = squad_v1_evaluate(held_out.articles, preds)
    assert got["exact_match"] > 99.0 and got["f1"] > 99.0


def _feature(n_ctx: int) -> QAFeature:
    # [CLS] q [SEP] c0..c{n-1} [SEP]; context token i covers characters 2i..2i+1
    offsets = [None, None, None] + [(2 * i, 2 * i + 1) for i in range(n_ctx)] + [None]
    n = len(offsets)
    return QAFeature(0, [0] * n, [0] * 3 + [1] * (n_ctx + 1), offsets, [o is not None for o in offsets])


EXAMPLE = SquadExample("q", "t", "a b c d e f g h", "?", ("c",), (4,))


def test_the_best_span_by_start_plus_end_logit_wins():
    f = _feature(8)
    s, e = np.zeros(12), np.zeros(12)
    s[3 + 2], e[3 + 3] = 5, 4  # span "c d": score 9
    s[3 + 6], e[3 + 6] = 4, 3  # span "g": score 7; "c .. g": 8
    preds, _, nbest = postprocess_predictions([EXAMPLE], [f], [s], [e])
    assert preds == {"q": "c d"}
    assert [(c["text"], c["score"]) for c in nbest["q"][:3]] == [("c d", 9), ("c d e f g", 8), ("g", 7)]
    assert sum(c["probability"] for c in nbest["q"]) == pytest.approx(1.0)


def test_spans_longer_than_max_answer_length_or_reversed_are_never_chosen():
    f = _feature(8)
    s, e = np.zeros(12), np.zeros(12)
    s[3 + 0], e[3 + 7] = 10, 10  # "a .. h": 8 tokens, score 20
    s[3 + 7], e[3 + 0] = 9, 9.5  # "h .. a": end before start, score 18.5
    preds, _, _ = postprocess_predictions([EXAMPLE], [f], [s], [e], max_answer_length=3)
    assert preds == {"q": "a"}  # the best valid span: "a", score 19.5


def test_v2_predicts_no_answer_when_the_null_score_beats_the_best_span():
    f = _feature(8)
    s, e = np.zeros(12), np.zeros(12)
    s[0], e[0] = 6, 6  # null score 12
    s[3 + 2], e[3 + 2] = 5, 5  # best span score 10
    preds, na, nbest = postprocess_predictions([EXAMPLE], [f], [s], [e], version_2=True)
    assert preds == {"q": ""} and na == {"q": pytest.approx(2.0)}
    assert nbest["q"][0]["text"] == ""
    preds, _, _ = postprocess_predictions([EXAMPLE], [f], [s], [e], version_2=True, null_score_diff_threshold=2.5)
    assert preds == {"q": "c"}


def test_v2_file_without_answers_is_rejected_for_squad1(tmp_path):
    data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [
        {"id": "x", "question": "?", "answers": [], "is_impossible": True,
         "plausible_answers": [{"text": "abc", "answer_start": 0}]}]}]}]}
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError, match="question x has no answer; this looks like a SQuAD v2.0 file, use --task squad2"):
        read_squad(path, SQUAD1)
    assert read_squad(path, SQUAD2).examples[0].is_impossible


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ('{"version": "1.1"}', "not a SQuAD file"),
        ('{"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}', "lacks the field 'context'"),
        ('{"data": [{"title": "t", "paragraphs": [{"context": "ab", "qas": [{"id": "1", "question": "?", '
         '"answers": [{"text": "ab", "answer_start": 5}]}]}]}]}', "answer_start 5 of 'ab' lies outside its context"),
    ],
)
def test_malformed_squad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_squad(path, SQUAD1)


def test_a_missing_squad_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="SQuAD file not found"):
        read_squad(tmp_path / "dev-v1.1.json", SQUAD1)


def test_predictions_must_map_ids_to_strings(tmp_path):
    (tmp_path / "p.json").write_text('["a", "b"]', encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object mapping question id to answer text"):
        read_predictions(tmp_path / "p.json")
