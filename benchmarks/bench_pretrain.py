"""Pretraining step speed: leanbert against transformers' BertForMaskedLM.

Same config, batch, sequence length (128), masking (15%, at most 20 predictions per
sequence) and optimiser (AdamW), timed interleaved in one run (round-robin over the
candidates, median of the rounds), for bert-small and bert-base shapes.

Candidates, in two like-for-like pairs:

- ``transformers``: BertForMaskedLM, fp32 eager, plain ``torch.optim.AdamW``, labels at every
  position (what its documentation shows).
- ``leanbert model``: the same weights through ``leanbert.from_pretrained`` with
  ``leanbert.optimize`` (oneDNN fp32 products, cheaper CPU dropout mask) and the MLM objective
  of ``leanbert pretrain`` (MLM logits and the last layer only at the masked positions), fp32
  eager, the same plain AdamW: the model alone against transformers' model alone.
- ``transformers train``: the best a transformers user has on this CPU: bf16 autocast, fused
  AdamW, and the MLM head only at the masked positions (``model.bert`` then ``model.cls`` on
  the selected rows, the public modules; transformers' own loss path computes all positions).
- ``leanbert train``: the full training path of ``leanbert pretrain`` on this device: bf16
  autocast, fused AdamW, the optimised model and the MLM objective, compact masked positions.

The headline ratio is ``leanbert train`` / ``transformers train`` (same precision, same
optimiser, compact masking on both sides). Prints a table and writes JSON (tokens/s of each,
ratios, MFU against the measured matmul peak) to benchmarks/results/pretrain.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout: provenance() records its commit
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
    lb_batch = {"input_ids": masked, "labels": labels_compact, "mlm_positions": positions}

    if kind == "transformers":
        def step():
            out = model(input_ids=masked, labels=labels_full)
            out.loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elif kind == "transformers train":
        selected = labels_full != -100

        def step():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = model.bert(input_ids=masked).last_hidden_state
                logits = model.cls(hidden[selected])
            loss = torch.nn.functional.cross_entropy(logits.float(), labels_full[selected])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        from leanbert.train.pretrain import MLMObjective

        objective = MLMObjective()
        count = objective.counts(lb_batch)["mlm"]
        precision = torch.autocast("cpu", dtype=torch.bfloat16) if kind == "leanbert train" else contextlib.nullcontext()

        def step():
            with precision:
                out = objective(model, lb_batch)
            (out["loss.mlm"] / count).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step


def run_shape(shape: str, batch: int, seq: int, rounds: int, steps: int, vocab: int) -> dict:
    import copy

    import leanbert
    from leanbert.train.metrics import measure_matmul_peak
    from leanbert.train.optim import OptimConfig, build_optimizer

    hf, lb = build(shape, vocab, seq)
    hf_train = copy.deepcopy(hf)
    leanbert.optimize(lb)
    lb_train = copy.deepcopy(lb)
    data = make_batch(batch, seq, vocab, max_pred=20)
    cands = {
        "transformers": step_fn("transformers", hf, torch.optim.AdamW(hf.parameters(), lr=1e-4), data),
        "leanbert model": step_fn("leanbert model", lb, torch.optim.AdamW(lb.parameters(), lr=1e-4), data),
        "transformers train": step_fn("transformers train", hf_train,
                                      torch.optim.AdamW(hf_train.parameters(), lr=1e-4, fused=True), data),
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
    from leanbert.models.flops import full_rows, train_flops
    from leanbert.train.pretrain import MLMObjective

    cfg = lb.config
    masked, positions, labels_compact, _ = data
    flops_lb = MLMObjective().flops(lb, {"input_ids": masked, "labels": labels_compact, "mlm_positions": positions}, None)
    flops_hf = train_flops(cfg, batch, full_rows(cfg, seq), seq)  # transformers: logits at every position
    flops_hf_train = train_flops(cfg, batch, full_rows(cfg, seq), 20)  # head at the masked positions only
    peak32 = measure_matmul_peak(torch.device("cpu"), torch.float32)
    peak16 = measure_matmul_peak(torch.device("cpu"), torch.bfloat16)
    tokens = batch * seq
    res = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        flops = {"transformers": flops_hf, "transformers train": flops_hf_train}.get(name, flops_lb)
        peak = peak16 if name.endswith("train") else peak32
        res[name] = {"step_s": med, "tokens_per_s": tokens / med, "model_flops_per_step": flops,
                     "mfu": flops / med / peak}
    ref = res["transformers"]["tokens_per_s"]
    for r in res.values():
        r["speedup_vs_transformers"] = r["tokens_per_s"] / ref
    like_for_like = {
        "model_alone_fp32": res["leanbert model"]["tokens_per_s"] / res["transformers"]["tokens_per_s"],
        "full_path_bf16_fused": res["leanbert train"]["tokens_per_s"] / res["transformers train"]["tokens_per_s"],
    }
    return {"like_for_like": like_for_like,"shape": shape, "batch": batch, "seq_len": seq, "rounds": rounds, "steps_per_round": steps,
            "peak_fp32_flops": peak32, "peak_bf16_flops": peak16, "results": res}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="leanbert bench pretrain", description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default="bert-small,bert-base")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per candidate per round")
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--output", type=Path, default=RESULTS / "pretrain.json", help="JSON output (default: %(default)s)")
    args = p.parse_args(argv)
    from leanbert.io import atomic_write_json
    from leanbert.provenance import with_provenance

    report = {"device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__, "runs": []}
    print(f"{'shape':<11} {'candidate':<19} {'step s':>8} {'tokens/s':>10} {'vs HF fp32':>10} {'MFU':>6}")
    for shape in args.shapes.split(","):
        r = run_shape(shape, args.batch, args.seq, args.rounds, args.steps, args.vocab)
        report["runs"].append(r)
        for name, v in r["results"].items():
            print(f"{shape:<11} {name:<19} {v['step_s']:>8.3f} {v['tokens_per_s']:>10,.0f} "
                  f"{v['speedup_vs_transformers']:>9.2f}x {v['mfu']:>6.1%}", flush=True)
        lfl = r["like_for_like"]
        print(f"{shape:<11} like for like: model alone fp32 {lfl['model_alone_fp32']:.2f}x, "
              f"full path bf16 + fused AdamW {lfl['full_path_bf16_fused']:.2f}x", flush=True)
    atomic_write_json(args.output, with_provenance(report, ROOT))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
