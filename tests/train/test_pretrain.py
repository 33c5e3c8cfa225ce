"""The pretraining engine on real text: learning, exact resume, data parallelism, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from leanbert.errors import ConfigError
from leanbert.train.config import load_pretrain_config
from leanbert.train.pretrain import TrainingDiverged, pretrain
from leanbert.train.state import list_checkpoints

TINY = [
    "model.preset=bert-tiny", "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
    "model.max_position_embeddings=64", "data.batch_size=8", "data.max_predictions=6", "train.precision=fp32",
    "train.deterministic=true", "eval.batches=4", "eval.batch_size=8", "log.every=1", "log.progress=false",
    "log.tensorboard=false", "optim.lr=1e-3", "optim.warmup_steps=2",
]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """WikiText-2 validation text, a 2,000-word WordPiece vocabulary, 32-token packed examples."""
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pretrain" / "wikitext-2-tokens"
    if not data.is_dir():
        pytest.skip(f"real text not found at {data}")
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("pretrain-data")
    tok = train_tokenizer(data / "wiki.valid.tokens", vocab_size=2000)
    prepare(data / "wiki.valid.tokens", tok, out / "data", {"seq_length": 32, "validation_fraction": 0.05})
    return out / "data"


def cfg(*extra: str):
    return load_pretrain_config("demo", [*TINY, *extra])


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(run)[-1] / "model.safetensors")


def test_loss_falls_on_real_text(prepared, tmp_path):
    res = pretrain(cfg("train.max_steps=40", "optim.lr=5e-3", "eval.every=1000", "checkpoint.every=1000"),
                   prepared, tmp_path / "run")
    assert res.steps == 40
    assert res.eval_after["mlm_loss"] < res.eval_before["mlm_loss"] - 1.0
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len([x for x in lines if '"kind": "train"' in x]) == 40


def test_resume_after_stop_is_bitwise_identical(prepared, tmp_path):
    c = cfg("train.max_steps=6", "checkpoint.every=2", "eval.every=1000")
    pretrain(c, prepared, tmp_path / "full")
    first = pretrain(c, prepared, tmp_path / "cut", stop_after=3)
    assert first.interrupted and first.steps == 3
    second = pretrain(c, prepared, tmp_path / "cut")
    assert second.steps == 6
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "leanbert", "pretrain", *args]


def test_sigkill_at_any_moment_then_resume_gives_same_weights(prepared, tmp_path):
    sets = [f"--set={s}" for s in [*TINY, "train.max_steps=40", "checkpoint.every=1", "eval.every=1000"]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_cli("--data", str(prepared), "-o", str(tmp_path / "full"), *sets), check=True, env=env,
                   capture_output=True)
    proc = subprocess.Popen(_cli("--data", str(prepared), "-o", str(tmp_path / "cut"), *sets), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(tmp_path / "cut")) < 1:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = [int(p.name.split("-")[1]) for p in list_checkpoints(tmp_path / "cut")]
    assert done_before and max(done_before) < 40, "the kill must land before the end of the run"
    subprocess.run(_cli("--data", str(prepared), "-o", str(tmp_path / "cut"), *sets), check=True, env=env,
                   capture_output=True)
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in (tmp_path / "cut" / "checkpoints").iterdir() if p.name.startswith(".")]


def test_sigterm_saves_a_checkpoint_and_exits(prepared, tmp_path):
    sets = [f"--set={s}" for s in [*TINY, "train.max_steps=100000", "checkpoint.every=100000", "eval.every=100000"]]
    proc = subprocess.Popen(_cli("--data", str(prepared), "-o", str(tmp_path / "run"), *sets),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    metrics = tmp_path / "run" / "metrics.jsonl"
    while time.time() < deadline and not (metrics.exists() and '"train"' in metrics.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err and "checkpoint saved" in err
    assert len(list_checkpoints(tmp_path / "run")) == 1


def test_nan_loss_stops_cleanly_and_keeps_last_good_checkpoint(prepared, tmp_path, monkeypatch):
    from leanbert.train.pretrain import MLMObjective

    real_call = MLMObjective.__call__
    calls = {"n": 0}

    def poisoned(self, model, batch, router=None):
        out = real_call(self, model, batch, router)
        if model.training:
            calls["n"] += 1
            if calls["n"] == 5:
                out["loss.mlm"] = out["loss.mlm"] * float("nan")
        return out

    monkeypatch.setattr(MLMObjective, "__call__", poisoned)
    with pytest.raises(TrainingDiverged, match=r"loss became nan .*at step 5;.*step-00000004"):
        pretrain(cfg("train.max_steps=10", "checkpoint.every=2", "eval.every=1000"), prepared, tmp_path / "run")
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000002", "step-00000004"]


@pytest.mark.parametrize("override,message", [
    ("optim.nam=lamb", "unknown key 'optim.nam'"),
    ("optim.lr=fast", "key 'optim.lr'"),
    ("train.precision=fp8", "key 'train.precision'"),
    ("data.batch_size=0", "key 'data.batch_size'"),
    ("data.micro_batch_size=3", "not a multiple of data.micro_batch_size"),
    ("checkpoint.every=-1", "key 'checkpoint.every'"),
    ("model.hiden_size=64", r"unknown key 'model.hiden_size' \(did you mean 'hidden_size'\?\); valid keys are: .*intermediate_size"),
    ("model.num_heads=5", "hidden_size 32 is not divisible by num_heads 5"),
    ("optim.lrr=1", r"unknown key 'optim.lrr' \(did you mean 'lr'\?\); valid keys are: betas, clip_grad_norm"),
    ("token_dropping.kep=0.5", r"unknown key 'token_dropping.kep' \(did you mean 'keep'\?\); valid keys are: allow_ids"),
    ("token_dropping.method=tokens", "key 'token_dropping.method'"),
])
def test_bad_config_values_are_rejected_at_start(override, message):
    with pytest.raises(ConfigError, match=message):
        cfg(override)


def test_model_too_short_for_data_is_rejected(prepared, tmp_path):
    with pytest.raises(ConfigError, match="max_position_embeddings 16 < data sequence length 32"):
        pretrain(cfg("model.max_position_embeddings=16"), prepared, tmp_path / "run")


def test_resume_with_a_different_model_is_refused(prepared, tmp_path):
    pretrain(cfg("train.max_steps=2", "eval.every=1000"), prepared, tmp_path / "run")
    with pytest.raises(ConfigError, match="different model"):
        pretrain(cfg("train.max_steps=4", "model.num_layers=3"), prepared, tmp_path / "run")


def test_cli_reports_missing_data_in_one_line(tmp_path):
    proc = subprocess.run(_cli("--data", str(tmp_path / "nope"), "-o", str(tmp_path / "o")),
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "not found" in proc.stderr


def _torchrun(nproc: int, data: Path, out: Path, *sets: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "leanbert", "pretrain", "--data", str(data), "-o", str(out), *[f"--set={s}" for s in sets]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


DDP = [*TINY, "model.hidden_dropout=0.0", "model.attention_dropout=0.0", "data.micro_batch_size=4",
       "optim.schedule=constant", "optim.warmup_steps=0", "eval.every=1000", "checkpoint.every=1000"]


def test_torchrun_two_processes_equal_one_process(prepared, tmp_path):
    # One process with micro-batches of 8 against two with 4 each: masks are per sample, so the
    # global batches are identical.
    pretrain(cfg(*DDP[len(TINY):], "train.max_steps=4", "data.micro_batch_size=8"), prepared, tmp_path / "one")
    _torchrun(2, prepared, tmp_path / "two", *DDP, "train.max_steps=4")
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)
    ckpts = list_checkpoints(tmp_path / "two")
    assert [p.name for p in ckpts] == ["step-00000004"]  # written once, by rank 0


def test_resume_with_a_different_number_of_processes(prepared, tmp_path):
    pretrain(cfg(*DDP[len(TINY):], "train.max_steps=6"), prepared, tmp_path / "one")
    _torchrun(2, prepared, tmp_path / "mixed", *DDP, "train.max_steps=3")
    pretrain(cfg(*DDP[len(TINY):], "train.max_steps=6"), prepared, tmp_path / "mixed")
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "mixed")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)


def test_padding_columns_are_trimmed_before_the_model():
    from leanbert.train.data import trim_padding

    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    batch = {"input_ids": torch.arange(10).view(2, 5) * mask, "attention_mask": mask,
             "token_type_ids": torch.zeros(2, 5, dtype=torch.long), "mlm_positions": torch.tensor([[1], [1]]),
             "labels": torch.tensor([[5], [6]])}
    out = trim_padding(batch)
    assert out["input_ids"].shape == (2, 3) and out["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert torch.equal(out["mlm_positions"], batch["mlm_positions"])


def test_sentence_pair_data_trains_mlm_and_nsp(tmp_path):
    data = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pretrain" / "wikitext-2-tokens"
    if not data.is_dir():
        pytest.skip(f"real text not found at {data}")
    import json

    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer

    tok = train_tokenizer(data / "wiki.valid.tokens", vocab_size=1500)
    prepare(data / "wiki.valid.tokens", tok, tmp_path / "pairs",
            {"seq_length": 48, "mode": "pairs", "validation_fraction": 0.05})
    res = pretrain(cfg("train.max_steps=3", "model.max_position_embeddings=64", "eval.every=1000"),
                   tmp_path / "pairs", tmp_path / "run")
    assert sorted(json.loads((res.model_dir / "config.json").read_text())["model"]["heads"]) == ["mlm", "nsp"]
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    nsp = [r["nsp_loss"] for r in recs if r["kind"] == "train"]
    assert len(nsp) == 3 and all(0.3 < x < 1.2 for x in nsp)  # about ln 2 at the start


def test_token_dropping_run_resumes_bitwise_with_its_scores(prepared, tmp_path):
    c = cfg("train.max_steps=6", "checkpoint.every=2", "eval.every=1000", "model.num_layers=4",
            "token_dropping.method=token", "token_dropping.keep=0.5")
    pretrain(c, prepared, tmp_path / "full")
    pretrain(c, prepared, tmp_path / "cut", stop_after=3)
    extra = load_file(list_checkpoints(tmp_path / "cut")[-1] / "extra.safetensors")
    scores = extra["token_dropping.scores"]
    assert scores.shape == (2000,) and (scores != 10.0).sum() > 0  # the table moved away from its init
    pretrain(c, prepared, tmp_path / "cut")
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa = load_file(list_checkpoints(tmp_path / "full")[-1] / "extra.safetensors")["token_dropping.scores"]
    sb = load_file(list_checkpoints(tmp_path / "cut")[-1] / "extra.safetensors")["token_dropping.scores"]
    assert torch.equal(sa, sb)


def test_random_dropping_logs_fewer_flops_than_no_dropping(prepared, tmp_path):
    import json

    flops = {}
    for method in ("none", "random"):
        pretrain(cfg("train.max_steps=2", "eval.every=1000", "model.num_layers=4",
                     f"token_dropping.method={method}"), prepared, tmp_path / method)
        rec = json.loads((tmp_path / method / "metrics.jsonl").read_text().splitlines()[-2])
        flops[method] = rec["flops_per_step"]
    assert flops["random"] < flops["none"]
