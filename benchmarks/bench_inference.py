"""Inference latency: leanbert MobileBERT against transformers' MobileBERT and leanbert BERT-base.

Batch 1, one sequence of ``--length`` tokens (128), fp32, eager mode, ``torch.inference_mode``.
Candidates, interleaved round-robin in one run (the order rotates every round, so that load
drifts on a shared machine hit all alike):

- ``transformers``: ``transformers.MobileBertModel`` (default MobileBERT config, random weights);
- ``leanbert``: the same weights through ``leanbert.from_pretrained`` and
  ``leanbert.optimize(model, for_training=False)``, what leanbert's inference paths run (the
  fast path of ``leanbert.speedups.mobilebert_inference``: NoNorm folded, products fused and
  pre-packed for oneDNN);
- ``leanbert-modules``: the plain model as ``from_pretrained`` returns it (the module graph
  that quantization and export see), to show what the speed-ups add;
- ``bert-base``: leanbert BERT-base (random weights, no heads), optimised the same way.

Reported: median and min latency per candidate and the speed-ups as medians of per-round
ratios (paired, so they are robust to slow phases). Targets: leanbert >= 1.25x transformers'
MobileBERT, and >= 3x BERT-base. The outputs of leanbert and transformers are compared too.

    python benchmarks/bench_inference.py                   # or: leanbert bench inference
    python benchmarks/bench_inference.py --rounds 40 --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"
TARGETS = {"leanbert_vs_transformers": 1.25, "leanbert_vs_bert_base": 3.0}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="leanbert bench inference", description=__doc__.split("\n\n")[0])
    p.add_argument("--length", type=int, default=128, help="sequence length (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=20, help="timed rounds, one call per candidate each")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: PyTorch's default, all cores, as users run it; "
                        "--threads 1 is steadier on a busy machine)")
    p.add_argument("--no-bert", action="store_true", help="leave BERT-base out (faster)")
    p.add_argument("--out", type=Path, default=RESULTS, help="JSON output (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def build_candidates(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Callable[[], torch.Tensor]], float]:
    import transformers

    import leanbert

    torch.manual_seed(args.seed)
    hf = transformers.MobileBertModel(transformers.MobileBertConfig()).eval()
    hf.save_pretrained(workdir / "mobilebert")
    ours = leanbert.optimize(leanbert.from_pretrained(workdir / "mobilebert"), for_training=False)
    modules = leanbert.from_pretrained(workdir / "mobilebert")
    g = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(1000, 30000, (1, args.length), generator=g)
    ids[0, 0], ids[0, -1] = 101, 102
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        max_diff = max((m(ids, mask).last_hidden_state - ref).abs().max().item() for m in (ours, modules))
    candidates = {
        "transformers": lambda: hf(input_ids=ids, attention_mask=mask).last_hidden_state,
        "leanbert": lambda: ours(ids, mask).last_hidden_state,
        "leanbert-modules": lambda: modules(ids, mask).last_hidden_state,
    }
    if not args.no_bert:
        bert = leanbert.optimize(leanbert.build_model("bert-base", heads=[]).eval(), for_training=False)
        candidates["bert-base"] = lambda: bert(ids, mask).last_hidden_state
    return candidates, max_diff


def measure(candidates: dict[str, Callable[[], torch.Tensor]], rounds: int, warmup: int) -> dict[str, list[float]]:
    names = list(candidates)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for r in range(warmup + rounds):
            order = names[r % len(names):] + names[: r % len(names)]
            for name in order:
                start = time.perf_counter()
                candidates[name]()
                elapsed = time.perf_counter() - start
                if r >= warmup:
                    times[name].append(elapsed)
    return times


def paired_ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    return statistics.median(s / f for s, f in zip(times[slow], times[fast], strict=True))


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from leanbert.io import atomic_write_json

    if args.threads is None:
        args.threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        candidates, max_diff = build_candidates(args, Path(tmp))
        times = measure(candidates, args.rounds, args.warmup)
    ratios = {
        "leanbert_vs_transformers": paired_ratio(times, "transformers", "leanbert"),
        "modules_vs_transformers": paired_ratio(times, "transformers", "leanbert-modules"),
        "leanbert_vs_modules": paired_ratio(times, "leanbert-modules", "leanbert"),
    }
    if "bert-base" in times:
        ratios["leanbert_vs_bert_base"] = paired_ratio(times, "bert-base", "leanbert")
        ratios["modules_vs_bert_base"] = paired_ratio(times, "bert-base", "leanbert-modules")
    print(f"batch 1 x {args.length} tokens, fp32 eager, {args.threads} thread(s), {args.rounds} rounds "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'candidate':<18}{'median ms':>11}{'min ms':>9}")
    for name, ts in times.items():
        print(f"{name:<18}{statistics.median(ts) * 1e3:>11.1f}{min(ts) * 1e3:>9.1f}")
    print(f"{'speed-up (median of per-round ratios)':<44}{'x':>7}  target")
    for name, value in ratios.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"  >= {target}: {'met' if value >= target else 'NOT met'}"
        print(f"  {name:<42}{value:>7.2f}{verdict}")
    print(f"max |leanbert - transformers| on the last hidden state (both leanbert paths): {max_diff:.2e}")
    atomic_write_json(args.out, {
        "benchmark": "inference",
        "settings": {"batch": 1, "length": args.length, "dtype": "float32", "mode": "eager",
                     "threads": args.threads, "rounds": args.rounds, "warmup": args.warmup},
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()[0], "torch": torch.__version__},
        "latency_ms": {n: {"median": statistics.median(ts) * 1e3, "min": min(ts) * 1e3,
                           "all": [t * 1e3 for t in ts]} for n, ts in times.items()},
        "speedups": ratios,
        "targets": {n: {"target": t, "value": ratios.get(n), "met": ratios.get(n, 0.0) >= t}
                    for n, t in TARGETS.items() if n in ratios},
        "max_abs_diff_vs_transformers": max_diff,
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
