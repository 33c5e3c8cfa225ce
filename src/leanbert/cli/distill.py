"""`leanbert distill`: MobileBERT knowledge transfer from its teacher (Sun et al. 2020)."""

from __future__ import annotations

import argparse

from leanbert.cli._common import add_set_option


def register(sub) -> None:
    p = sub.add_parser(
        "distill",
        help="MobileBERT knowledge transfer from its teacher",
        description=(
            "Distil a MobileBERT-shaped student from a teacher checkpoint (an IB-BERT pretrained with "
            "'leanbert pretrain --config ... --set model.preset=ib-bert-large', or any BERT through a "
            "learned projection) on shards made by 'leanbert data prepare': layer-wise feature-map and "
            "attention transfer (progressive, auxiliary or joint), then pretraining distillation. "
            "Running the same command on the same --output resumes; SIGINT/SIGTERM save a checkpoint."
        ),
    )
    p.add_argument("--teacher", required=True, help="teacher checkpoint directory (leanbert or transformers)")
    p.add_argument("--student", default=None, help="student model preset or YAML file (default: the config's)")
    p.add_argument("--data", required=True, help="directory written by 'leanbert data prepare'")
    p.add_argument("--output", "-o", required=True, help="run directory (checkpoints, metrics, final model)")
    p.add_argument("--strategy", choices=["progressive", "auxiliary", "joint"], default=None,
                   help="knowledge-transfer strategy (default: the config's, progressive)")
    p.add_argument("--config", "-c", default="mobilebert", help="distillation preset (mobilebert, demo) or YAML file")
    add_set_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leanbert.distill.transfer import distill, load_distill_config

    overrides = list(args.overrides)
    if args.student is not None:
        overrides.append(f"student={{preset: {args.student}}}")
    if args.strategy is not None:
        overrides.append(f"strategy={args.strategy}")
    cfg = load_distill_config(args.config, overrides)
    result = distill(cfg, args.teacher, args.data, args.output)
    if result.eval_after:
        print(f"held-out MLM loss of the student: {result.eval_after['mlm_loss']:.4f}")
    print(f"distilled model: {result.model_dir} ({result.steps} steps); metrics: {result.output_dir / 'metrics.jsonl'}")
    return 0
