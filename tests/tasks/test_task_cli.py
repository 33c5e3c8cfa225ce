"""`leanbert finetune`, `evaluate` and `score` from the command line: results and one-line errors."""

from __future__ import annotations

import json

import pytest

from leanbert.cli import main


def _gold_predictions(squad_dev, tmp_path, drop: int = 0):
    data = json.loads(squad_dev.read_text())["data"]
    preds = {qa["id"]: qa["answers"][0]["text"] for a in data for p in a["paragraphs"] for qa in p["qas"]}
    for qid in list(preds)[:drop]:
        del preds[qid]
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps(preds))
    return path


def test_score_gives_100_on_the_gold_answers(squad_dev, tmp_path, capsys):
    preds = _gold_predictions(squad_dev, tmp_path)
    assert main(["score", "--task", "squad1", "--data", str(squad_dev), "--predictions", str(preds),
                 "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads(capsys.readouterr().out) == {"exact_match": 100.0, "f1": 100.0}
    assert json.loads((tmp_path / "m.json").read_text()) == {"exact_match": 100.0, "f1": 100.0}


def test_score_with_missing_ids_fails_with_one_line(squad_dev, tmp_path, capsys):
    preds = _gold_predictions(squad_dev, tmp_path, drop=2)
    assert main(["score", "--task", "squad1", "--data", str(squad_dev), "--predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lacks predictions for 2 of 10570 questions" in err


def test_score_allow_missing_counts_them_as_zero_like_the_official_v1_script(squad_dev, tmp_path, capsys):
    preds = _gold_predictions(squad_dev, tmp_path, drop=2)
    main(["score", "--task", "squad1", "--data", str(squad_dev), "--predictions", str(preds), "--allow-missing"])
    assert json.loads(capsys.readouterr().out)["exact_match"] == pytest.approx(100 * 10568 / 10570)


def test_score_of_a_glue_dev_file(glue_root, tmp_path, capsys):
    rows = [line.split("\t") for line in (glue_root / "CoLA" / "dev.tsv").read_text().splitlines()]
    (tmp_path / "CoLA.tsv").write_text("index\tprediction\n" + "".join(f"{i}\t{r[1]}\n" for i, r in enumerate(rows)))
    assert main(["score", "--task", "cola", "--data", str(glue_root / "CoLA"), "--predictions", str(tmp_path / "CoLA.tsv")]) == 0
    assert json.loads(capsys.readouterr().out) == {"matthews_correlation": 1.0}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["finetune", "--task", "sst3", "--data", "x", "--model", "m", "--output", "o"], "unknown task 'sst3' (did you mean 'sst2'?)"),
        (["score", "--task", "wnli", "--data", "{glue}/WNLI", "--split", "train_matched", "--predictions", "p"], "no split 'train_matched'"),
        (["score", "--task", "wnli", "--data", "{glue}/WNLI", "--predictions", "{tmp}/none.tsv"], "predictions file not found"),
        (["score", "--task", "squad1", "--data", "{tmp}/dev-v1.1.json", "--predictions", "p"], "SQuAD file not found"),
        (["finetune", "--task", "qnli", "--data", "{glue}/QNLI", "--model", "{tmp}", "--output", "{tmp}/o"], "no tokenizer in"),
        (["finetune", "--task", "sst2", "--data", "{glue}/SST-2", "--model", "{tmp}", "--output", "{tmp}/o",
          "--set", "lr=-1"], "bad value -1 for key 'lr'"),
    ],
)
def test_bad_inputs_fail_with_one_line_and_exit_2(argv, message, glue_root, tmp_path, capsys):
    argv = [a.format(glue=glue_root, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_finetune_then_evaluate_from_the_command_line(tiny_bert, stsb_dir, tmp_path, capsys):
    common = ["--set", "threads=1", "--set", "progress=false"]
    assert main(["finetune", "--task", "stsb", "--data", str(stsb_dir), "--model", str(tiny_bert),
                 "--output", str(tmp_path / "run"), "--set", "epochs=1", "--set", "batch_size=4", *common]) == 0
    trained = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "run" / "model"), "--data", str(stsb_dir),
                 "--output", str(tmp_path / "eval"), *common]) == 0
    assert json.loads(capsys.readouterr().out.split("\nwrote")[0])["metrics"]["dev"] == pytest.approx(trained["dev"])
    assert (tmp_path / "eval" / "predictions" / "dev.tsv").is_file()


def test_finetune_sweep_from_the_command_line(tiny_bert, stsb_dir, tmp_path):
    assert main(["finetune", "--task", "stsb", "--data", str(stsb_dir), "--model", str(tiny_bert),
                 "--output", str(tmp_path), "--lrs", "1e-4,1e-3", "--seeds", "1,2", "--set", "epochs=1",
                 "--set", "batch_size=4", "--set", "threads=1", "--set", "predict_test=false"]) == 0
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert len(report["runs"]) == 4 and (tmp_path / "lr0.001_seed2" / "metrics.json").is_file()
    assert {r["lr"] for r in report["summary"]["per_lr"]} == {1e-4, 1e-3}
