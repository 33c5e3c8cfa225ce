"""Training callbacks: W&B offline and the MLflow file store, read back from what they wrote.

No network: W&B runs in offline mode and MLflow writes a local file store, both under
tmp_path, with HOME pointed into tmp_path too so that a write outside the run is noticed.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from leanbert.errors import ConfigError
from leanbert.train.callbacks import (
    Callback,
    MLflowCallback,
    RunInfo,
    WandbCallback,
    make_callbacks,
)

CONFIG = {
    "model": {"preset": "bert-small", "hidden_size": 256},
    "optim": {"lr": 1e-3, "betas": [0.9, 0.999]},
    "train": {"max_steps": 6, "seed": 0},
    "log": {"callbacks": ["wandb", "mlflow"], "empty": {}},
    "note": "x" * 7000,
}


def train_record(step: int) -> dict:
    return {"kind": "train", "step": step, "loss": 10.0 / step, "lr": 1e-3 * step, "grad_norm": None, "phase": "warmup"}


def eval_record(step: int) -> dict:
    return {"kind": "eval", "step": step, "loss": 20.0 / step, "perplexity": 100 + step}


def run_info(out: Path, *, resumed: bool = False, start_step: int = 0) -> RunInfo:
    return RunInfo(output_dir=out, job="pretrain", config=CONFIG, start_step=start_step, total_steps=6, resumed=resumed)


def drive(cb: Callback, info: RunInfo, steps, status: str = "finished") -> None:
    cb.on_start(info)
    for step in steps:
        cb.on_log(train_record(step))
        cb.on_log(eval_record(step))
    cb.on_end(status)


@pytest.fixture
def clean_env(tmp_path, monkeypatch) -> Path:
    """HOME inside tmp_path, no XDG / WANDB_* / MLFLOW_* variables; all restored afterwards
    (including the ones the callbacks set for the process)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in [k for k in os.environ if k.startswith(("WANDB_", "MLFLOW_", "XDG_"))]:
        monkeypatch.delenv(var)
    for var in ("WANDB_SILENT", "WANDB_ERROR_REPORTING", "MLFLOW_DISABLE_TELEMETRY", "MLFLOW_ALLOW_FILE_STORE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def wandb(clean_env):
    wandb = pytest.importorskip("wandb")
    yield wandb
    wandb.teardown()  # on_end does this already; here in case a test fails before on_end


@pytest.fixture
def mlflow(clean_env):
    return pytest.importorskip("mlflow")


# ----------------------------------------------------------------------------- reading W&B


def wandb_records(path: Path):
    """The protobuf records of a ``.wandb`` transaction log (LevelDB log format: 7-byte file
    header, 32 KiB blocks, records of crc32 (seeded with the type byte) + length + type + data,
    split into FIRST / MIDDLE / LAST pieces across blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:7] == struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
    pos, pieces = 7, b""
    while True:
        if 32768 - pos % 32768 < 7:  # block trailer: zero padding
            pos += 32768 - pos % 32768
        if pos + 7 > len(data):
            return
        crc, length, kind = struct.unpack_from("<IHB", data, pos)
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        assert crc == zlib.crc32(chunk, zlib.crc32(bytes([kind]))), "corrupt .wandb record"
        pieces += chunk
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def wandb_files(root: Path) -> list[Path]:
    return sorted(root.glob("wandb/offline-run-*/run-*.wandb"))


def wandb_history(path: Path) -> dict[int, dict[str, object]]:
    """step -> {metric key: value} of one run file, without W&B's own ``_`` keys."""
    history: dict[int, dict[str, object]] = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "history":
            row = history.setdefault(record.history.step.num, {})
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    row[key] = json.loads(item.value_json)
    return history


def wandb_one(path: Path, kind: str):
    found = [getattr(r, kind) for r in wandb_records(path) if r.WhichOneof("record_type") == kind]
    assert found, f"no {kind} record in {path}"
    return found[-1]


# ----------------------------------------------------------------------------- W&B


def test_wandb_offline_logs_every_numeric_value_at_its_step(wandb, tmp_path):
    out = tmp_path / "run"
    drive(WandbCallback(), run_info(out), [1, 2, 3])
    (path,) = wandb_files(out)
    history = wandb_history(path)
    assert sorted(history) == [1, 2, 3]
    for step in (1, 2, 3):
        assert history[step] == {
            "train/loss": pytest.approx(10.0 / step),
            "train/lr": pytest.approx(1e-3 * step),
            "eval/loss": pytest.approx(20.0 / step),
            "eval/perplexity": 100 + step,
        }  # "phase" (a string) and "grad_norm" (None) are not logged


def test_wandb_offline_run_has_config_and_exit_code(wandb, tmp_path):
    out = tmp_path / "run"
    drive(WandbCallback(project="proj"), run_info(out), [1], status="failed")
    (path,) = wandb_files(out)
    run = wandb_one(path, "run")
    assert run.project == "proj"
    assert run.run_id == (out / "wandb_run_id.txt").read_text().strip()
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["optim"] == {"lr": 1e-3, "betas": [0.9, 0.999]}
    assert wandb_one(path, "exit").exit_code == 1


def test_wandb_offline_writes_nothing_outside_its_dir(wandb, tmp_path, clean_env):
    out = tmp_path / "run"
    drive(WandbCallback(), run_info(out), [1, 2])
    assert [p for p in clean_env.rglob("*")] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "run"]
    assert wandb_files(out)


