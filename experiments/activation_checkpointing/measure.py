"""Memory and time cost of ``train.activation_checkpointing`` on a BERT-base pretraining step.

Each setting runs in its own process (so that peak memory is that setting's alone): BERT-base
with its MLM head, ``leanbert.optimize`` applied as ``leanbert pretrain`` does, the MLM
objective with the sparse last layer, AdamW; one warm-up step, then ``--steps`` timed steps (the fastest is reported: the machine is shared).
Peak memory is the process's maximum resident set size (``resource.getrusage``); what the
weights, their gradients and AdamW's two moments take (16 bytes per parameter in fp32) is
printed beside it, so the rest is activations, temporaries and the allocator's slack.

    python experiments/activation_checkpointing/measure.py [--batch 2] [--length 512] [--steps 2]
        [--precision fp32] [--output experiments/activation_checkpointing/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def one_setting(checkpointing: bool, batch: int, length: int, steps: int, precision: str) -> dict:
    import torch

    import leanbert
    from leanbert.models.base import set_activation_checkpointing
    from leanbert.train.engine import autocast
    from leanbert.train.pretrain import MLMObjective

    torch.manual_seed(0)
    model = leanbert.build_model("bert-base", max_position_embeddings=max(512, length)).train()
    leanbert.optimize(model, for_training=True)
    set_activation_checkpointing(model, checkpointing)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    g = torch.Generator().manual_seed(0)
    predictions = round(0.15 * length)
    data = {"input_ids": torch.randint(1000, 30000, (batch, length), generator=g),
            "attention_mask": torch.ones(batch, length, dtype=torch.long),
            "token_type_ids": torch.zeros(batch, length, dtype=torch.long),
            "mlm_positions": torch.stack([torch.randperm(length, generator=g)[:predictions].sort().values
                                          for _ in range(batch)]),
            "labels": torch.randint(1000, 30000, (batch, predictions), generator=g)}
    objective = MLMObjective()
    device = torch.device("cpu")
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with autocast(device, precision):
            out = objective(model, data)
        (out["loss.mlm"] / data["labels"].numel()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    params = sum(p.numel() for p in model.parameters())
    return {"activation_checkpointing": checkpointing, "step_seconds": min(times), "step_times": times,
            "peak_rss_mb": peak, "parameters": params, "weights_grads_adam_mb": params * 16 / 2**20}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per setting (after one warm-up step)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--output", type=Path, default=HERE / "results.json", help="JSON output (default: %(default)s)")
    ap.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        res = one_setting(args.child == "on", args.batch, args.length, args.steps, args.precision)
        print(json.dumps(res))
        return 0
    rows = []
    for setting in ("off", "on"):
        cmd = [sys.executable, __file__, "--child", setting, "--batch", str(args.batch), "--length",
               str(args.length), "--steps", str(args.steps), "--precision", args.precision]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    off, on = rows
    print(f"BERT-base MLM step, batch {args.batch} x {args.length}, {args.precision}, "
          f"{os.cpu_count()} CPU cores\n")
    print(f"{'activation checkpointing':<26} {'step s':>8} {'peak RSS MB':>12} {'of which weights+grads+AdamW':>29}")
    for r in rows:
        print(f"{'on' if r['activation_checkpointing'] else 'off':<26} {r['step_seconds']:8.2f} "
              f"{r['peak_rss_mb']:12.0f} {r['weights_grads_adam_mb']:29.0f}")
    summary = {"time_ratio": on["step_seconds"] / off["step_seconds"],
               "peak_rss_ratio": on["peak_rss_mb"] / off["peak_rss_mb"],
               "peak_rss_saved_mb": off["peak_rss_mb"] - on["peak_rss_mb"]}
    print(f"\non/off: time {summary['time_ratio']:.2f}x, peak RSS {summary['peak_rss_ratio']:.2f}x "
          f"({summary['peak_rss_saved_mb']:.0f} MB less)")
    import torch

    from leanbert.io import atomic_write_json
    from leanbert.provenance import with_provenance

    atomic_write_json(args.output, with_provenance({
        "experiment": "activation_checkpointing", "batch": args.batch, "length": args.length,
        "precision": args.precision, "steps": args.steps, "rows": rows, "summary": summary,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
    }, HERE.parents[1]))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
