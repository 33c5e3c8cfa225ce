"""`leanbert predict`: one JSON line per input with exactly the documented fields, in input
order, agreeing with what `leanbert evaluate` predicts for the same checkpoint and rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from leanbert.cli import main
from leanbert.tasks import get_task, glue

FAST = ["--set", "threads=1", "--set", "progress=false", "--set", "eval_batch_size=64"]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, minilm_dir) -> Path:
    """A randomly initialised bert-tiny with the uncased BERT vocabulary."""
    import torch

    import leanbert

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("base") / "bert-tiny"
    leanbert.build_model("bert-tiny", heads=["mlm"]).save_pretrained(out, tokenizer_dir=minilm_dir)
    return out


def _sst2_csv(shared_file, path: Path, split: str, n: int, label_as: str = "name") -> Path:
    rows = glue.read_glue(get_task("sst2"), shared_file("glue/SST-2"), split, limit=n).examples
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        for ex in rows:
            w.writerow([ex.texts[0], {"0": "negative", "1": "positive"}[ex.label] if label_as == "name" else f"{ex.label}.0"])
    return path


@pytest.fixture(scope="module")
def classifier(base_model, shared_file, tmp_path_factory) -> tuple[Path, Path]:
    """(fine-tuned checkpoint, its validation CSV): 64 SST-2 rows, one epoch."""
    d = tmp_path_factory.mktemp("clf")
    train, dev = _sst2_csv(shared_file, d / "train.csv", "train", 64), _sst2_csv(shared_file, d / "dev.csv", "dev", 40)
    assert main(["finetune", "--task", "classification", "--train", str(train), "--validation", str(dev),
                 "--model", str(base_model), "--output", str(d / "run"), "--set", "epochs=1", "--set", "batch_size=16",
                 "--set", "lr=1e-3", "--set", "max_seq_length=48", *FAST]) == 0
    return d / "run" / "model", dev


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_classification_lines_have_label_score_and_all_probabilities(classifier, tmp_path, capsys):
    model, dev = classifier
    assert main(["predict", "--model", str(model), "--data", str(dev), "--output", str(tmp_path / "p.jsonl"), *FAST]) == 0
    assert capsys.readouterr().out.strip() == f"wrote 40 predictions to {tmp_path / 'p.jsonl'}"
    lines = _lines(tmp_path / "p.jsonl")
    assert len(lines) == 40
    for r in lines:
        assert set(r) == {"label", "score", "probabilities"} and set(r["probabilities"]) == {"negative", "positive"}
        assert r["score"] == max(r["probabilities"].values()) == r["probabilities"][r["label"]]
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-9)


def test_predicted_labels_agree_with_evaluate(classifier, tmp_path, capsys):
    model, dev = classifier
    assert main(["predict", "--model", str(model), "--data", str(dev), "--output", str(tmp_path / "p.jsonl"), *FAST]) == 0
    assert main(["evaluate", "--model", str(model), "--data", str(dev), "--output", str(tmp_path / "ev"), *FAST]) == 0
    evaluated = glue.read_predictions(tmp_path / "ev" / "predictions" / "validation.tsv")
    predicted = [r["label"] for r in _lines(tmp_path / "p.jsonl")]
    assert predicted == [evaluated[str(i)] for i in range(40)]
    gold = [row["label"] for row in csv.DictReader(open(dev, encoding="utf-8"))]
    accuracy = json.loads((tmp_path / "ev" / "metrics.json").read_text())["metrics"]["validation"]["accuracy"]
    assert sum(p == g for p, g in zip(predicted, gold, strict=True)) / 40 == pytest.approx(accuracy)


def test_without_output_the_lines_go_to_stdout_in_input_order(classifier, tmp_path, capsys):
    model, _ = classifier
    path = tmp_path / "new.jsonl"
    texts = ["a masterpiece , moving and funny .", "dull , tedious and far too long .", "a masterpiece , moving and funny ."]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")  # no label column
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--data", str(path), *FAST]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and lines[0] == lines[2]  # the same text, the same prediction


def test_regression_lines_hold_the_value(base_model, shared_file, tmp_path, capsys):
    train = _sst2_csv(shared_file, tmp_path / "train.csv", "train", 32, label_as="number")
    dev = _sst2_csv(shared_file, tmp_path / "dev.csv", "dev", 16, label_as="number")
    assert main(["finetune", "--task", "regression", "--train", str(train), "--validation", str(dev), "--model",
                 str(base_model), "--output", str(tmp_path / "run"), "--set", "epochs=1", "--set", "batch_size=16",
                 "--set", "max_seq_length=48", *FAST]) == 0
    model = tmp_path / "run" / "model"
    assert main(["predict", "--model", str(model), "--data", str(dev), "--output", str(tmp_path / "p.jsonl"), *FAST]) == 0
    assert main(["evaluate", "--model", str(model), "--data", str(dev), "--output", str(tmp_path / "ev"), *FAST]) == 0
    lines = _lines(tmp_path / "p.jsonl")
    assert all(set(r) == {"value"} for r in lines)
    evaluated = glue.read_predictions(tmp_path / "ev" / "predictions" / "validation.tsv")  # not clipped to STS-B's [0, 5]
    assert [r["value"] for r in lines] == pytest.approx([float(evaluated[str(i)]) for i in range(16)], abs=1e-6)


def test_qa_lines_hold_the_answer_and_its_character_span(base_model, shared_file, tmp_path, capsys):
    articles = json.loads(shared_file("squad/dev-v1.1.json").read_text(encoding="utf-8"))["data"][:2]
    rows = [{"id": qa["id"], "title": a["title"], "context": p["context"], "question": qa["question"],
             "answers": {"text": [x["text"] for x in qa["answers"]], "answer_start": [x["answer_start"] for x in qa["answers"]]}}
            for a in articles for p in a["paragraphs"][:2] for qa in p["qas"]]
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert main(["finetune", "--task", "qa", "--train", str(path), "--validation", str(path), "--model", str(base_model),
                 "--output", str(tmp_path / "run"), "--set", "epochs=1", "--set", "batch_size=16",
                 "--set", "max_seq_length=128", "--set", "doc_stride=64", *FAST]) == 0
    model = tmp_path / "run" / "model"
    assert main(["predict", "--model", str(model), "--data", str(path), "--output", str(tmp_path / "p.jsonl"), *FAST]) == 0
    assert main(["evaluate", "--model", str(model), "--data", str(path), "--output", str(tmp_path / "ev"), *FAST]) == 0
    lines = _lines(tmp_path / "p.jsonl")
    evaluated = json.loads((tmp_path / "ev" / "predictions" / "predictions.json").read_text())
    assert len(lines) == len(rows)
    for r, row in zip(lines, rows, strict=True):
        assert set(r) == {"answer", "start", "end", "score"} and 0 < r["score"] <= 1
        assert row["context"][r["start"]:r["end"]] == r["answer"] == evaluated[row["id"]]


def test_a_glue_checkpoint_reads_the_hubs_column_names(minilm_dir, tmp_path, capsys):
    import torch

    import leanbert
    from leanbert.tasks.predict import predict

    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["classifier"], num_labels=2)
    model.save_pretrained(tmp_path / "mrpc", tokenizer_dir=minilm_dir, metadata={"task": "mrpc", "labels": ["0", "1"]})
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"sentence1": "He left.", "sentence2": "He went away.", "idx": 0}) + "\n", encoding="utf-8")
    lines = predict(tmp_path / "mrpc", path, overrides=["threads=1"])  # columns sentence1 / sentence2
    assert len(lines) == 1 and lines[0]["label"] in {"0", "1"} and set(lines[0]["probabilities"]) == {"0", "1"}


def test_a_checkpoint_that_is_not_fine_tuned_is_a_one_line_error(base_model, tmp_path, capsys):
    (tmp_path / "x.csv").write_text("text\nhello\n", encoding="utf-8")
    assert main(["predict", "--model", str(base_model), "--data", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not record its task (is it fine-tuned?)" in err