def test_wandb_resume_continues_the_same_run_id(wandb, tmp_path):
    out = tmp_path / "run"
    drive(WandbCallback(), run_info(out), [1, 2], status="interrupted")
    run_id = (out / "wandb_run_id.txt").read_text().strip()
    second = WandbCallback()
    drive(second, run_info(out, resumed=True, start_step=2), [3, 4])
    assert second.run_id == run_id
    assert (out / "wandb_run_id.txt").read_text().strip() == run_id
    first_file, second_file = wandb_files(out)  # offline: one folder per session, same id
    assert [wandb_one(p, "run").run_id for p in (first_file, second_file)] == [run_id, run_id]
    assert sorted(wandb_history(first_file)) == [1, 2]
    assert sorted(wandb_history(second_file)) == [3, 4]
    assert [wandb_one(p, "exit").exit_code for p in (first_file, second_file)] == [130, 0]


def helper_processes() -> list[str]:
    """Command lines of this process's wandb helpers (wandb-core, wandb-symon)."""
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid() and "wandb" in cmdline:
            found.append(cmdline)
    return found


def test_wandb_end_leaves_no_helper_process(wandb, tmp_path):
    cb = WandbCallback()
    cb.on_start(run_info(tmp_path / "run"))
    assert helper_processes()  # wandb-core runs while the run is open
    cb.on_end("finished")
    assert helper_processes() == []


def test_wandb_end_keeps_another_open_run_working(wandb, tmp_path):
    mine = wandb.init(project="user", dir=str(tmp_path), mode="offline", settings=wandb.Settings(silent=True))
    drive(WandbCallback(), run_info(tmp_path / "run"), [1])
    mine.log({"x": 1.0}, step=7)
    mine.finish()
    wandb.teardown()
    (path,) = [p for p in tmp_path.glob("wandb/offline-run-*/run-*.wandb")]
    assert wandb_history(path) == {7: {"x": 1.0}}


def test_wandb_fresh_start_gets_a_new_run_id(wandb, tmp_path):
    out = tmp_path / "run"
    first, second = WandbCallback(), WandbCallback()
    drive(first, run_info(out), [1])
    drive(second, run_info(out, resumed=False), [1])
    assert first.run_id != second.run_id
    assert (out / "wandb_run_id.txt").read_text().strip() == second.run_id


def test_wandb_checkpoint_goes_to_the_summary(wandb, tmp_path):
    out = tmp_path / "run"
    cb = WandbCallback()
    cb.on_start(run_info(out))
    cb.on_log(train_record(5))
    cb.on_checkpoint(out / "checkpoints" / "step-5", 5)
    cb.on_end("finished")
    (path,) = wandb_files(out)
    summary: dict[str, object] = {}
    for record in wandb_records(path):
        if record.WhichOneof("record_type") == "summary":
            for item in record.summary.update:
                summary[item.key or "/".join(item.nested_key)] = json.loads(item.value_json)
    assert summary["checkpoint/step"] == 5
    assert summary["checkpoint/path"] == str(out / "checkpoints" / "step-5")


def test_wandb_rejects_an_unknown_mode(clean_env):
    with pytest.raises(ConfigError, match="offline"):
        WandbCallback(mode="ofline")


# ----------------------------------------------------------------------------- MLflow


