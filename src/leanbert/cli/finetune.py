"""`leanbert finetune`: fine-tune a checkpoint on a GLUE task, SQuAD, or the user's own files
(BERT Sec. 4)."""

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
    from leanbert.tasks.registry import FILE_TASKS, task_names

    p = sub.add_parser(
        "finetune",
        help="fine-tune on a GLUE task, SQuAD, or your own files",
        description=(
            "Fine-tune a checkpoint (leanbert or transformers) on a GLUE task, SQuAD, or your own data with "
            "BERT's recipe (AdamW, linear warm-up and decay), evaluating on dev after every epoch and keeping "
            "the best epoch. Writes OUTPUT/model (best checkpoint), OUTPUT/metrics.json, dev predictions "
            "under OUTPUT/predictions and GLUE test predictions for the GLUE server under "
            "OUTPUT/submission. With --lrs/--seeds, runs a sweep and writes OUTPUT/sweep.json. "
            "Own data (--task classification, pair-classification, regression or qa): --train and "
            "--validation files in CSV, TSV (no quoting), JSON lines, Parquet, or directories saved with "
            "datasets' save_to_disk; label names are taken from the training data; qa reads the datasets "
            "hub's SQuAD layout (id, title, context, question, answers{text, answer_start})."
        ),
        epilog=(
            "examples:\n"
            "  leanbert finetune --task sst2 --data glue/SST-2 --model ckpt --output runs/sst2\n"
            "  leanbert finetune --task sst2 --data hub/glue --model ckpt --output runs/sst2   # nyu-mll/glue parquet\n"
            "  leanbert finetune --task squad1 --data squad/dev-v1.1.json --model ckpt --output runs/squad "
            "--set train_articles=36\n"
            "  leanbert finetune --task rte --data glue --model ckpt --output runs/rte --lrs 2e-5,3e-5 --seeds 1,2,3\n"
            "  leanbert finetune --task classification --train reviews.csv --validation dev.csv "
            "--text-column review --label-column stars --model ckpt --output runs/reviews"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--task", required=True, metavar="TASK",
                   help=f"benchmark: {', '.join(task_names())}; own files: {', '.join(FILE_TASKS)}")
    p.add_argument("--data", default=None,
                   help="benchmarks: GLUE task directory (or GLUE root; TSV files or the datasets hub's parquet "
                        "layout); SQuAD directory with train/dev JSON (or the hub's parquet), or one SQuAD file "
                        "split by article (--set train_articles=N)")
    p.add_argument("--train", default=None, metavar="FILE",
                   help="own data: training file or saved dataset (a DatasetDict also gives the validation split)")
    p.add_argument("--validation", default=None, metavar="FILE", help="own data: validation file or saved dataset")
    p.add_argument("--text-column", default=None,
                   help="own data: column of the text (default: text, else sentence; pairs: text, else sentence1)")
    p.add_argument("--text-pair-column", default=None,
                   help="own data: column of the second text (default for pair-classification: text_pair, else sentence2)")
    p.add_argument("--label-column", default="label", help="own data: column of the label (default: label)")
    p.add_argument("--model", required=True, help="pretrained checkpoint directory (leanbert or transformers)")
    p.add_argument("--output", "-o", required=True, help="output directory")
    p.add_argument("--config", default=None,
                   help="finetune preset name (glue, squad) or YAML file (default: by task)")
    p.add_argument("--lrs", type=_floats, default=None, help="sweep: comma-separated learning rates")
    p.add_argument("--seeds", type=_ints, default=None, help="sweep: comma-separated seeds")
    add_set_option(p)
    p.set_defaults(func=run)


def task_data(task, args: argparse.Namespace):
    """What ``finetune`` reads: the ``--data`` path for a benchmark, the own files for the others."""
    from leanbert.tasks.datafiles import Columns, DataFiles

    own = (args.train, args.validation, args.text_column, args.text_pair_column)
    if not task.from_files:
        if any(v is not None for v in own) or args.label_column != "label":
            raise ConfigError(f"--train/--validation and the column options are for your own files "
                              f"(--task classification, ...); give {task.name}'s files with --data")
        if args.data is None:
            raise ConfigError(f"--data is required for {task.name}: the directory or file of its standard data")
        return args.data
    if args.data is not None:
        raise ConfigError(f"--task {task.name} trains on your own files: give --train FILE and --validation FILE, not --data")
    if args.train is None:
        raise ConfigError(f"--task {task.name} needs --train FILE (and --validation FILE)")
    columns = Columns(text=args.text_column, text_pair=args.text_pair_column, label=args.label_column)
    return DataFiles(train=args.train, validation=args.validation, columns=columns)


def run(args: argparse.Namespace) -> int:
    from leanbert.tasks.finetune import finetune, finetune_config
    from leanbert.tasks.registry import get_task
    from leanbert.tasks.sweep import sweep

    task = get_task(args.task)
    data = task_data(task, args)
    cfg = finetune_config(task, args.config, args.overrides)
    if args.lrs is not None or args.seeds is not None:
        lrs = args.lrs or [cfg.lr]
        seeds = args.seeds or [cfg.seed]
        if not lrs or not seeds:
            raise ConfigError("--lrs and --seeds need at least one value each")
        report = sweep(task, data, args.model, args.output, cfg, lrs, seeds)
        print(json.dumps(report["summary"], indent=2))
        print(f"wrote {args.output}/sweep.json ({len(report['runs'])} runs)")
        return 0
    report = finetune(task, data, args.model, args.output, cfg)
    if not report.get("main_process", True):
        return 0  # another torchrun process: the main one reports
    print(json.dumps({"task": report["task"], "best_epoch": report["best_epoch"], "metrics": report["metrics"]}, indent=2))
    print(f"wrote {args.output}/metrics.json, best checkpoint in {report['files']['model']}")
    return 0
