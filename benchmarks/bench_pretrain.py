"""Pretraining step speed: leanbert against transformers' BertForMaskedLM.

Same config, batch, sequence length (128), masking (15%, at most 20 predictions per
sequence) and optimiser (AdamW), timed interleaved in one run (round-robin over the
candidates, median of the rounds), for bert-small and bert-base shapes.

Candidates:
- ``transformers``: BertForMaskedLM, fp32 eager, torch.optim.AdamW (the reference).
- ``leanbert model``: the model as ``leanbert.from_pretrained`` returns it, fp32 eager, the same
  plain torch.optim.AdamW (the model alone: MLM logits and the last layer only at the masked
  positions, oneDNN fp32 matrix products, a cheaper CPU dropout mask).
- ``leanbert train``: the full training path of ``leanbert pretrain`` on this device: bf16
  autocast, fused AdamW, compact masked positions.

Prints a table and writes JSON (tokens/s of each, ratios to transformers, MFU against the
measured matmul peak) to benchmarks/results/pretrain.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHAPES = {
    "bert-small": dict(hidden_size=512, num_layers=4, num_heads=8, intermediate_size=2048),
    "bert-base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
}


def make_batch(batch: int, seq: int, vocab: int, max_pred: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    positions = torch.stack([torch.randperm(seq - 2, generator=g)[:max_pred] + 1 for _ in range(batch)]).sort(1).values
    labels_compact = torch.gather(ids, 1, positions)
    labels_full = torch.full_like(ids, -100)
    labels_full.scatter_(1, positions, labels_compact)
    masked = ids.clone()
    masked.scatter_(1, positions, 103)
    return masked, positions, labels_compact, labels_full


def build(shape: str, vocab: int, seq: int):
    import transformers

    import leanbert

    s = SHAPES[shape]
    hf_cfg = transformers.BertConfig(vocab_size=vocab, hidden_size=s["hidden_size"], num_hidden_layers=s["num_layers"],
                                     num_attention_heads=s["num_heads"], intermediate_size=s["intermediate_size"],
                                     max_position_embeddings=max(512, seq))
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_cfg).train()
    # leanbert with the same weights, loaded the way users load transformers checkpoints.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        lb = leanbert.from_pretrained(d).train()
    return hf, lb


def step_fn(kind: str, model, opt, batch):
    masked, positions, labels_compact, labels_full = batch

    if kind == "transformers":
        def step():
            out = model(input_ids=masked, labels=labels_full)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif kind == "leanbert model":
        def step():
            out = model(masked, labels=labels_compact, mlm_positions=positions)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(masked, labels=labels_compact, mlm_positions=positions)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step


def run_shape(shape: str, batch: int, seq: int, rounds: int, steps: int, vocab: int) -> dict:
    import copy

    from leanbert.train.metrics import measure_matmul_peak
    from leanbert.train.optim import OptimConfig, build_optimizer

    hf, lb = build(shape, vocab, seq)
    lb_train = copy.deepcopy(lb)
    data = make_batch(batch, seq, vocab, max_pred=20)
    cands = {
        "transformers": step_fn("transformers", hf, torch.optim.AdamW(hf.parameters(), lr=1e-4), data),
        "leanbert model": step_fn("leanbert model", lb, torch.optim.AdamW(lb.parameters(), lr=1e-4), data),
        "leanbert train": step_fn("leanbert train", lb_train, build_optimizer(lb_train, OptimConfig(lr=1e-4)), data),
    }
    for fn in cands.values():  # warm-up
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(rounds):
        for name, fn in cands.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append((time.perf_counter() - t0) / steps)
    from leanbert.train.flops import train_step_flops

    cfg = lb.config
    flops_lb = train_step_flops(cfg, batch, seq, 20, last_layer_rows=lb.last_layer_rows(20))
    flops_hf = train_step_flops(cfg, batch, seq, seq)  # transformers computes logits at every position
    peak32 = measure_matmul_peak(torch.device("cpu"), torch.float32)
    peak16 = measure_matmul_peak(torch.device("cpu"), torch.bfloat16)
    tokens = batch * seq
    res = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        flops = flops_hf if name == "transformers" else flops_lb
        peak = peak16 if name == "leanbert train" else peak32
        res[name] = {"step_s": med, "tokens_per_s": tokens / med, "model_flops_per_step": flops,
                     "mfu": flops / med / peak}
    ref = res["transformers"]["tokens_per_s"]
    for r in res.values():
        r["speedup_vs_transformers"] = r["tokens_per_s"] / ref
    return {"shape": shape, "batch": batch, "seq_len": seq, "rounds": rounds, "steps_per_round": steps,
            "peak_fp32_flops": peak32, "peak_bf16_flops": peak16, "results": res}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="leanbert bench pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="bert-small,bert-base")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per candidate per round")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--output", default=str(RESULTS / "pretrain.json"))
    args = p.parse_args(argv)
    from leanbert.io import atomic_write_json

    report = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__, "runs": []}
    print(f"{'shape':<11} {'candidate':<15} {'step s':>8} {'tokens/s':>10} {'vs HF':>7} {'MFU':>6}")
    for shape in args.shapes.split(","):
        r = run_shape(shape, args.batch, args.seq, args.rounds, args.steps, args.vocab)
        report["runs"].append(r)
        for name, v in r["results"].items():
            print(f"{shape:<11} {name:<15} {v['step_s']:>8.3f} {v['tokens_per_s']:>10,.0f} "
                  f"{v['speedup_vs_transformers']:>6.2f}x {v['mfu']:>6.1%}", flush=True)
    atomic_write_json(args.output, report)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
