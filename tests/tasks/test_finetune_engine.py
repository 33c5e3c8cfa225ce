"""Fine-tuning on the shared engine: what it gains with no code of its own (resume after a
kill, torchrun, bf16, gradient accumulation, metrics.jsonl) on real SST-2 text."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from leanbert.tasks.finetune import finetune, finetune_config
from leanbert.tasks.registry import get_task
from leanbert.train.state import list_checkpoints

SST2 = get_task("sst2")
BASE = ["train_limit=96", "eval_limit=48", "batch_size=8", "epochs=2", "predict_test=false", "log_every=1",
        "progress=false", "tensorboard=false", "deterministic=true", "lr=1e-4"]


@pytest.fixture(scope="module")
def quiet_bert(tmp_path_factory, minilm_dir) -> Path:
    """bert-tiny (random weights, BERT's uncased vocabulary) without dropout, so that runs with
    different numbers of processes see the same computation."""
    import leanbert

    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", heads=["mlm"], hidden_dropout=0.0, attention_dropout=0.0)
    out = tmp_path_factory.mktemp("ckpt") / "bert-tiny-quiet"
    leanbert.save_pretrained(model, out, tokenizer_dir=minilm_dir)
    return out


@pytest.fixture(scope="module")
def sst2(shared_file) -> Path:
    return shared_file("glue/SST-2")


def run(sst2: Path, model: Path, out: Path, *sets: str, **kw):
    return finetune(SST2, sst2, model, out, finetune_config(SST2, overrides=[*BASE, *sets]), **kw)


def last_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(out)[-1] / "model.safetensors")


def test_resume_after_a_stop_is_bitwise_identical(sst2, tiny_bert, tmp_path):
    full = run(sst2, tiny_bert, tmp_path / "full", "checkpoint_every=3")
    cut = run(sst2, tiny_bert, tmp_path / "cut", "checkpoint_every=3", stop_after=5)
    assert cut["interrupted"] and cut["steps"] == 5
    resumed = run(sst2, tiny_bert, tmp_path / "cut", "checkpoint_every=3")
    assert resumed["steps"] == full["steps"] == 24
    a, b = last_weights(tmp_path / "full"), last_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == full["metrics"] and resumed["best_epoch"] == full["best_epoch"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]


def test_sigkill_then_rerun_gives_the_same_weights(sst2, tiny_bert, tmp_path):
    sets = [f"--set={s}" for s in [*BASE, "checkpoint_every=2", "train_limit=256", "epochs=1"]]

    def cli(out: Path) -> list[str]:
        return [sys.executable, "-m", "leanbert", "finetune", "--task", "sst2", "--data", str(sst2),
                "--model", str(tiny_bert), "-o", str(out), *sets]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(cli(tmp_path / "full"), check=True, env=env, capture_output=True, timeout=300)
    proc = subprocess.Popen(cli(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list_checkpoints(tmp_path / "cut"):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = [int(p.name.split("-")[1]) for p in list_checkpoints(tmp_path / "cut")]
    assert done and max(done) < 32, "the kill must land before the end of the run"
    subprocess.run(cli(tmp_path / "cut"), check=True, env=env, capture_output=True, timeout=300)
    a, b = last_weights(tmp_path / "full"), last_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    best_a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    best_b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)


def test_gradient_accumulation_equals_the_full_batch(sst2, quiet_bert, tmp_path):
    one = run(sst2, quiet_bert, tmp_path / "one", "epochs=1", "deterministic=false")
    accum = run(sst2, quiet_bert, tmp_path / "accum", "epochs=1", "micro_batch_size=2", "deterministic=false")
    assert one["steps"] == accum["steps"] == 12
    a, b = last_weights(tmp_path / "one"), last_weights(tmp_path / "accum")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)


def test_torchrun_two_processes_equal_one_process(sst2, quiet_bert, tmp_path):
    run(sst2, quiet_bert, tmp_path / "one", "epochs=1")
    sets = [f"--set={s}" for s in [*BASE, "epochs=1"]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "leanbert",
           "finetune", "--task", "sst2", "--data", str(sst2), "--model", str(quiet_bert), "-o", str(tmp_path / "two"),
           *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = last_weights(tmp_path / "one"), last_weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)
    report = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 12


def test_bf16_fine_tuning_is_finite_and_learns(sst2, tiny_mobilebert, tmp_path):
    report = run(sst2, tiny_mobilebert, tmp_path / "bf16", "precision=bf16", "epochs=1", "lr=5e-4")
    losses = [json.loads(x)["loss"] for x in (tmp_path / "bf16" / "metrics.jsonl").read_text().splitlines()
              if '"kind": "train"' in x]
    assert len(losses) == 12 and all(torch.isfinite(torch.tensor(losses)))
    assert 0.0 <= report["metrics"]["dev"]["accuracy"] <= 1.0
    assert report["train_examples_per_s"] > 0


def test_metrics_log_has_train_and_dev_records(sst2, tiny_bert, tmp_path):
    run(sst2, tiny_bert, tmp_path / "run", "epochs=1")
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert {"loss", "task_loss", "train_accuracy", "lr", "grad_norm", "samples_per_s"} <= set(train[0])
    assert [r["step"] for r in evals] == [12] and 0.0 <= evals[0]["dev_accuracy"] <= 1.0


def test_activation_checkpointing_gives_the_same_fine_tuned_weights(sst2, tiny_bert, tmp_path):
    plain = run(sst2, tiny_bert, tmp_path / "plain", "epochs=1")
    recomputed = run(sst2, tiny_bert, tmp_path / "ckpt", "epochs=1", "activation_checkpointing=true")
    assert recomputed["steps"] == plain["steps"] == 12
    a, b = last_weights(tmp_path / "plain"), last_weights(tmp_path / "ckpt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6  # dropout replayed: same steps
