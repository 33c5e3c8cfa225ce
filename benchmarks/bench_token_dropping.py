"""Token dropping: measured training-step time saving against the analytic FLOP saving.

A 12-layer encoder (bert-mini width: hidden 256, 4 heads, FFN 1024, BERT vocabulary) takes
full training steps (forward, backward, fused AdamW step) with and without token dropping
(half the tokens kept, reference drop layers), interleaved in one run (drop/full, then
full/drop, ...) so that machine load drifts hit both alike. The dropping step includes
everything token dropping adds: choosing the kept tokens, the gathers and the scatter in
the encoder, and the score update.

Reported per shape: median step times, measured saving ``1 - t_drop / t_full``, the analytic
training-FLOP saving (SPEC Sec. 5, MLM head included, it is not dropped) and their quotient.
Target: quotient >= 0.9. ``paired`` is the median of the per-pair savings, a second view
that is less sensitive to load changes between the two halves of the run; ``CPU-time`` is
the saving in process CPU time, which on a shared machine is immune to waiting for a core
(use it with ``--threads 1``). The quotient and the target use the wall-clock medians.

    python benchmarks/bench_token_dropping.py            # or: leanbert bench token-dropping
    python benchmarks/bench_token_dropping.py --shapes 8x512 --pairs 10
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

import leanbert
from leanbert.algorithms.token_dropping import TokenDropping
from leanbert.io import atomic_write_json
from leanbert.provenance import with_provenance
from leanbert.train.pretrain import MLMObjective

ROOT = Path(__file__).resolve().parents[1]  # the checkout: provenance() records its commit
RESULTS = Path(__file__).resolve().parent / "results" / "token_dropping.json"
CLS, SEP, MASK, FIRST_WORD = 101, 102, 103, 999


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="leanbert bench token-dropping", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="8x512,32x128", help="comma-separated BATCHxLENGTH (default: %(default)s)")
    p.add_argument("--preset", default=None,
                   help="model preset instead of --layers/--hidden/... (e.g. mobilebert, mobilebert-tiny)")
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=None, help="FFN width (default 4 x hidden)")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--keep", type=float, default=0.5, help="fraction of tokens kept (default: %(default)s)")
    p.add_argument("--mask-prob", type=float, default=0.15, help="MLM predictions per token (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=6, help="timed (drop, full) step pairs per shape")
    p.add_argument("--warmup", type=int, default=1, help="untimed pairs first")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--target", type=float, default=0.9, help="required measured/FLOP saving quotient")
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON output (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def make_batches(n: int, batch: int, seq_len: int, vocab: int, mask_prob: float, device: str,
                 gen: torch.Generator) -> list[dict[str, torch.Tensor]]:
    """Full-length sequences with BERT-style masking and a compact list of prediction slots."""
    num_pred = max(1, round(mask_prob * seq_len))
    out = []
    for _ in range(n):
        ids = torch.randint(FIRST_WORD, vocab, (batch, seq_len), generator=gen)
        ids[:, 0], ids[:, -1] = CLS, SEP
        positions = torch.stack([torch.randperm(seq_len - 2, generator=gen)[:num_pred] + 1
                                 for _ in range(batch)]).sort(dim=1).values
        labels = ids.gather(1, positions)
        r = torch.rand(batch, num_pred, generator=gen)
        replaced = torch.where(r < 0.8, torch.full_like(labels, MASK),
                               torch.where(r < 0.9, torch.randint(FIRST_WORD, vocab, labels.shape, generator=gen), labels))
        ids.scatter_(1, positions, replaced)
        b = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels, "mlm_positions": positions}
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def model_config(args: argparse.Namespace, seq_len: int) -> dict[str, Any]:
    """The benchmarked model: a preset (any family) or a BERT of the given shape."""
    if args.preset:
        from leanbert.config import load_preset

        return {**load_preset("models", args.preset), "vocab_size": args.vocab,
                "max_position_embeddings": max(512, seq_len), "heads": ["mlm"]}
    return {"model_type": "bert", "vocab_size": args.vocab, "hidden_size": args.hidden,
            "num_layers": args.layers, "num_heads": args.heads,
            "intermediate_size": args.intermediate or 4 * args.hidden,
            "max_position_embeddings": max(512, seq_len), "heads": ["mlm"]}


def bench_shape(args: argparse.Namespace, batch: int, seq_len: int) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = leanbert.optimize(leanbert.build_model(model_config(args, seq_len)).to(args.device).train())
    objective = MLMObjective()  # the trainer's MLM loss: last layer only at the predictions
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)
    td = TokenDropping({"method": "token", "keep": args.keep}, model.config, device=args.device)
    gen = torch.Generator().manual_seed(args.seed)
    batches = make_batches(4, batch, seq_len, args.vocab, args.mask_prob, args.device, gen)
    num_pred = batches[0]["labels"].shape[1]
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def step(i: int, drop: bool) -> tuple[float, float]:
        b = batches[i % len(batches)]
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        router = td.router_for(b, i) if drop else None
        out = objective(model, b, router)
        (out["loss.mlm"] / objective.counts(b)["mlm"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if drop:
            td.update_scores(SimpleNamespace(**out))
        sync()
        return time.perf_counter() - t0, time.process_time() - c0

    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    for i in range(args.warmup + args.pairs):
        order = (True, False) if i % 2 == 0 else (False, True)
        pair = {drop: step(i, drop) for drop in order}
        if i >= args.warmup:
            for drop, (t, c) in pair.items():
                times[drop].append(t)
                cpu[drop].append(c)

    t_drop, t_full = statistics.median(times[True]), statistics.median(times[False])
    cpu_saving = 1 - statistics.median(cpu[True]) / statistics.median(cpu[False])
    # Both runs take the last layer at the predictions only (the objective counts it).
    f_full = objective.flops(model, batches[0], None)
    f_drop = objective.flops(model, batches[0], td.layer_rows(seq_len, 0))
    measured = 1 - t_drop / t_full
    predicted = 1 - f_drop / f_full
    paired = statistics.median(1 - d / f for d, f in zip(times[True], times[False], strict=True))
    return {
        "shape": f"{batch}x{seq_len}",
        "batch_size": batch,
        "seq_len": seq_len,
        "kept_tokens": td.plan(seq_len).keep,
        "drop_layers": [td.start, td.end],
        "num_predictions": num_pred,
        "step_s_full": t_full,
        "step_s_drop": t_drop,
        "step_s_full_all": times[False],
        "step_s_drop_all": times[True],
        "measured_saving": measured,
        "measured_saving_paired_median": paired,
        # Process CPU time: immune to waiting for a busy CPU, meaningful with 1 thread
        # (with more, OpenMP threads spinning at barriers add to it).
        "cpu_s_full_all": cpu[False],
        "cpu_s_drop_all": cpu[True],
        "cpu_time_saving": cpu_saving,
        "flop_saving": predicted,
        "quotient": measured / predicted,
        "meets_target": measured / predicted >= args.target,
        "train_gflop_full": f_full / 1e9,
        "train_gflop_drop": f_drop / 1e9,
        "achieved_gflops_full": f_full / t_full / 1e9,
        "achieved_gflops_drop": f_drop / t_drop / 1e9,
    }


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [tuple(int(x) for x in s.lower().split("x")) for s in args.shapes.split(",") if s]
    rows = []
    model_desc = f"preset {args.preset}" if args.preset else f"{args.layers} layers, hidden {args.hidden}"
    print(f"token dropping: {model_desc}, keep {args.keep}, "
          f"device {args.device}, {torch.get_num_threads()} threads, {args.pairs} timed pairs")
    print(f"{'shape':>8} {'full ms':>9} {'drop ms':>9} {'measured':>9} {'paired':>7} {'CPU-time':>8} "
          f"{'FLOPs':>7} {'quotient':>9}  target")
    for batch, seq_len in shapes:
        r = bench_shape(args, batch, seq_len)
        rows.append(r)
        print(f"{r['shape']:>8} {1e3 * r['step_s_full']:9.1f} {1e3 * r['step_s_drop']:9.1f} "
              f"{r['measured_saving']:9.1%} {r['measured_saving_paired_median']:7.1%} {r['cpu_time_saving']:8.1%} "
              f"{r['flop_saving']:7.1%} {r['quotient']:9.2f}  "
              f"{'met' if r['meets_target'] else 'MISSED'} (>= {args.target})", flush=True)
    result = {
        "benchmark": "token_dropping",
        "description": "training step (fwd+bwd+fused AdamW) with vs without token dropping, interleaved",
        "model": model_config(args, max(s for _, s in shapes)),
        "keep": args.keep,
        "target_quotient": args.target,
        "environment": {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
                        "cpu_count": os.cpu_count(), "platform": platform.platform(),
                        "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "results": rows,
        "all_met": all(r["meets_target"] for r in rows),
    }
    atomic_write_json(args.output, with_provenance(result, ROOT))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
