"""`leanbert predict`: a fine-tuned checkpoint's predictions for new text, one JSON line each."""

from __future__ import annotations

import argparse
import json
import sys

from leanbert.cli._common import add_set_option


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="predict labels, values or answer spans for new text",
        description=(
            "Run a fine-tuned checkpoint (classification, regression, pair classification or span QA) on "
            "a CSV, TSV, JSON lines or Parquet file, or a saved datasets directory, and write one JSON "
            "line per input row, in order: {\"label\", \"score\", \"probabilities\"} for classification, "
            "{\"value\"} for regression, {\"answer\", \"start\", \"end\", \"score\"} for QA (character "
            "offsets in the context). Text columns default to those the model was fine-tuned on; "
            "QA reads the question and context columns."
        ),
        epilog=(
            "examples:\n"
            "  leanbert predict --model runs/reviews/model --data new.csv --output predictions.jsonl\n"
            "  leanbert predict --model runs/squad/model --data questions.jsonl"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="fine-tuned checkpoint directory (OUTPUT/model of finetune)")
    p.add_argument("--data", required=True, help="file or saved dataset with the texts to predict")
    p.add_argument("--output", "-o", default=None,
                   help="JSON lines file to write (atomically); default: print the lines")
    p.add_argument("--split", default=None, help="split of a DatasetDict or directory of split files (default: test)")
    p.add_argument("--text-column", default=None, help="column of the text (default: the fine-tuning one)")
    p.add_argument("--text-pair-column", default=None, help="column of the second text (default: the fine-tuning one)")
    add_set_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leanbert.tasks.predict import predict

    records = predict(args.model, args.data, output=args.output, split=args.split, text_column=args.text_column,
                      text_pair_column=args.text_pair_column, overrides=args.overrides)
    if args.output is None:
        for r in records:
            sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        print(f"wrote {len(records)} predictions to {args.output}")
    return 0
