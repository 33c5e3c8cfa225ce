"""Small-scale replication of token dropping (Hou et al., ACL 2022) on a CPU.

Same model, data, batch and number of steps for three pretraining variants:
no dropping (plain BERT), token dropping (importance from the MLM-loss score table) and
random dropping (same routing, random kept tokens), each with several seeds. For every run:
held-out MLM loss (evaluated without dropping) against wall-clock time and against analytic
FLOPs, then fine-tuning of the final checkpoint on SST-2 and MRPC (GLUE dev scores).

    python experiments/token_dropping/run.py                 # full experiment (about an hour on 2 cores)
    python experiments/token_dropping/run.py --steps 20 --seeds 0 --books 2 --quick   # smoke run

Writes runs under --work (default experiments/token_dropping/work, git-ignored) and the
committed outputs next to this file: results.json, report.md's figures (*.png).
Every stage skips work already done, so an interrupted experiment resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared" / "data"
VARIANTS = ("none", "token", "random")


def model_overrides(args) -> list[str]:
    return [
        "model.preset=bert-mini", f"model.num_layers={args.layers}", f"model.hidden_size={args.hidden}",
        f"model.num_heads={args.heads}", f"model.intermediate_size={4 * args.hidden}",
        f"model.max_position_embeddings={args.length}",
        f"data.batch_size={args.batch}", f"data.max_predictions={round(0.15 * args.length)}",
        f"train.max_steps={args.steps}", f"optim.lr={args.lr}", f"optim.warmup_steps={max(1, args.steps // 10)}",
        "train.precision=bf16", f"eval.every={args.eval_every}", "eval.batches=20", "eval.batch_size=32",
        f"checkpoint.every={args.eval_every}", "log.every=1", "log.progress=false",
    ]


def prepare_data(args, work: Path) -> Path:
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    books = sorted((SHARED / "pretrain" / "gutenberg" / "clean").glob("*.txt"))[: args.books]
    if not books:
        sys.exit(f"no books found under {SHARED}/pretrain/gutenberg/clean")
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        save_tokenizer(train_tokenizer(books, vocab_size=args.vocab), tok_dir)
    prepare(books, load_tokenizer(tok_dir), work / "data",
            {"seq_length": args.length, "validation_fraction": 0.02, "seed": 0})
    return work / "data"


def pretrain_run(args, data: Path, out: Path, variant: str, seed: int) -> dict:
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    sets = [*model_overrides(args), f"train.seed={seed}", f"token_dropping.method={variant}"]
    if variant != "none":
        sets.append(f"token_dropping.keep={args.keep}")
    cfg = load_pretrain_config("demo", sets)
    if not (out / "model" / "config.json").is_file():
        t0 = time.perf_counter()
        pretrain(cfg, data, out)
        print(f"  pretrained {out.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    train, evals = [], []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        (train if rec["kind"] == "train" else evals).append(rec)
    # Wall-clock of the training steps only (the same held-out evaluation costs every variant the same).
    step_time, flops, t_cum, f_cum = {}, {}, 0.0, 0.0
    for rec in train:
        t_cum += rec["tokens_per_s"] and (args.batch * args.length) / rec["tokens_per_s"]
        f_cum += rec["flops_per_step"]
        step_time[rec["step"]], flops[rec["step"]] = t_cum, f_cum
    curve = [{"step": e["step"], "mlm_loss": e["mlm_loss"], "seconds": step_time.get(e["step"], 0.0),
              "flops": flops.get(e["step"], 0.0)} for e in evals]
    return {"variant": variant, "seed": seed, "curve": curve, "train_seconds": t_cum, "train_flops": f_cum,
            "final_mlm_loss": evals[-1]["mlm_loss"], "model_dir": str(out / "model")}


def finetune_run(args, model_dir: str, task: str, out: Path, seed: int) -> dict:
    from leanbert.tasks.finetune import finetune, finetune_config
    from leanbert.tasks.registry import get_task

    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    spec = get_task(task)
    sets = [f"seed={seed}", f"lr={args.ft_lr}", f"epochs={args.ft_epochs}", "max_seq_length=64",
            "predict_test=false", "progress=false"]
    if task == "sst2":
        sets.append(f"train_limit={args.sst2_train}")
    cfg = finetune_config(spec, None, sets)
    data = SHARED / "glue" / {"sst2": "SST-2", "mrpc": "MRPC"}[task]
    return finetune(spec, data, model_dir, out, cfg)


def interpolate(curve: list[dict], key: str, x: float) -> float:
    """The held-out loss of ``curve`` at ``x`` (seconds or FLOPs), linearly interpolated."""
    pts = [(0.0, curve[0]["mlm_loss"])] + [(p[key], p["mlm_loss"]) for p in curve if p[key] > 0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-12)
    return pts[-1][1]


def plot(results: list[dict], path_time: Path, path_flops: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"none": "tab:blue", "token": "tab:red", "random": "tab:green"}
    for key, path, label in (("seconds", path_time, "training wall-clock (s, 2 CPU cores, bf16)"),
                             ("flops", path_flops, "training FLOPs (analytic)")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for r in results:
            xs = [p[key] for p in r["curve"]]
            ys = [p["mlm_loss"] for p in r["curve"]]
            ax.plot(xs, ys, color=colors[r["variant"]], alpha=0.85, marker="o", ms=3,
                    label=f"{r['variant']} dropping" if r["seed"] == results[0]["seed"] else None)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out MLM loss (no dropping at evaluation)")
        ax.set_title("Token dropping vs baselines")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(HERE / "work"))
    p.add_argument("--books", type=int, default=16)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--sst2-train", type=int, default=8000)
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--quick", action="store_true", help="write results to the work dir, not next to this file")
    args = p.parse_args(argv)
    if not SHARED.is_dir():
        sys.exit(f"real data not found at {SHARED}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dest = work if args.quick else HERE
    data = prepare_data(args, work)
    results = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant in args.variants.split(","):
            print(f"pretraining: {variant} dropping, seed {seed}", flush=True)
            r = pretrain_run(args, data, work / f"pretrain-{variant}-seed{seed}", variant, seed)
            if not args.no_finetune:
                for task in ("sst2", "mrpc"):
                    m = finetune_run(args, r["model_dir"], task, work / f"ft-{task}-{variant}-seed{seed}", seed)
                    r[task] = m["metrics"]["dev"]
                    print(f"  {task}: {r[task]}", flush=True)
            results.append(r)
    summary = {}
    for variant in args.variants.split(","):
        rs = [r for r in results if r["variant"] == variant]
        row = {"seeds": len(rs), "final_mlm_loss_mean": statistics.mean(r["final_mlm_loss"] for r in rs),
               "train_seconds_mean": statistics.mean(r["train_seconds"] for r in rs),
               "train_flops": rs[0]["train_flops"]}
        for task, metric in (("sst2", "accuracy"), ("mrpc", "f1")):
            vals = [r[task][metric] for r in rs if task in r]
            if vals:
                row[f"{task}_{metric}_mean"] = statistics.mean(vals)
        summary[variant] = row
    # Matched cost: the no-dropping run's held-out loss at the wall-clock time / FLOPs at which the
    # dropping run of the same seed finished (linear interpolation on its evaluation curve).
    for r in results:
        base = next((b for b in results if b["variant"] == "none" and b["seed"] == r["seed"]), None)
        if base is None or r["variant"] == "none":
            continue
        for key in ("seconds", "flops"):
            r[f"baseline_loss_at_same_{key}"] = interpolate(base["curve"], key, r["curve"][-1][key])
    for variant, row in summary.items():
        rs = [r for r in results if r["variant"] == variant and "baseline_loss_at_same_flops" in r]
        if rs:
            row["baseline_loss_at_same_seconds_mean"] = statistics.mean(r["baseline_loss_at_same_seconds"] for r in rs)
            row["baseline_loss_at_same_flops_mean"] = statistics.mean(r["baseline_loss_at_same_flops"] for r in rs)
        if "none" in summary and variant != "none":
            row["time_saving_vs_none"] = 1 - row["train_seconds_mean"] / summary["none"]["train_seconds_mean"]
            row["flop_saving_vs_none"] = 1 - row["train_flops"] / summary["none"]["train_flops"]
    report = {"settings": vars(args), "summary": summary, "runs": results}
    from leanbert.io import atomic_write_json

    atomic_write_json(dest / "results.json", report)
    plot(results, dest / "loss_vs_time.png", dest / "loss_vs_flops.png")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
