"""Does knowledge transfer pay at small scale? MobileBERT-shaped student distilled from an
IB-BERT-shaped teacher (Sun et al., ACL 2020) against the same student pretrained from scratch
with the same compute, on a CPU.

1. A small IB-BERT-shaped teacher (inter-block 128, intra-block 256, LayerNorm, GELU, 4 layers)
   is pretrained with MLM on Project Gutenberg books (its cost is reported separately).
2. (a) ``distilled``: the MobileBERT-shaped student (inter-block 128, bottleneck 32, 4 stacked
   FFNs, NoNorm, ReLU, 4 layers) by progressive knowledge transfer (one stage per layer) and then
   pretraining distillation (``leanbert distill``).
   (b) ``scratch``: the same student pretrained with MLM from scratch for as many steps as give
   the same training FLOPs as (a), *counting the teacher's forward passes* in (a).
3. Held-out MLM loss of both against FLOPs and wall-clock; then SST-2 and MRPC fine-tuning
   (dev scores) with several seeds.

    python experiments/knowledge_transfer/run.py              # about 15 minutes on 2 cores
    python experiments/knowledge_transfer/run.py --quick      # a smoke run into the work dir

Work goes to --work (git-ignored); results.json and the figures are written next to this file.
Every stage skips what is already done, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared" / "data"


def shape(args) -> dict[str, list[str]]:
    common = [f"hidden_size={args.hidden}", f"embedding_size={args.embedding}", f"num_layers={args.layers}",
              "num_heads=4", f"max_position_embeddings={args.length}"]
    teacher = [*common, "intra_bottleneck_size=256", "key_query_shared_bottleneck=false",
               "num_feedforward_networks=1", "intermediate_size=512", "hidden_act=gelu",
               "normalization_type=layer_norm", "hidden_dropout=0.1"]
    student = [*common, "intra_bottleneck_size=32", "key_query_shared_bottleneck=true", "num_feedforward_networks=4",
               "intermediate_size=128", "hidden_act=relu", "normalization_type=no_norm", "hidden_dropout=0.0"]
    return {"teacher": teacher, "student": student}


def training(args, steps: int) -> list[str]:
    return [f"data.batch_size={args.batch}", f"data.max_predictions={round(0.15 * args.length)}",
            f"train.max_steps={steps}", "train.precision=bf16", f"eval.every={args.eval_every}", "eval.batches=20",
            "eval.batch_size=32", f"checkpoint.every={args.eval_every}", "log.every=1", "log.progress=false"]


def prepare_data(args, work: Path) -> Path:
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    books = sorted((SHARED / "pretrain" / "gutenberg" / "clean").glob("*.txt"))[: args.books]
    if not books:
        sys.exit(f"no books found under {SHARED}/pretrain/gutenberg/clean")
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        save_tokenizer(train_tokenizer(books, vocab_size=args.vocab), tok_dir)
    prepare(books, load_tokenizer(tok_dir), work / "data", {"seq_length": args.length, "validation_fraction": 0.02})
    return work / "data"


def read_curve(run: Path) -> dict:
    """Cumulative training seconds and FLOPs at each held-out evaluation of a run."""
    train, evals = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        (train if rec["kind"] == "train" else evals).append(rec)
    t_cum = f_cum = 0.0
    at = {}
    for rec in train:
        t_cum += rec["samples_per_s"] and rec["samples_per_s"] ** -1 * (rec["samples_seen"] - at.get("samples", 0))
        at["samples"] = rec["samples_seen"]
        f_cum += rec["flops_per_step"]
        at[rec["step"]] = (t_cum, f_cum)
    curve = [{"step": e["step"], "mlm_loss": e["mlm_loss"], "seconds": at[e["step"]][0], "flops": at[e["step"]][1]}
             for e in evals if e["step"] in at]
    return {"curve": curve, "train_seconds": t_cum, "train_flops": f_cum, "steps": len(train),
            "final_mlm_loss": evals[-1]["mlm_loss"] if evals else None}


def pd_phase(run: Path, start_step: int) -> tuple[float, float]:
    """(FLOPs, seconds) of the training steps after ``start_step`` (pretraining distillation)."""
    flops = seconds = 0.0
    prev = None
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["kind"] != "train":
            continue
        if rec["step"] > start_step:
            flops += rec["flops_per_step"]
            seconds += (rec["samples_seen"] - prev) / rec["samples_per_s"]
        prev = rec["samples_seen"]
    return flops, seconds


def pretrain(args, data: Path, out: Path, model: list[str], steps: int, seed: int) -> dict:
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain as run

    sets = ["model.preset=mobilebert-test", *(f"model.{m}" for m in model), *training(args, steps),
            f"optim.lr={args.lr}", f"optim.warmup_steps={max(1, steps // 10)}", f"train.seed={seed}"]
    if not (out / "model" / "config.json").is_file():
        t0 = time.perf_counter()
        run(load_pretrain_config("demo", sets), data, out)
        print(f"  {out.name}: {time.perf_counter() - t0:.0f}s", flush=True)
    return {**read_curve(out), "model_dir": str(out / "model")}


def distill(args, data: Path, teacher: Path, out: Path, seed: int, dropping: bool = False) -> dict:
    from leanbert.distill.transfer import distill as run
    from leanbert.distill.transfer import load_distill_config

    sets = ["student={preset: mobilebert-test}", *(f"student.{m}" for m in shape(args)["student"]),
            *training(args, 1), "strategy=progressive", f"transfer.steps_per_stage={args.stage_steps}",
            f"transfer.warmup_steps={max(1, args.stage_steps // 10)}", f"pretrain_distill.steps={args.pd_steps}",
            f"optim.lr={args.lr}", f"optim.warmup_steps={max(1, args.pd_steps // 10)}", "optim.name=lamb",
            f"train.seed={seed}"]
    if dropping:  # the student's middle layers drop half the tokens during pretraining distillation
        sets += ["token_dropping.method=token", f"token_dropping.keep={args.keep}"]
    if not (out / "model" / "config.json").is_file():
        t0 = time.perf_counter()
        run(load_distill_config("demo", sets), teacher, data, out)
        print(f"  {out.name}: {time.perf_counter() - t0:.0f}s", flush=True)
    return {**read_curve(out), "model_dir": str(out / "model")}


def finetune(args, model_dir: str, task: str, out: Path, seed: int) -> dict:
    from leanbert.tasks.finetune import finetune as run
    from leanbert.tasks.finetune import finetune_config
    from leanbert.tasks.registry import get_task

    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())["metrics"]["dev"]
    spec = get_task(task)
    sets = [f"seed={seed}", f"lr={args.ft_lr}", f"epochs={args.ft_epochs}", f"max_seq_length={args.length}",
            "predict_test=false", "progress=false", "precision=bf16", "tensorboard=false"]
    if task == "sst2":
        sets.append(f"train_limit={args.sst2_train}")
    data = SHARED / "glue" / {"sst2": "SST-2", "mrpc": "MRPC"}[task]
    return run(spec, data, model_dir, out, finetune_config(spec, None, sets))["metrics"]["dev"]


def plot(runs: dict[str, dict], dest: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, name, label in (("flops", "loss_vs_flops.png", "training FLOPs (distilled: student x3 + teacher forward)"),
                             ("seconds", "loss_vs_time.png", "training wall-clock (s, 2 CPU cores, bf16)")):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for variant, color in (("distilled", "tab:red"), ("scratch", "tab:blue"),
                               ("distilled + token dropping", "tab:orange")):
            for r in runs[variant]:
                pts = r["curve"]
                ax.plot([p[key] for p in pts], [p["mlm_loss"] for p in pts], color=color, marker="o", ms=3, alpha=0.85,
                        label=variant if r is runs[variant][0] else None)
        ax.set_xlabel(label)
        ax.set_ylabel("student's held-out MLM loss")
        ax.set_title("MobileBERT-shaped student: knowledge transfer vs from scratch")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(dest / name, dpi=120)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=str(HERE / "work"))
    p.add_argument("--books", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--embedding", type=int, default=64)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--teacher-steps", type=int, default=500)
    p.add_argument("--stage-steps", type=int, default=60)
    p.add_argument("--pd-steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--keep", type=float, default=0.5, help="token dropping: fraction kept in the middle layers")
    p.add_argument("--eval-every", type=int, default=60)
    p.add_argument("--seeds", default="0")
    p.add_argument("--ft-seeds", default="1,2")
    p.add_argument("--ft-lr", type=float, default=1e-4)
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--sst2-train", type=int, default=4000)
    p.add_argument("--quick", action="store_true", help="tiny sizes, results into the work dir")
    args = p.parse_args(argv)
    if args.quick:
        args.books, args.teacher_steps, args.stage_steps, args.pd_steps, args.eval_every = 1, 20, 5, 20, 10
        args.sst2_train, args.ft_epochs, args.ft_seeds = 200, 1, "1"
    if not SHARED.is_dir():
        sys.exit(f"real data not found at {SHARED}")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dest = work if args.quick else HERE
    data = prepare_data(args, work)
    print("teacher: IB-BERT-shaped, MLM pretraining", flush=True)
    teacher = pretrain(args, data, work / "teacher", shape(args)["teacher"], args.teacher_steps, 0)
    runs: dict[str, list[dict]] = {"distilled": [], "scratch": [], "distilled + token dropping": []}
    for seed in [int(s) for s in args.seeds.split(",")]:
        print(f"student, seed {seed}: distilled", flush=True)
        d = distill(args, data, Path(teacher["model_dir"]), work / f"distilled-seed{seed}", seed)
        # Scratch: the same student's MLM steps that cost the distilled run's FLOPs (teacher included).
        probe = pretrain(args, data, work / f"probe-seed{seed}", shape(args)["student"], 2, seed)
        per_step = probe["train_flops"] / probe["steps"]
        steps = max(1, math.ceil(d["train_flops"] / per_step))
        print(f"student, seed {seed}: from scratch, {steps} steps (matched FLOPs)", flush=True)
        s = pretrain(args, data, work / f"scratch-seed{seed}", shape(args)["student"], steps, seed)
        print(f"student, seed {seed}: distilled with token dropping in pretraining distillation", flush=True)
        t = distill(args, data, Path(teacher["model_dir"]), work / f"distilled-td-seed{seed}", seed, dropping=True)
        for name, r in (("distilled", d), ("scratch", s), ("distilled + token dropping", t)):
            r["seed"] = seed
            for task in ("sst2", "mrpc"):
                r[task] = [finetune(args, r["model_dir"], task, work / f"ft-{task}-{name}-seed{seed}-ft{fs}", fs)
                           for fs in [int(x) for x in args.ft_seeds.split(",")]]
            runs[name].append(r)
    summary = {}
    for name, rs in runs.items():
        row = {"final_mlm_loss": statistics.mean(r["final_mlm_loss"] for r in rs),
               "train_flops": statistics.mean(r["train_flops"] for r in rs),
               "train_seconds": statistics.mean(r["train_seconds"] for r in rs),
               "steps": statistics.mean(r["steps"] for r in rs)}
        for task, metric in (("sst2", "accuracy"), ("mrpc", "f1")):
            vals = [m[metric] for r in rs for m in r[task]]
            row[f"{task}_{metric}_mean"] = statistics.mean(vals)
            row[f"{task}_{metric}_all"] = vals
        summary[name] = row
    # Token dropping's effect on pretraining distillation: FLOPs and time of that phase alone.
    for name in ("distilled", "distilled + token dropping"):
        pd_start = args.layers * args.stage_steps
        phase = [pd_phase(Path(r["model_dir"]).parent, pd_start) for r in runs[name]]
        summary[name]["pd_flops"] = statistics.mean(f for f, _ in phase)
        summary[name]["pd_seconds"] = statistics.mean(t for _, t in phase)
    base, td = summary["distilled"], summary["distilled + token dropping"]
    summary["token_dropping_effect"] = {
        "pd_flop_saving": 1 - td["pd_flops"] / base["pd_flops"],
        "pd_time_saving": 1 - td["pd_seconds"] / base["pd_seconds"],
        "final_mlm_loss_change": td["final_mlm_loss"] - base["final_mlm_loss"],
    }
    summary["teacher"] = {"final_mlm_loss": teacher["final_mlm_loss"], "train_flops": teacher["train_flops"],
                          "train_seconds": teacher["train_seconds"], "steps": teacher["steps"]}
    from leanbert.io import atomic_write_json
    from leanbert.provenance import provenance

    atomic_write_json(dest / "results.json", {"provenance": provenance(HERE.parents[1]),
                                              "settings": vars(args), "summary": summary, "runs": runs,
                                              "teacher": teacher})
    plot(runs, dest)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
