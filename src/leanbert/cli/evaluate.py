"""`leanbert evaluate`: evaluate a fine-tuned checkpoint on a split."""

from __future__ import annotations

import argparse
import json

from leanbert.cli._common import add_set_option


def register(sub) -> None:
    from leanbert.tasks.registry import task_names

    p = sub.add_parser(
        "evaluate",
        help="evaluate a fine-tuned checkpoint",
        description=(
            "Run a fine-tuned checkpoint on one split of a GLUE task (default: its dev split(s)) "
            "or on a SQuAD file and print the official metrics. With --output, also write the "
            "predictions (GLUE test splits under the GLUE server's file names) and metrics.json."
        ),
    )
    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory")
    p.add_argument("--data", required=True, help="GLUE task directory (or GLUE root), or a SQuAD JSON file")
    p.add_argument("--task", default=None, help=f"one of: {', '.join(task_names())} (default: recorded in the checkpoint)")
    p.add_argument("--split", default=None,
                   help="GLUE split: dev, test, train; MNLI: dev_matched, dev_mismatched, test_matched, "
                        "test_mismatched, diagnostic (default: the dev split(s))")
    p.add_argument("--output", "-o", default=None, help="directory for predictions and metrics.json")
    p.add_argument("--config", default=None, help="finetune preset or YAML (sequence length, batch size)")
    add_set_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leanbert.checkpoint import read_metadata
    from leanbert.tasks.finetune import evaluate_checkpoint, finetune_config
    from leanbert.tasks.registry import get_task

    metadata = read_metadata(args.model)  # what fine-tuning recorded: task and sequence settings
    task_name = args.task or metadata.get("task")
    cfg = None
    if task_name:
        recorded = metadata.get("finetune", {})
        base = {k: recorded[k] for k in ("max_seq_length", "doc_stride", "max_query_length", "n_best_size",
                                         "max_answer_length", "null_score_diff_threshold") if k in recorded}
        overrides = [f"{k}={v}" for k, v in base.items()] + list(args.overrides)
        cfg = finetune_config(get_task(str(task_name)), args.config, overrides)
    report = evaluate_checkpoint(args.model, args.data, task=task_name, split=args.split, output=args.output, cfg=cfg)
    print(json.dumps({"task": report["task"], "split": report["split"], "metrics": report["metrics"]}, indent=2))
    if args.output:
        print(f"wrote {args.output}/metrics.json and predictions: {', '.join(report['files'])}")
    return 0