def mlflow_client(out: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient((out.resolve() / "mlruns").as_uri())


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_mlflow_file_store_logs_metrics_at_their_steps(mlflow, tmp_path):
    out = tmp_path / "run"
    cb = MLflowCallback()
    drive(cb, run_info(out), [1, 2, 3])
    client = mlflow_client(out)
    assert history(client, cb.run_id, "train/loss") == [(1, 10.0), (2, 5.0), (3, pytest.approx(10 / 3))]
    assert history(client, cb.run_id, "eval/perplexity") == [(1, 101.0), (2, 102.0), (3, 103.0)]
    assert set(client.get_run(cb.run_id).data.metrics) == {"train/loss", "train/lr", "eval/loss", "eval/perplexity"}


def test_mlflow_params_are_the_flattened_config(mlflow, tmp_path):
    out = tmp_path / "run"
    cb = MLflowCallback()
    drive(cb, run_info(out), [1])
    params = mlflow_client(out).get_run(cb.run_id).data.params
    assert params["optim.lr"] == "0.001"
    assert params["model.preset"] == "bert-small"
    assert json.loads(params["optim.betas"]) == [0.9, 0.999]
    assert len(params["note"]) == 6000  # MLflow's limit; longer values are cut
    assert "log.empty" not in params


def test_mlflow_run_ends_finished_in_the_named_experiment(mlflow, tmp_path):
    out = tmp_path / "run"
    cb = MLflowCallback(experiment="exp", run_name="first")
    drive(cb, run_info(out), [1])
    client = mlflow_client(out)
    run = client.get_run(cb.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert client.get_experiment(run.info.experiment_id).name == "exp"
    assert run.data.tags["leanbert.job"] == "pretrain"


def test_mlflow_failed_run_ends_failed(mlflow, tmp_path):
    out = tmp_path / "run"
    cb = MLflowCallback()
    drive(cb, run_info(out), [1], status="failed")
    assert mlflow_client(out).get_run(cb.run_id).info.status == "FAILED"


def test_mlflow_resume_continues_the_same_run(mlflow, tmp_path):
    out = tmp_path / "run"
    first = MLflowCallback()
    drive(first, run_info(out), [1, 2], status="interrupted")
    client = mlflow_client(out)
    assert client.get_run(first.run_id).info.status == "KILLED"
    second = MLflowCallback()
    drive(second, run_info(out, resumed=True, start_step=2), [3, 4])
    assert second.run_id == first.run_id
    assert (out / "mlflow_run_id.txt").read_text().strip() == first.run_id
    assert [s for s, _ in history(client, first.run_id, "train/loss")] == [1, 2, 3, 4]
    assert client.get_run(first.run_id).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(first.run_id).info.experiment_id])) == 1


def test_mlflow_checkpoint_goes_to_a_tag(mlflow, tmp_path):
    out = tmp_path / "run"
    cb = MLflowCallback()
    cb.on_start(run_info(out))
    cb.on_checkpoint(out / "checkpoints" / "step-5", 5)
    cb.on_end("finished")
    tags = mlflow_client(out).get_run(cb.run_id).data.tags
    assert tags["leanbert.checkpoint"] == str(out / "checkpoints" / "step-5")


def test_mlflow_writes_nothing_outside_the_output_dir(mlflow, tmp_path, clean_env):
    out = tmp_path / "run"
    drive(MLflowCallback(), run_info(out), [1])
    assert [p for p in clean_env.rglob("*")] == []
    assert sorted(p.name for p in out.iterdir()) == ["mlflow_run_id.txt", "mlruns"]


# ----------------------------------------------------------------------------- errors, factory


@pytest.mark.parametrize(("name", "cls"), [("wandb", WandbCallback), ("mlflow", MLflowCallback)])
def test_missing_package_is_a_config_error_naming_the_extra(clean_env, monkeypatch, name, cls):
    monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail as if not installed
    with pytest.raises(ConfigError, match=rf"{name} is not installed; pip install 'leanbert\[{name}\]'"):
        cls()


def test_make_callbacks_rejects_an_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown callback 'wandbb'.*did you mean 'wandb'.*allowed: 'wandb', 'mlflow'"):
        make_callbacks(["wandbb"], tmp_path)


def test_make_callbacks_rejects_a_repeated_name(tmp_path):
    with pytest.raises(ConfigError, match="'mlflow' is listed twice"):
        make_callbacks(["mlflow", "MLflow"], tmp_path)


def test_make_callbacks_builds_the_named_callbacks_in_order(wandb, mlflow, tmp_path):
    made = make_callbacks(["mlflow", "wandb"], tmp_path, wandb_project="p", mlflow_experiment="e")
    assert [type(c) for c in made] == [MLflowCallback, WandbCallback]
    assert made[0].tracking_uri == (tmp_path.resolve() / "mlruns").as_uri()
    assert made[0].experiment == "e"
    assert (made[1].project, made[1].mode, made[1].dir) == ("p", "offline", tmp_path)
    assert make_callbacks([], tmp_path) == []


def test_importing_the_module_imports_no_tracker():
    code = "import sys, leanbert.train.callbacks; print(sorted({'wandb', 'mlflow'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- through the engine


def test_engine_feeds_wandb_offline_and_mlflow_file_store_the_logged_metrics(wandb, mlflow, tiny_fit, tmp_path):
    out = tmp_path / "run"
    tiny_fit(out, steps=3, log={"callbacks": ["wandb", "mlflow"]})
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in logged if r["kind"] == "train"}
    assert sorted(losses) == [1, 2, 3]
    (path,) = wandb_files(out)
    history = wandb_history(path)
    assert {step: row["train/loss"] for step, row in history.items()} == pytest.approx(losses)
    client = mlflow.tracking.MlflowClient(f"file://{out / 'mlruns'}")
    run_id = (out / "mlflow_run_id.txt").read_text().strip()
    got = {m.step: m.value for m in client.get_metric_history(run_id, "train/loss")}
    assert got == pytest.approx(losses)
