"""Sweeps over learning rates and seeds, reporting the median and the best run.

Small GLUE tasks (CoLA, MRPC, STS-B, RTE) vary a lot between random restarts: BERT's
authors ran several restarts and kept the best on dev (Devlin et al. 2019, Sec. 4.1), and
later work reports the median over seeds because the best of many is optimistic. A sweep
runs every (learning rate, seed) pair into its own directory and writes ``sweep.json``
with, per learning rate, the median and best over seeds of the task's main metric, and the
best learning rate by median.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from leanbert.config import validate
from leanbert.io import atomic_write_json
from leanbert.tasks.finetune import FinetuneConfig, finetune, main_score
from leanbert.tasks.registry import TaskSpec, get_task

RunFn = Callable[[TaskSpec, str | Path, str | Path, Path, FinetuneConfig], dict[str, Any]]


def run_name(lr: float, seed: int) -> str:
    return f"lr{lr:g}_seed{seed}"


def summarize(task: TaskSpec, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and best of the main metric per learning rate, from run records
    ``{"lr", "seed", "score"}``; the best learning rate is chosen by its median."""
    by_lr: dict[float, list[dict[str, Any]]] = {}
    for r in runs:
        by_lr.setdefault(r["lr"], []).append(r)
    per_lr = []
    for lr, rs in sorted(by_lr.items()):
        scores = [r["score"] for r in rs]
        best = max(rs, key=lambda r: r["score"])
        per_lr.append({"lr": lr, "median": statistics.median(scores), "best": best["score"],
                       "best_seed": best["seed"], "min": min(scores), "seeds": len(scores)})
    best_run = max(runs, key=lambda r: r["score"])
    return {
        "metric": task.main_metric,
        "per_lr": per_lr,
        "best_lr_by_median": max(per_lr, key=lambda x: x["median"])["lr"],
        "median": statistics.median(r["score"] for r in runs),
        "best": {"lr": best_run["lr"], "seed": best_run["seed"], "score": best_run["score"], "dir": best_run["dir"]},
    }


def sweep(
    task: str | TaskSpec,
    data: str | Path,
    model_dir: str | Path,
    output: str | Path,
    cfg: FinetuneConfig,
    lrs: Sequence[float],
    seeds: Sequence[int],
    *,
    run_fn: RunFn | None = None,
) -> dict[str, Any]:
    """Fine-tune once per (lr, seed) into ``output/lr{lr}_seed{seed}`` and write
    ``output/sweep.json`` (updated after every run, so a stopped sweep keeps its results)."""
    spec = get_task(task) if isinstance(task, str) else task
    output = Path(output)
    run_fn = run_fn or finetune
    runs: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    for lr in lrs:
        for seed in seeds:
            run_cfg = validate(FinetuneConfig, {**cfg.model_dump(), "lr": lr, "seed": seed}, "sweep")
            run_dir = output / run_name(lr, seed)
            result = run_fn(spec, data, model_dir, run_dir, run_cfg)
            runs.append({"lr": float(lr), "seed": int(seed), "score": main_score(spec, result["metrics"]),
                         "metrics": result["metrics"], "best_epoch": result.get("best_epoch"), "dir": str(run_dir)})
            report = {"task": spec.name, "model": str(model_dir), "lrs": list(lrs), "seeds": list(seeds),
                      "summary": summarize(spec, runs), "runs": runs}
            atomic_write_json(output / "sweep.json", report)
    return report
