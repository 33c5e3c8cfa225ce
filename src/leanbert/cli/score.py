"""`leanbert score`: official GLUE/SQuAD metrics from a predictions file alone."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    from leanbert.tasks.registry import task_names

    p = sub.add_parser(
        "score",
        help="official GLUE/SQuAD metrics from a predictions file",
        description=(
            "Compute the official metrics of a predictions file against gold labels, as the official "
            "SQuAD evaluation scripts do (evaluate-v1.1.py, evaluate-v2.0.py). SQuAD predictions: JSON "
            "{question id: answer text} (\"\" = no answer in v2.0). GLUE predictions: the GLUE server "
            "format, 'index<TAB>prediction' rows after that header (index = 0-based example number for "
            "dev files without an index column: CoLA, SST-2, MRPC)."
        ),
    )
    p.add_argument("--task", required=True, metavar="TASK", help=f"one of: {', '.join(task_names())}")
    p.add_argument("--data", required=True, help="gold file: SQuAD JSON, or GLUE dev TSV / task directory")
    p.add_argument("--predictions", required=True, help="predictions file")
    p.add_argument("--split", default=None, help="GLUE split when --data is a directory (default: dev)")
    p.add_argument("--na-probs", default=None,
                   help="SQuAD v2.0: JSON {question id: no-answer probability} (gives the best thresholds)")
    p.add_argument("--na-prob-thresh", type=float, default=1.0,
                   help="SQuAD v2.0: predict no answer when the probability exceeds this (default 1.0)")
    p.add_argument("--allow-missing", action="store_true",
                   help="SQuAD: score questions without a prediction as the official scripts do "
                        "(0 in v1.1, left out in v2.0) instead of failing")
    p.add_argument("--output", "-o", default=None, help="also write the metrics to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leanbert.io import atomic_write_json
    from leanbert.tasks.score import score_file

    metrics = score_file(args.task, args.data, args.predictions, split=args.split, na_probs=args.na_probs,
                         na_prob_thresh=args.na_prob_thresh, allow_missing=args.allow_missing)
    print(json.dumps(metrics, indent=2))
    if args.output:
        atomic_write_json(args.output, metrics)
    return 0
