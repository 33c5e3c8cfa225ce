"""Fine-tuning, evaluation and sweeps end to end, with tiny models and small slices of real data."""

from __future__ import annotations

import json

import pytest

from leanbert.config import validate
from leanbert.errors import ConfigError
from leanbert.tasks import get_task
from leanbert.tasks.finetune import FinetuneConfig, evaluate_checkpoint, finetune, finetune_config
from leanbert.tasks.sweep import summarize, sweep

# One CPU thread: on a shared 2-core machine this is several times faster than two.
FAST = ["threads=1", "progress=false", "eval_batch_size=128"]


def cfg_for(task: str, *overrides: str) -> FinetuneConfig:
    return finetune_config(get_task(task), overrides=[*FAST, *overrides])


@pytest.fixture(scope="module")
def wnli_run(tiny_bert, glue_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("wnli")
    cfg = cfg_for("wnli", "epochs=2", "train_limit=48", "batch_size=16", "max_seq_length=64", "lr=1e-4")
    return out, finetune("wnli", glue_root / "WNLI", tiny_bert, out, cfg)


def test_short_finetune_of_pretrained_minilm_beats_the_majority_class_on_sst2_dev(minilm_dir, glue_root, tmp_path):
    # all-MiniLM-L6-v2 is a transformers checkpoint: this also covers importing one.
    cfg = cfg_for("sst2", "epochs=1", "train_limit=640", "batch_size=16", "max_seq_length=48", "lr=5e-5",
                  "predict_test=false")
    report = finetune("sst2", glue_root / "SST-2", minilm_dir, tmp_path, cfg)
    labels = [line.split("\t")[1].strip() for line in (glue_root / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    majority = max(labels.count("0"), labels.count("1")) / len(labels)  # 0.509
    assert report["metrics"]["dev"]["accuracy"] > majority + 0.05


def test_finetune_writes_metrics_model_predictions_and_glue_submission(wnli_run):
    out, report = wnli_run
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"] == report["metrics"] and set(saved["metrics"]["dev"]) == {"accuracy"}
    assert (out / "model" / "model.safetensors").is_file()
    dev = (out / "predictions" / "dev.tsv").read_text().splitlines()
    test = (out / "submission" / "WNLI.tsv").read_text().splitlines()
    assert dev[0] == "index\tprediction" and len(dev) == 72
    assert len(test) == 147 and {row.split("\t")[1] for row in test[1:]} <= {"0", "1"}


def test_the_best_epoch_is_kept(wnli_run):
    _, report = wnli_run
    scores = [h["eval"]["dev"]["accuracy"] for h in report["history"]]
    assert len(scores) == 2
    assert report["metrics"]["dev"]["accuracy"] == max(scores)
    assert report["best_epoch"] == scores.index(max(scores)) + 1


def test_evaluate_reproduces_the_dev_metrics_of_the_best_checkpoint(wnli_run, glue_root):
    out, report = wnli_run
    again = evaluate_checkpoint(out / "model", glue_root / "WNLI", cfg=cfg_for("wnli", "max_seq_length=64"))
    assert again["task"] == "wnli"  # read from the checkpoint
    assert again["metrics"]["dev"]["accuracy"] == pytest.approx(report["metrics"]["dev"]["accuracy"])


def test_evaluate_on_a_test_split_writes_the_glue_server_file(wnli_run, glue_root, tmp_path):
    out, _ = wnli_run
    report = evaluate_checkpoint(out / "model", glue_root, split="test", output=tmp_path, cfg=cfg_for("wnli"))
    assert report["metrics"] == {}
    assert len((tmp_path / "predictions" / "WNLI.tsv").read_text().splitlines()) == 147


@pytest.mark.parametrize("encoder", ["tiny_bert", "tiny_mobilebert"])
def test_every_encoder_family_fine_tunes_for_classification_and_span_qa(encoder, request, glue_root, squad_dev, tmp_path):
    ckpt = request.getfixturevalue(encoder)
    small = ["epochs=1", "train_limit=32", "eval_limit=32", "max_seq_length=128", "doc_stride=64", "predict_test=false"]
    glue_report = finetune("sst2", glue_root / "SST-2", ckpt, tmp_path / "sst2", cfg_for("sst2", *small))
    squad_report = finetune("squad1", squad_dev, ckpt, tmp_path / "squad", cfg_for("squad1", *small, "train_articles=36"))
    assert 0.0 <= glue_report["metrics"]["dev"]["accuracy"] <= 1.0
    assert 0.0 <= squad_report["metrics"]["dev"]["f1"] <= 100.0
    assert len(json.loads((tmp_path / "squad" / "predictions" / "predictions.json").read_text())) == 32


def test_stsb_trains_a_regression_head_and_writes_clipped_scores(tiny_bert, stsb_dir, tmp_path):
    report = finetune("stsb", stsb_dir, tiny_bert, tmp_path, cfg_for("stsb", "epochs=1", "batch_size=4", "lr=1e-3"))
    assert set(report["metrics"]["dev"]) == {"pearson", "spearmanr"}
    config = json.loads((tmp_path / "model" / "config.json").read_text())["model"]
    assert (config["problem_type"], config["num_labels"]) == ("regression", 1)
    scores = [float(r.split("\t")[1]) for r in (tmp_path / "submission" / "STS-B.tsv").read_text().splitlines()[1:]]
    assert len(scores) == 6 and all(0.0 <= s <= 5.0 for s in scores)


def test_mnli_reports_matched_and_mismatched_and_writes_three_server_files(tiny_bert, mnli_dir, tmp_path):
    report = finetune("mnli", mnli_dir, tiny_bert, tmp_path, cfg_for("mnli", "epochs=1", "batch_size=4"))
    assert set(report["metrics"]) == {"dev_matched", "dev_mismatched"}
    assert sorted(p.name for p in (tmp_path / "submission").iterdir()) == ["AX.tsv", "MNLI-m.tsv", "MNLI-mm.tsv"]
    rows = (tmp_path / "submission" / "MNLI-m.tsv").read_text().splitlines()[1:]
    assert {r.split("\t")[1] for r in rows} <= {"contradiction", "entailment", "neutral"}


@pytest.fixture(scope="module")
def squad_run(tiny_bert, squad_dev, tmp_path_factory):
    out = tmp_path_factory.mktemp("squad")
    cfg = cfg_for("squad1", "epochs=1", "train_limit=48", "eval_limit=30", "batch_size=16", "max_seq_length=128",
                  "doc_stride=64", "train_articles=36", "lr=1e-3")
    return out, finetune("squad1", squad_dev, tiny_bert, out, cfg)


def test_squad_finetune_predicts_every_held_out_question_by_id(squad_run):
    out, report = squad_run
    preds = json.loads((out / "predictions" / "predictions.json").read_text())
    assert len(preds) == 30 and all(isinstance(v, str) for v in preds.values())
    assert set(report["metrics"]["dev"]) == {"exact_match", "f1"}
    assert "articles 1-36 train" in report["data"]["source"]


def test_score_from_the_predictions_file_matches_the_finetune_metrics(squad_run, squad_dev, tmp_path):
    from leanbert.tasks.score import score_file

    out, report = squad_run
    # the eval slice is the first 30 questions of the held-out articles
    data = json.loads(squad_dev.read_text())
    preds = json.loads((out / "predictions" / "predictions.json").read_text())
    kept = []
    for a in data["data"][36:]:
        paragraphs = [{**p, "qas": [q for q in p["qas"] if q["id"] in preds]} for p in a["paragraphs"]]
        kept.append({**a, "paragraphs": [p for p in paragraphs if p["qas"]]})
    (tmp_path / "gold.json").write_text(json.dumps({"version": "1.1", "data": kept}))
    got = score_file("squad1", tmp_path / "gold.json", out / "predictions" / "predictions.json")
    assert got == pytest.approx(report["metrics"]["dev"])


def test_squad2_reports_the_has_and_no_answer_breakdown_and_best_thresholds(tiny_bert, squad_dev, tmp_path):
    data = json.loads(squad_dev.read_text())["data"][:2]
    for a in data:  # make every third question unanswerable, as in SQuAD v2.0
        for p in a["paragraphs"]:
            for i, qa in enumerate(p["qas"]):
                if i % 3 == 0:
                    qa["plausible_answers"], qa["answers"], qa["is_impossible"] = qa["answers"], [], True
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "dev-v2.0.json").write_text(json.dumps({"version": "v2.0", "data": data}))
    cfg = cfg_for("squad2", "epochs=1", "train_limit=32", "eval_limit=40", "batch_size=16", "max_seq_length=128",
                  "doc_stride=64", "train_articles=1")
    report = finetune("squad2", tmp_path / "data", tiny_bert, tmp_path / "out", cfg)
    m = report["metrics"]["dev"]
    for key in ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1", "best_f1", "best_f1_thresh"):
        assert key in m
    assert m["HasAns_total"] + m["NoAns_total"] == m["total"] == 40
    assert len(json.loads((tmp_path / "out" / "predictions" / "null_odds.json").read_text())) == 40


def test_sweep_reports_median_and_best_over_seeds(tmp_path):
    def fake_run(spec, data, model, out, cfg):  # accuracy depends on lr and seed
        return {"metrics": {"dev": {"accuracy": cfg.lr * 1e4 + cfg.seed / 100}}, "best_epoch": 1}

    cfg = validate(FinetuneConfig, {}, "test")
    report = sweep("rte", "data", "model", tmp_path, cfg, [1e-5, 2e-5], [1, 2, 3], run_fn=fake_run)
    per_lr = {r["lr"]: r for r in report["summary"]["per_lr"]}
    assert per_lr[2e-5]["median"] == pytest.approx(0.22) and per_lr[2e-5]["best"] == pytest.approx(0.23)
    assert report["summary"]["best"]["seed"] == 3 and report["summary"]["best_lr_by_median"] == 2e-5
    assert json.loads((tmp_path / "sweep.json").read_text())["summary"] == report["summary"]


def test_summary_median_of_an_even_number_of_seeds_averages_the_middle_two():
    runs = [{"lr": 1e-5, "seed": s, "score": v, "dir": ""} for s, v in enumerate([0.1, 0.5, 0.3, 0.9])]
    assert summarize(get_task("cola"), runs)["per_lr"][0]["median"] == pytest.approx(0.4)


def test_unknown_config_keys_are_errors_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        cfg_for("sst2", "learning_rate=1e-5")


def test_finetune_without_a_train_split_is_a_clear_error(tiny_bert, glue_root, tmp_path):
    from leanbert.errors import DataError

    with pytest.raises(DataError, match="no train file for qnli"):
        finetune("qnli", glue_root / "QNLI", tiny_bert, tmp_path, cfg_for("qnli"))


def test_sequence_longer_than_the_position_table_is_a_config_error(tiny_bert, stsb_dir, tmp_path):
    with pytest.raises(ConfigError, match="max_seq_length 1024 exceeds the model's max_position_embeddings 512"):
        finetune("stsb", stsb_dir, tiny_bert, tmp_path, cfg_for("stsb", "max_seq_length=1024"))


def test_presets_exist_for_glue_and_squad():
    assert finetune_config(get_task("squad2")).max_seq_length == 384
    assert finetune_config(get_task("cola")).max_seq_length == 128


def test_evaluation_config_reuses_the_recorded_sequence_settings_and_explicit_overrides_win():
    from leanbert.tasks.finetune import evaluation_config

    recorded = {"max_seq_length": 64, "doc_stride": 32, "lr": 0.5}  # lr is not an evaluation setting
    cfg = evaluation_config(get_task("squad1"), recorded)
    assert (cfg.max_seq_length, cfg.doc_stride) == (64, 32)
    assert cfg.lr == evaluation_config(get_task("squad1"), None).lr  # the preset's
    assert evaluation_config(get_task("squad1"), recorded, overrides=["max_seq_length=48"]).max_seq_length == 48
    assert evaluation_config(get_task("sst2"), None).max_seq_length == 128  # nothing recorded: the glue preset
