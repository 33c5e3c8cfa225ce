"""`leanbert pretrain`: MLM pretraining (with token dropping) on prepared shards."""

from __future__ import annotations

import argparse

from leanbert.cli._common import add_set_option


def register(sub) -> None:
    p = sub.add_parser(
        "pretrain",
        help="MLM pretraining (plus NSP/SOP for paired data), optionally with token dropping",
        description=(
            "Pretrain an encoder on shards made by 'leanbert data prepare'. Running the same "
            "command on the same --output resumes from the last checkpoint. SIGINT/SIGTERM save "
            "a checkpoint and exit 130. Multi-process: torchrun --nproc_per_node N -m leanbert pretrain ... "
            "With --init DIR the run continues pretraining a leanbert or transformers checkpoint "
            "(domain adaptation; a second phase at a longer length, position embeddings extended): "
            "the model comes from DIR (the config's model section is not used; --set model.KEY=VALUE "
            "may change dropout and max_position_embeddings, any other key must agree with DIR), "
            "missing heads are initialised, the optimiser and schedule start fresh, and the data "
            "must be tokenised with DIR's vocabulary. An --output holding checkpoints resumes from them."
        ),
    )
    p.add_argument("--config", "-c", default="demo",
                   help="pretraining preset (demo, bert-base, bert-base-token-dropping) or YAML file")
    p.add_argument("--data", required=True, help="directory written by 'leanbert data prepare'")
    p.add_argument("--output", "-o", required=True, help="run directory (checkpoints, metrics, final model)")
    p.add_argument("--init", metavar="DIR", default=None,
                   help="start from this checkpoint's weights (leanbert or transformers save_pretrained directory)")
    add_set_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    cfg = load_pretrain_config(args.config, args.overrides, init=args.init)
    result = pretrain(cfg, args.data, args.output)
    if result.eval_before and result.eval_after:
        print(f"held-out MLM loss: {result.eval_before['mlm_loss']:.4f} -> {result.eval_after['mlm_loss']:.4f} "
              f"(perplexity {result.eval_before['perplexity']:.1f} -> {result.eval_after['perplexity']:.1f})")
    elif result.eval_after:
        print(f"held-out MLM loss: {result.eval_after['mlm_loss']:.4f}")
    print(f"pretrained model: {result.model_dir} ({result.steps} steps); metrics: {result.output_dir / 'metrics.jsonl'}")
    return 0
