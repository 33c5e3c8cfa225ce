"""`leanbert export`: write a checkpoint as a transformers directory, as leanbert's own, or as
ONNX (fp32, and int8 through ONNX Runtime's quantization)."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to transformers, leanbert or ONNX (+ int8) format",
        description=(
            "Read a leanbert checkpoint or a transformers save_pretrained directory and write it "
            "as a transformers directory (AutoModel / AutoModelForMaskedLM load it), as a "
            "leanbert checkpoint, or as ONNX: OUT/model.onnx (fp32; dynamic batch and sequence axes; "
            "checked against PyTorch at export), OUT/model.int8.onnx with --quantize, the tokenizer "
            "and OUT/card.json. Run an ONNX export with 'leanbert evaluate --onnx OUT'."
        ),
    )
    p.add_argument("checkpoint", help="checkpoint directory (leanbert or transformers)")
    p.add_argument("--output", "-o", required=True, help="directory to write (replaced atomically)")
    p.add_argument("--format", choices=["transformers", "leanbert", "onnx"], default="transformers")
    p.add_argument("--heads", default=None,
                   help="comma-separated heads to keep (default: all the checkpoint has; '' for none)")
    p.add_argument("--quantize", choices=["none", "dynamic", "static"], default="none",
                   help="ONNX only: also write int8 weights (dynamic: activations quantised at run time; "
                        "static: activation ranges calibrated on --calibration)")
    p.add_argument("--calibration", default=None, metavar="DATA",
                   help="--quantize static only: a GLUE task directory (train.tsv, else dev.tsv), a GLUE .tsv "
                        "file, a SQuAD .json file, or a text file with one example per line (tab: a pair)")
    p.add_argument("--calibration-size", type=int, default=128, metavar="N",
                   help="calibration examples to use (default 128)")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="with --quantize: one int8 scale per output channel of each weight instead of one per "
                        "matrix (closer to fp32; a few percent slower on CPU). Default: per channel for a "
                        "checkpoint fine-tuned with qat=true, per tensor otherwise")
    p.add_argument("--int8-graph", choices=["ort", "portable"], default=None,
                   help="with --quantize: 'ort' (default) quantises a graph rewritten for ONNX Runtime (fused "
                        "com.microsoft.MultiHeadAttention; MobileBERT's Q/K bottleneck composed): faster, runs on "
                        "ONNX Runtime only; 'portable' quantises model.onnx as it is (standard ops)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18)")
    p.add_argument("--max-length", type=int, default=None, metavar="N",
                   help="ONNX: sequence length for calibration, the parity probes and evaluation (default: "
                        "the fine-tuning max_seq_length recorded in the checkpoint, else 128)")
    p.add_argument("--ort-optimize", action="store_true",
                   help="ONNX, BERT only: also apply onnxruntime.transformers.optimizer (BiasGelu, "
                        "SkipLayerNormalization; the file then needs ONNX Runtime; a few percent faster at most)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT even when it holds files that are not a previous export")
    p.set_defaults(func=run)


def _check_onnx_options(args: argparse.Namespace) -> None:
    from leanbert.errors import ConfigError

    if args.format != "onnx":
        given = [f for f, v in (("--quantize", args.quantize != "none"), ("--calibration", args.calibration),
                                ("--opset", args.opset), ("--max-length", args.max_length),
                                ("--ort-optimize", args.ort_optimize),
                                ("--per-channel", args.per_channel is not None),
                                ("--int8-graph", args.int8_graph)) if v]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --format onnx; add --format onnx or leave them out")
    if args.int8_graph is not None and args.quantize == "none":
        raise ConfigError("--int8-graph chooses how the int8 file is built; add --quantize dynamic (or static) "
                          "or leave out --int8-graph")
    if args.calibration_size < 1:
        raise ConfigError(f"--calibration-size must be at least 1, not {args.calibration_size}")


def run(args: argparse.Namespace) -> int:
    _check_onnx_options(args)
    heads = None if args.heads is None else [h for h in args.heads.split(",") if h.strip()]
    if args.format == "onnx":
        return _run_onnx(args, heads)
    from leanbert.checkpoint import export_to_transformers, from_pretrained, save_pretrained

    model = from_pretrained(args.checkpoint, heads=heads)
    if args.format == "transformers":
        out = export_to_transformers(model, args.output, overwrite=args.overwrite)
    else:
        out = save_pretrained(model, args.output, overwrite=args.overwrite)
    print(f"wrote {args.format} checkpoint ({model.config.model_type}, heads: {', '.join(model.heads) or 'none'}) to {out}")
    return 0


def _run_onnx(args: argparse.Namespace, heads: list[str] | None) -> int:
    from leanbert.deploy.onnx import DEFAULT_OPSET, export_onnx, read_card

    out = export_onnx(args.checkpoint, args.output, quantize=args.quantize, calibration=args.calibration,
                      opset=args.opset or DEFAULT_OPSET, max_length=args.max_length, heads=heads,
                      calibration_size=args.calibration_size, ort_optimize=args.ort_optimize,
                      per_channel=args.per_channel, int8_graph=args.int8_graph or "ort", overwrite=args.overwrite)
    card = read_card(out)
    files = card["files"]
    sizes = f"fp32 {files['fp32']['megabytes']} MB"
    if "int8" in files:
        scheme = ", per channel" if card["quantization"].get("per_channel") else ""
        graph = card["quantization"].get("graph", {}).get("kind", "portable")
        sizes += (f", int8 ({card['quantization']['mode']}{scheme}, {graph} graph"
                  + (": ONNX Runtime only" if graph == "ort" else "") + f") {files['int8']['megabytes']} MB")
    print(f"wrote ONNX export ({card['model']['family']}, heads: {', '.join(card['heads']) or 'none'}; {sizes}; "
          f"max |onnx - torch| {card['parity']['max_abs_diff']:.2g}) to {out}")
    return 0
