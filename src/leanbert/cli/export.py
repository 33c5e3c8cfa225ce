"""`leanbert export`: write a checkpoint as a transformers directory or as leanbert's own."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to transformers (or leanbert) format",
        description=(
            "Read a leanbert checkpoint or a transformers save_pretrained directory and write it "
            "as a transformers directory (AutoModel / AutoModelForMaskedLM load it) or as a "
            "leanbert checkpoint. Later: --format onnx / int8 (deployment issue)."
        ),
    )
    p.add_argument("checkpoint", help="checkpoint directory (leanbert or transformers)")
    p.add_argument("--output", "-o", required=True, help="directory to write (replaced atomically)")
    p.add_argument("--format", choices=["transformers", "leanbert"], default="transformers")
    p.add_argument("--heads", default=None,
                   help="comma-separated heads to keep (default: all the checkpoint has; '' for none)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT even when it holds files that are not a previous export")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from leanbert.checkpoint import export_to_transformers, from_pretrained, save_pretrained

    heads = None if args.heads is None else [h for h in args.heads.split(",") if h.strip()]
    model = from_pretrained(args.checkpoint, heads=heads)
    if args.format == "transformers":
        out = export_to_transformers(model, args.output, overwrite=args.overwrite)
    else:
        out = save_pretrained(model, args.output, overwrite=args.overwrite)
    print(f"wrote {args.format} checkpoint ({model.config.model_type}, heads: {', '.join(model.heads) or 'none'}) to {out}")
    return 0
