"""`leanbert finetune`: fine-tune a checkpoint on a GLUE task or SQuAD (BERT Sec. 4)."""

from __future__ import annotations

import argparse
import json

from leanbert.cli._common import add_set_option
from leanbert.errors import ConfigError


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def register(sub) -> None:
    from leanbert.tasks.registry import task_names

    p = sub.add_parser(
        "finetune",
        help="fine-tune on a GLUE task or SQuAD",
        description=(
            "Fine-tune a checkpoint (leanbert or transformers) on a GLUE task or SQuAD with BERT's "
            "recipe (AdamW, linear warm-up and decay), evaluating on dev after every epoch and keeping "
            "the best epoch. Writes OUTPUT/model (best checkpoint), OUTPUT/metrics.json, dev predictions "
            "under OUTPUT/predictions and GLUE test predictions for the GLUE server under "
            "OUTPUT/submission. With --lrs/--seeds, runs a sweep and writes OUTPUT/sweep.json."
        ),
        epilog=(
            "examples:\n"
            "  leanbert finetune --task sst2 --data glue/SST-2 --model ckpt --output runs/sst2\n"
            "  leanbert finetune --task squad1 --data squad/dev-v1.1.json --model ckpt --output runs/squad "
            "--set train_articles=36\n"
            "  leanbert finetune --task rte --data glue --model ckpt --output runs/rte --lrs 2e-5,3e-5 --seeds 1,2,3"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, metavar="TASK", help=f"one of: {', '.join(task_names())}")
    p.add_argument("--data", required=True,
                   help="GLUE task directory (or GLUE root); SQuAD directory with train/dev JSON, or one "
                        "SQuAD JSON file split by article (--set train_articles=N)")
    p.add_argument("--model", required=True, help="pretrained checkpoint directory (leanbert or transformers)")
    p.add_argument("--output", "-o", required=True, help="output directory")
    p.add_argument("--config", default=None,
                   help="finetune preset name (glue, squad) or YAML file (default: by task)")
    p.add_argument("--lrs", type=_floats, default=None, help="sweep: comma-separated learning rates")
    p.add_argument("--seeds", type=_ints, default=None, help="sweep: comma-separated seeds")
    add_set_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leanbert.tasks.finetune import finetune, finetune_config
    from leanbert.tasks.registry import get_task
    from leanbert.tasks.sweep import sweep

    task = get_task(args.task)
    cfg = finetune_config(task, args.config, args.overrides)
    if args.lrs is not None or args.seeds is not None:
        lrs = args.lrs or [cfg.lr]
        seeds = args.seeds or [cfg.seed]
        if not lrs or not seeds:
            raise ConfigError("--lrs and --seeds need at least one value each")
        report = sweep(task, args.data, args.model, args.output, cfg, lrs, seeds)
        print(json.dumps(report["summary"], indent=2))
        print(f"wrote {args.output}/sweep.json ({len(report['runs'])} runs)")
        return 0
    report = finetune(task, args.data, args.model, args.output, cfg)
    if not report.get("main_process", True):
        return 0  # another torchrun process: the main one reports
    print(json.dumps({"task": report["task"], "best_epoch": report["best_epoch"], "metrics": report["metrics"]}, indent=2))
    print(f"wrote {args.output}/metrics.json, best checkpoint in {report['files']['model']}")
    return 0
