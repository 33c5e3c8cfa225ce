"""Nothing lost, nothing left behind: outputs never replace what leanbert did not write,
temporaries of killed runs are cleaned, workers die with their parent, file-system failures
are one line, permissions follow the umask, and a failed start leaves nothing that looks valid."""

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

import leanbert
from leanbert.cli import main
from leanbert.io import atomic_write_json

LEANBERT = Path(sys.executable).with_name("leanbert")


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    model = leanbert.build_model("bert-tiny", vocab_size=97, hidden_size=32, num_heads=2, intermediate_size=64)
    return leanbert.save_pretrained(model, tmp_path / "ckpt")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------------------- outputs


def test_export_refuses_a_directory_holding_the_users_files(checkpoint, tmp_path, capsys):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    assert main(["export", str(checkpoint), "-o", str(target)]) == 2
    line = one_error_line(capsys)
    assert str(target) in line and "thesis.tex" in line and "--overwrite" in line
    assert (target / "thesis.tex").read_text() == "years of work"


def test_export_with_overwrite_replaces_it(checkpoint, tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("x")
    assert main(["export", str(checkpoint), "-o", str(target), "--overwrite"]) == 0
    assert (target / "config.json").is_file() and not (target / "notes.txt").exists()


def test_export_replaces_its_own_previous_export(checkpoint, tmp_path):
    target = tmp_path / "hf"
    assert main(["export", str(checkpoint), "-o", str(target)]) == 0
    assert main(["export", str(checkpoint), "-o", str(target)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_export_onto_a_regular_file_leaves_the_file_alone(checkpoint, tmp_path, capsys):
    target = tmp_path / "model.bin"
    target.write_bytes(b"precious")
    assert main(["export", str(checkpoint), "-o", str(target)]) == 2
    assert "is a file" in one_error_line(capsys)
    assert target.read_bytes() == b"precious"
    assert not list(tmp_path.glob(".model.bin*"))


def test_export_to_the_current_directory_is_refused(checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["export", str(checkpoint), "-o", "."]) == 2
    assert "current directory" in one_error_line(capsys)


@pytest.mark.parametrize("command", ["tokenizer", "pretrain", "finetune"])
def test_a_regular_file_as_the_output_directory_is_one_line(command, tmp_path, checkpoint, shared_file, capsys):
    out = tmp_path / "taken"
    out.write_text("x")
    text = shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens")
    argv = {
        "tokenizer": ["tokenizer", "train", str(text), "--vocab-size", "500", "--out", str(out)],
        "pretrain": ["pretrain", "--data", str(tmp_path / "missing-data"), "-o", str(out)],
        "finetune": ["finetune", "--task", "sst2", "--data", str(shared_file("glue/SST-2")), "--model",
                     str(checkpoint), "-o", str(out), "--set", "train_limit=8", "--set", "eval_limit=8"],
    }[command]
    assert main(argv) == 2
    line = one_error_line(capsys)
    assert str(out) in line and "is a file" in line
    assert out.read_text() == "x"


def test_permission_errors_become_one_line_naming_the_path(checkpoint, tmp_path, monkeypatch, capsys):
    def refuse(self, *a, **k):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "locked" / "out")]) == 2
    line = one_error_line(capsys)
    assert line.startswith("leanbert export: error: permission denied: ") and "locked" in line


# ---------------------------------------------------------------------------- debris


def test_a_writer_removes_the_temporaries_a_killed_run_left(checkpoint, tmp_path):
    stale = tmp_path / ".model.abc123.tmp"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    leanbert.save_pretrained(leanbert.from_pretrained(checkpoint), tmp_path / "model")
    assert not stale.exists() and (tmp_path / "model" / "config.json").is_file()


def test_data_prepare_removes_its_killed_token_cache_temporaries(tmp_path, shared_file):
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer

    text = shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens")
    tok = train_tokenizer(text, vocab_size=500)
    prepare(text, tok, tmp_path / "data", {"seq_length": 32}, workers=0)
    stale = tmp_path / "data" / ".cache" / "tokens" / ".0123abcd.9999.tmp"
    stale.mkdir()
    prepare(text, tok, tmp_path / "data", {"seq_length": 64}, workers=0, overwrite=True)  # same cache root
    assert not stale.exists()


