"""Exit codes of the installed ``leanbert`` program, which scripts rely on to tell failures apart:
2 usage / configuration errors, 1 a run that failed (diverged, bad data mid-run), 130 an
interruption that saved a checkpoint. Each one comes out of a real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from leanbert.train.state import list_checkpoints

LEANBERT = Path(sys.executable).with_name("leanbert")
README = Path(__file__).resolve().parents[1] / "README.md"
TINY = ["model.preset=bert-tiny", "model.hidden_size=32", "model.num_heads=2", "model.intermediate_size=64",
        "model.max_position_embeddings=32", "data.batch_size=8", "train.precision=fp32", "log.progress=false",
        "log.tensorboard=false", "eval.every=1000", "eval.batches=1", "eval.at_start=false"]

pytestmark = pytest.mark.skipif(not LEANBERT.is_file(), reason=f"the installed program {LEANBERT} is missing")


def leanbert(*args: str, sets: list[str] = (), timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [str(LEANBERT), *args, *[f"--set={s}" for s in sets]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, shared_file) -> Path:
    """300 KB of WikiText-2, a 500-token vocabulary, 32-token examples in shards of 64."""
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("exit-codes")
    text = root / "wiki.txt"
    text.write_text(shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens").read_text(encoding="utf-8")[:300_000],
                    encoding="utf-8")
    prepare(text, train_tokenizer(text, vocab_size=500), root / "data", {"seq_length": 32, "shard_size": 64})
    return root / "data"


@pytest.mark.parametrize("args,sets,message", [
    (["pretrain", "--data", "DATA", "-o", "OUT", "--no-such-flag"], [], "unrecognized arguments"),
    (["pretrain", "--data", "DATA", "-o", "OUT"], ["optim.lr=fast"], "bad value \"fast\" for key 'optim.lr'"),
    (["pretrain", "--data", "MISSING", "-o", "OUT"], [], "prepared data directory not found"),
    (["pretrain", "--data", "DATA", "-o", "OUT", "--init", "MISSING"], [], "checkpoint not found"),
])
def test_usage_and_configuration_errors_exit_2(prepared, tmp_path, args, sets, message):
    args = [{"DATA": str(prepared), "OUT": str(tmp_path / "run"), "MISSING": str(tmp_path / "nope")}.get(a, a)
            for a in args]
    proc = leanbert(*args, sets=[*TINY, *sets])
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_a_diverged_run_exits_1(prepared, tmp_path):
    proc = leanbert("pretrain", "--data", str(prepared), "-o", str(tmp_path / "run"),
                    sets=[*TINY, "optim.lr=1e30", "optim.clip_grad_norm=null", "optim.warmup_steps=0",
                          "optim.schedule=constant", "train.max_steps=20"])
    assert proc.returncode == 1, proc.stderr
    assert "the loss became nan" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_bad_data_found_mid_run_exits_1_and_keeps_the_checkpoints(prepared, tmp_path):
    import shutil

    from leanbert.data.loader import ShardLoader

    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    loader = ShardLoader(data, batch_size=8)
    order = loader._epoch_order(0)[0]  # shards in the order the run reads them (seed 0)
    second = data / loader.shards[int(order[1])]["input_ids"]
    second.chmod(0o644)
    second.write_bytes(np.random.default_rng(0).bytes(second.stat().st_size))  # read at step 9
    proc = leanbert("pretrain", "--data", str(data), "-o", str(tmp_path / "run"),
                    sets=[*TINY, "train.max_steps=20", "checkpoint.every=4"])
    assert proc.returncode == 1, proc.stderr
    assert "bad data at step 9:" in proc.stderr and second.name in proc.stderr
    assert "the last good checkpoint is" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000004", "step-00000008"]


def test_an_interruption_that_saved_a_checkpoint_exits_130(prepared, tmp_path):
    run = tmp_path / "run"
    cmd = [str(LEANBERT), "pretrain", "--data", str(prepared), "-o", str(run),
           *[f"--set={s}" for s in [*TINY, "train.max_steps=100000", "checkpoint.every=100000", "log.every=1"]]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and '"train"' in metrics.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved, rerun to resume" in err and "Traceback" not in err
    assert "SIGINT: saved checkpoint at step" in out
    assert len(list_checkpoints(run)) == 1


def test_the_readme_documents_the_exit_codes():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Exit codes"):]
    section = section[:section.index("\n## ", 1)]
    for code in ("`0`", "`1`", "`2`", "`130`"):
        assert code in section
