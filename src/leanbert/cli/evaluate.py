"""`leanbert evaluate`: evaluate a fine-tuned checkpoint (or its ONNX export) on a split."""

from __future__ import annotations

import argparse
import json

from leanbert.cli._common import add_set_option


def register(sub) -> None:
    from leanbert.tasks.registry import task_names

    p = sub.add_parser(
        "evaluate",
        help="evaluate a fine-tuned checkpoint or its ONNX export",
        description=(
            "Run a fine-tuned checkpoint on one split of a GLUE task (default: its dev split(s)) "
            "or on a SQuAD file and print the official metrics. With --output, also write the "
            "predictions (GLUE test splits under the GLUE server's file names) and metrics.json. "
            "--onnx runs an ONNX export (leanbert export --format onnx) through ONNX Runtime with the "
            "same data handling and metrics: the int8 file when the export has one, or the .onnx file given."
        ),
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="fine-tuned checkpoint directory")
    which.add_argument("--onnx", metavar="DIR", help="ONNX export directory (its default file: int8 if present), "
                                                      "or DIR/model.onnx / DIR/model.int8.onnx")
    p.add_argument("--data", required=True, help="GLUE task directory (or GLUE root), or a SQuAD JSON file")
    p.add_argument("--task", default=None, help=f"one of: {', '.join(task_names())} (default: recorded in the checkpoint)")
    p.add_argument("--split", default=None,
                   help="GLUE split: dev, test, train; MNLI: dev_matched, dev_mismatched, test_matched, "
                        "test_mismatched, diagnostic (default: the dev split(s))")
    p.add_argument("--output", "-o", default=None, help="directory for predictions and metrics.json")
    p.add_argument("--config", default=None, help="finetune preset or YAML (sequence length, batch size)")
    p.add_argument("--int8", nargs="?", const="torchao", default=None, choices=("torchao", "dynamic"),
                   help="with --model: evaluate its PyTorch int8 model (leanbert.deploy.torch_int8): torchao "
                        "(the default) or dynamic (torch.ao, deprecated, fast in eager mode on CPU)")
    add_set_option(p)
    p.set_defaults(func=run)


def _recorded(args: argparse.Namespace) -> dict:
    """What fine-tuning recorded (task, sequence settings): the checkpoint's metadata, or the
    ONNX export's card."""
    if args.onnx is None:
        from leanbert.checkpoint import read_metadata

        return read_metadata(args.model)
    from pathlib import Path

    from leanbert.deploy.onnx import read_card

    path = Path(args.onnx)
    card = read_card(path.parent if path.suffix == ".onnx" else path)
    return {"task": card.get("task"), "finetune": card.get("finetune", {})}


def run(args: argparse.Namespace) -> int:
    from leanbert.tasks.finetune import evaluate_checkpoint, evaluation_config
    from leanbert.tasks.registry import get_task

    if args.int8 and args.onnx is not None:
        from leanbert.errors import ConfigError

        raise ConfigError("--int8 quantizes a PyTorch checkpoint (--model); an ONNX export has its own "
                          "quantization (leanbert export --quantize)")
    metadata = _recorded(args)
    task_name = args.task or metadata.get("task")
    cfg = None
    if task_name:
        cfg = evaluation_config(get_task(str(task_name)), metadata.get("finetune"), args.config, args.overrides)
    if args.onnx is not None:
        from leanbert.deploy.onnx_eval import evaluate_onnx

        report = evaluate_onnx(args.onnx, args.data, task=task_name, split=args.split, output=args.output, cfg=cfg)
        shown = {"task": report["task"], "split": report["split"], "model": report["model"],
                 "quantization": report["quantization"], "metrics": report["metrics"]}
    else:
        report = evaluate_checkpoint(args.model, args.data, task=task_name, split=args.split, output=args.output,
                                     cfg=cfg, int8=args.int8)
        shown = {"task": report["task"], "split": report["split"], **({"int8": args.int8} if args.int8 else {}),
                 "metrics": report["metrics"]}
    print(json.dumps(shown, indent=2))
    if args.output:
        print(f"wrote {args.output}/metrics.json and predictions: {', '.join(report['files'])}")
    return 0