# ---------------------------------------------------------------------------- processes


def _session_members(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # session id (field 6 of /proc/PID/stat)
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux") or not LEANBERT.is_file(), reason="Linux /proc and the installed program")
def test_killing_data_prepare_leaves_no_workers_behind(tmp_path, shared_file, minilm_dir):
    books = sorted(shared_file("pretrain/gutenberg/clean").glob("*.txt"))[:12]
    proc = subprocess.Popen([str(LEANBERT), "data", "prepare", *map(str, books), "--tokenizer", str(minilm_dir),
                             "--out", str(tmp_path / "data"), "--workers", "2", "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline and len(_session_members(proc.pid)) < 3:  # parent + 2 workers
        time.sleep(0.05)
    assert len(_session_members(proc.pid)) >= 3, "the workers did not start"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while time.time() < deadline and _session_members(proc.pid):
        time.sleep(0.1)
    left = _session_members(proc.pid)
    for pid in left:  # do not leave them running if the test fails
        os.kill(pid, signal.SIGKILL)
    assert left == []


# ---------------------------------------------------------------------------- permissions


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(checkpoint, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        out = leanbert.save_pretrained(leanbert.from_pretrained(checkpoint), tmp_path / "m")
        atomic_write_json(tmp_path / "manifest.json", {"a": 1})
    finally:
        os.umask(old)
    assert (out / "model.safetensors").stat().st_mode & 0o777 == mode
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == mode


def test_unreadable_weights_are_permission_denied_not_corrupt(checkpoint, monkeypatch):
    from leanbert.errors import CheckpointError

    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m: False if str(p).endswith(".safetensors") else real(p, m))
    with pytest.raises(CheckpointError, match="permission denied; ask its owner"):
        leanbert.from_pretrained(checkpoint)


# ---------------------------------------------------------------------------- failed starts


@pytest.fixture
def prepared(tmp_path, shared_file) -> Path:
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import train_tokenizer

    text = shared_file("pretrain/wikitext-2-tokens/wiki.valid.tokens")
    prepare(text, train_tokenizer(text, vocab_size=500), tmp_path / "data", {"seq_length": 32}, workers=0)
    return tmp_path / "data"


PRETRAIN = ["--set=model.preset=bert-tiny", "--set=model.max_position_embeddings=32", "--set=train.max_steps=2",
            "--set=log.progress=false", "--set=data.batch_size=4"]


def test_a_truncated_shard_fails_before_the_run_directory_exists(prepared, tmp_path, capsys):
    shard = sorted(prepared.glob("train*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert main(["pretrain", "--data", str(prepared), "-o", str(tmp_path / "run"), *PRETRAIN]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_a_tampered_manifest_fails_before_the_run_directory_exists(prepared, tmp_path):
    manifest = json.loads((prepared / "manifest.json").read_text())
    manifest["seq_length"] = "long"
    (prepared / "manifest.json").write_text(json.dumps(manifest))
    assert main(["pretrain", "--data", str(prepared), "-o", str(tmp_path / "run"), *PRETRAIN]) != 0
    assert not (tmp_path / "run").exists()


def test_data_prepare_failing_on_a_bad_file_leaves_nothing(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 10)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "caf", "au", "lait"]) + "\n")
    assert main(["data", "prepare", str(bad), "--tokenizer", str(vocab), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "UTF-8" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_resumed_run_does_not_repeat_log_records(prepared, tmp_path):
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    cfg = load_pretrain_config("demo", ["model.preset=bert-tiny", "model.max_position_embeddings=32",
                                        "train.max_steps=6", "eval.every=2", "checkpoint.every=2", "log.every=1",
                                        "log.progress=false", "log.tensorboard=false", "data.batch_size=4",
                                        "eval.batches=2"])
    pretrain(cfg, prepared, tmp_path / "run", stop_after=3)
    pretrain(cfg, prepared, tmp_path / "run")
    pretrain(cfg, prepared, tmp_path / "run")  # a rerun of the finished run adds nothing
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in records]
    assert len(keys) == len(set(keys))
    assert [s for k, s in keys if k == "eval"] == [0, 2, 4, 6]
    assert [s for k, s in keys if k == "train"] == [1, 2, 3, 4, 5, 6]
