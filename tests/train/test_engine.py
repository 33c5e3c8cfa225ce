"""The engine itself (leanbert.train.engine): global state restored, callbacks fed, resume."""

from __future__ import annotations

import json

import pytest
import torch

from leanbert.errors import ConfigError
from leanbert.train.callbacks import Callback


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list = []

    def on_start(self, info) -> None:
        self.events.append(("start", info.start_step, info.total_steps, info.resumed))

    def on_log(self, record) -> None:
        self.events.append(("log", record["kind"], record["step"], record.get("loss")))

    def on_checkpoint(self, path, step) -> None:
        self.events.append(("checkpoint", step))

    def on_end(self, status) -> None:
        self.events.append(("end", status))


def test_threads_and_deterministic_mode_are_restored_after_the_run(tiny_fit, tmp_path):
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    target = 1 if threads != 1 else 2
    tiny_fit(tmp_path / "run", train={"threads": target, "deterministic": not deterministic})
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_global_state_is_restored_when_the_run_fails(tiny_fit, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    from leanbert.tasks.finetune import TaskObjective

    def boom(self, model, batch, router=None):
        raise RuntimeError("objective failed")

    monkeypatch.setattr(TaskObjective, "__call__", boom)
    with pytest.raises(RuntimeError, match="objective failed"):
        tiny_fit(tmp_path / "run", train={"threads": 1 if threads != 1 else 2})
    assert torch.get_num_threads() == threads


def test_callbacks_receive_every_logged_record_and_each_checkpoint(tiny_fit, tmp_path):
    rec = Recorder()
    tiny_fit(tmp_path / "run", steps=4, callbacks=[rec])
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rec.events[0] == ("start", 0, 4, False)
    assert [e for e in rec.events if e[0] == "log"] == [("log", r["kind"], r["step"], r.get("loss")) for r in logged]
    assert [e for e in rec.events if e[0] == "checkpoint"] == [("checkpoint", 2), ("checkpoint", 4)]
    assert rec.events[-1] == ("end", "finished")


def test_a_resumed_run_tells_the_callbacks_where_it_starts(tiny_fit, tmp_path):
    tiny_fit(tmp_path / "run", steps=6, stop_after=2)
    rec = Recorder()
    result = tiny_fit(tmp_path / "run", steps=6, callbacks=[rec])
    assert rec.events[0] == ("start", 2, 6, True)
    assert [e[2] for e in rec.events if e[0] == "log"] == [3, 4, 5, 6]
    assert result.state.step == 6


def test_stopped_run_reports_interrupted_to_callbacks(tiny_fit, tmp_path):
    rec = Recorder()
    result = tiny_fit(tmp_path / "run", steps=6, stop_after=3, callbacks=[rec])
    assert result.interrupted and result.state.step == 3
    assert rec.events[-1] == ("end", "interrupted")


def test_batch_not_divisible_by_processes_and_micro_batches_is_a_config_error(tiny_fit, tmp_path):
    from leanbert.train.config import CheckpointSection, LogSection, TrainSection
    from leanbert.train.engine import Engine
    from leanbert.train.optim import OptimConfig

    with Engine(job="x", output_dir=tmp_path, train=TrainSection(), optim=OptimConfig(),
                checkpoint=CheckpointSection(), log=LogSection(), config={}) as engine:
        with pytest.raises(ConfigError, match="multiple of the micro-batch size"):
            engine.micro_batching(10, 4)
