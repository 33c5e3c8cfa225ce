"""Knowledge-transfer step cost: a progressive-transfer step against its parts, in one run.

A progressive-transfer step at stage ``l`` runs the teacher (no gradients, bf16 where the CPU has
it) up to layer ``l`` and the student forward and backward up to layer ``l``, plus the transfer
losses and the optimiser step. This benchmark times, interleaved (round-robin, medians):

- ``teacher forward``: the teacher's embeddings and layers ``0..l`` as the objective runs them;
- ``student fwd+bwd``: the student's embeddings and layers ``0..l`` with a stand-in loss
  (sum of squares of layer l's output), forward and backward;
- ``transfer step``: the whole engine step of ``leanbert distill`` at that stage (objective,
  backward, LAMB step with the stage's multipliers);

and reports ``transfer step / (teacher forward + student fwd+bwd)`` (target <= 1.15: the
distillation machinery adds at most 15%), at the first, middle and last stage. Shapes:
MobileBERT and IB-BERT_LARGE with ``--layers`` layers each (default 4 of the paper's 24; the
per-layer cost is the same), batch ``--batch`` x ``--seq``.

    python benchmarks/bench_distill.py            # or: leanbert bench distill
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout: provenance() records its commit
RESULTS = Path(__file__).resolve().parent / "results" / "distill.json"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="leanbert bench distill", description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="ib-bert-large", help="teacher model preset")
    p.add_argument("--student", default="mobilebert", help="student model preset")
    p.add_argument("--layers", type=int, default=4, help="layers of both models (default: %(default)s)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--vocab", type=int, default=30522)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--target", type=float, default=1.15)
    p.add_argument("--output", type=Path, default=RESULTS, help="JSON output (default: %(default)s)")
    args = p.parse_args(argv)

    import leanbert
    from leanbert.distill.transfer import (
        DistillObjective,
        Student,
        _cpu_has_bf16,
        layer_map,
        load_distill_config,
        lr_multipliers,
        phases,
        run_encoder,
    )
    from leanbert.io import atomic_write_json
    from leanbert.provenance import with_provenance
    from leanbert.train.optim import build_optimizer

    cfg = load_distill_config("mobilebert", ["transfer.steps_per_stage=1", "pretrain_distill.steps=1"])
    torch.manual_seed(0)
    common = {"num_layers": args.layers, "vocab_size": args.vocab, "max_position_embeddings": max(512, args.seq)}
    teacher = leanbert.optimize(leanbert.build_model(args.teacher, **common).eval(), for_training=False)
    for q in teacher.parameters():
        q.requires_grad_(False)
    student = Student(leanbert.build_model(args.student, **common), teacher.config.hidden_size)
    leanbert.optimize(student)
    student.train()
    plan = phases("progressive", args.layers, cfg)
    bf16 = _cpu_has_bf16()
    objective = DistillObjective(teacher, plan, cfg, layer_map(args.layers, args.layers), teacher_autocast=bf16)
    opt = build_optimizer(student, cfg.optim, group_of=lambda n: "other")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, args.vocab, (args.batch, args.seq), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full((args.batch, 20), -100)}
    counts = objective.counts(batch)
    stages = sorted({0, args.layers // 2, args.layers - 1})
    report = {"teacher": args.teacher, "student": args.student, "layers": args.layers, "batch": args.batch,
              "seq_len": args.seq, "threads": torch.get_num_threads(), "teacher_bf16": bf16, "torch": torch.__version__,
              "target": args.target, "stages": []}
    print(f"{'stage':<7} {'teacher fwd s':>14} {'student f+b s':>14} {'step s':>8} {'step / parts':>13}")
    for layer in stages:
        phase = plan[layer]
        objective.step = phase.start
        scales = lr_multipliers(phase, args.layers, cfg.transfer)

        def teacher_forward(layer=layer):
            objective._teacher_forward(batch, layer, {layer}, heads=False)

        def student_step(layer=layer):
            outs, _ = run_encoder(student.student.encoder, batch, layer, {layer})
            outs[-1].pow(2).sum().backward()
            student.zero_grad(set_to_none=True)

        def transfer_step(scales=scales):
            out = objective(student, batch)
            loss = sum(out[f"loss.{t}"] / counts[t].clamp(min=1) for t in objective.terms)
            loss.backward()
            for group in opt.param_groups:
                group["lr"] = cfg.optim.lr * scales.get(group["name"], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        fns = {"teacher": teacher_forward, "student": student_step, "step": transfer_step}
        for fn in fns.values():
            fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["step"] / (med["teacher"] + med["student"])
        report["stages"].append({"layer": layer + 1, "teacher_forward_s": med["teacher"], "student_fwd_bwd_s": med["student"],
                                 "transfer_step_s": med["step"], "step_over_parts": ratio,
                                 "meets_target": ratio <= args.target, "all": times})
        print(f"{layer + 1:<7} {med['teacher']:>14.3f} {med['student']:>14.3f} {med['step']:>8.3f} {ratio:>12.2f}x",
              flush=True)
    atomic_write_json(args.output, with_provenance(report, ROOT))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
