"""leanbert in the transformers ecosystem: transformers' Trainer trains a leanbert classifier
as it is, and exported checkpoints (label names, model card) run in transformers' pipelines
offline with leanbert's predictions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import leanbert
from leanbert.tasks import get_task, glue

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")

LABELS = ["negative", "positive"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def sst2_rows(shared_file) -> list[tuple[str, int]]:
    return [(ex.texts[0], int(ex.label)) for ex in glue.read_glue(get_task("sst2"), shared_file("glue/SST-2"), "train", limit=16).examples]


@pytest.fixture(scope="module")
def tokenized(sst2_rows, minilm_dir):
    datasets = pytest.importorskip("datasets")
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
    ds = datasets.Dataset.from_dict({"sentence": [s for s, _ in sst2_rows], "label": [y for _, y in sst2_rows]})
    return tok, ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=40), batched=True,
                       remove_columns=["sentence"])


def _trainer(model, tok, ds, out: Path, steps: int):
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=8, per_device_eval_batch_size=16, max_steps=steps,
        learning_rate=1e-3, warmup_steps=0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True, label_names=["labels"])
    return transformers.Trainer(model=model, args=args, train_dataset=ds, eval_dataset=ds,
                                data_collator=transformers.DataCollatorWithPadding(tok))


def test_trainer_trains_a_leanbert_classifier_unchanged(tokenized, tmp_path, one_thread):
    tok, ds = tokenized
    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["classifier"], num_labels=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = _trainer(model, tok, ds, tmp_path, steps=12)
    start = trainer.evaluate()["eval_loss"]
    with torch.no_grad():  # Trainer's eval loss is the model's mean cross entropy
        batch = transformers.DataCollatorWithPadding(tok)([ds[i] for i in range(len(ds))])
        logits = model.eval()(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    assert start == pytest.approx(float(F.cross_entropy(logits, batch["labels"])), abs=1e-5)
    trainer.train()
    assert trainer.state.global_step == 12
    assert trainer.evaluate()["eval_loss"] < start - 0.05  # 12 steps on the same 16 rows
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "classifier.classifier.weight" in changed and "encoder.embeddings.word.weight" in changed


def test_trainer_predictions_are_the_classifier_logits(tokenized, tmp_path, one_thread):
    tok, ds = tokenized
    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["classifier"], num_labels=2).eval()
    predictions = _trainer(model, tok, ds, tmp_path, steps=1).predict(ds)
    batch = transformers.DataCollatorWithPadding(tok)([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).logits
    assert predictions.predictions.shape == (16, 2)  # the logits only: hidden states are left out
    torch.testing.assert_close(torch.from_numpy(predictions.predictions), logits, atol=1e-5, rtol=1e-5)
    assert predictions.label_ids.tolist() == ds["label"][:]


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory, minilm_dir) -> Path:
    """A bert-tiny classifier saved as leanbert fine-tuning saves one (task, labels, metrics)."""
    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["classifier"], num_labels=2)
    out = tmp_path_factory.mktemp("clf") / "model"
    meta = {"task": "classification", "labels": LABELS, "columns": {"text": "text"}, "data": "train=reviews.csv",
            "finetune": {"epochs": 3, "batch_size": 32, "lr": 2e-5, "max_seq_length": 128},
            "base_model": "bert-tiny", "epoch": 2, "metrics": {"validation": {"accuracy": 0.8125}}}
    model.save_pretrained(out, tokenizer_dir=minilm_dir, metadata=meta)
    return out


def test_export_carries_the_label_names_and_a_model_card(classifier_checkpoint, tmp_path):
    from leanbert.cli import main

    assert main(["export", str(classifier_checkpoint), "--output", str(tmp_path / "hf")]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"] == {"negative": 0, "positive": 1}
    card = (tmp_path / "hf" / "README.md").read_text()
    for expected in ("pipeline_tag: text-classification", "`BertForSequenceClassification`", "0 = negative, 1 = positive",
                     "fine-tuning data: `train=reviews.csv`", "lr 2e-05", "| validation | accuracy | 0.8125 |"):
        assert expected in card
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert loaded.config.id2label == {0: "negative", 1: "positive"}


def test_text_classification_pipeline_gives_leanbert_predictions(classifier_checkpoint, tmp_path):
    from leanbert.tasks.predict import predict

    leanbert.export_to_transformers(leanbert.from_pretrained(classifier_checkpoint), tmp_path / "hf")
    texts = ["a gorgeous , witty , seductive movie .", "the plot is nothing but boilerplate clichés from start to finish ,"]
    (tmp_path / "new.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    ours = predict(classifier_checkpoint, tmp_path / "new.jsonl", overrides=["threads=1"])
    pipe = transformers.pipeline("text-classification", model=str(tmp_path / "hf"), top_k=None)
    for theirs, mine in zip(pipe(texts), ours, strict=True):
        assert {r["label"]: r["score"] for r in theirs} == pytest.approx(mine["probabilities"], abs=1e-5)
        assert theirs[0]["label"] == mine["label"]


def test_fill_mask_pipeline_gives_leanbert_predictions(minilm_dir, tmp_path):
    from leanbert.data.tokenizer import load_tokenizer
    from leanbert.tasks.squad import plain_tokenizer

    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["mlm"]).eval()
    tok = plain_tokenizer(load_tokenizer(minilm_dir))
    favourites = [tok.token_to_id(t) for t in ("capital", "city", "heart", "center", "pride")]
    with torch.no_grad():  # a random model predicts almost uniformly: make five clear winners
        model.mlm.bias[favourites] += torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0])
    model.save_pretrained(tmp_path / "mlm", tokenizer_dir=minilm_dir)
    leanbert.export_to_transformers(leanbert.from_pretrained(tmp_path / "mlm"), tmp_path / "hf")
    text = "paris is the [MASK] of france ."
    enc = tok.encode(text)
    with torch.no_grad():
        probs = model(torch.tensor([enc.ids])).mlm_logits[0, enc.ids.index(tok.token_to_id("[MASK]"))].softmax(-1)
    top = probs.topk(5)
    pipe = transformers.pipeline("fill-mask", model=str(tmp_path / "hf"), top_k=5)
    theirs = pipe(text)
    assert [r["token"] for r in theirs] == top.indices.tolist() == favourites
    assert [r["score"] for r in theirs] == pytest.approx(top.values.tolist(), abs=1e-6)
