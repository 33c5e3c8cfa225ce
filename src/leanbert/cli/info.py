"""`leanbert info`: the configuration and parameter counts of a preset or checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leanbert.cli._common import add_set_option


def register(sub) -> None:
    p = sub.add_parser(
        "info",
        help="print the config and parameter counts of a model preset or checkpoint",
        description="Print the configuration and parameter counts (total, embeddings, encoder, each head).",
    )
    p.add_argument("model", nargs="?", help="preset name, YAML file or checkpoint directory (omit to list presets)")
    p.add_argument("--heads", default=None, help="comma-separated heads for a preset, e.g. mlm,nsp ('' for none)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_set_option(p)
    p.set_defaults(func=run)


def parameter_counts(model) -> dict[str, int]:
    """Parameter counts, each tied tensor once.

    ``total`` includes the heads; ``encoder`` (= without heads) includes the embeddings and the
    pooler, as transformers' ``BertModel`` / ``MobileBertModel`` count; ``encoder_layers`` is
    the transformer layers alone (without embeddings, pooler and heads). The papers' sizes are
    ``encoder`` counts (MobileBERT Table 1: 25.3 M; see the README for how they relate).
    """
    embeddings = sum(p.numel() for p in model.encoder.embeddings.parameters())
    encoder = sum(p.numel() for p in model.encoder.parameters())
    pooler = getattr(model.encoder, "pooler", None)
    pooled = sum(p.numel() for p in pooler.parameters()) if pooler is not None else 0
    counts = {
        "total": model.num_parameters(),
        "embeddings": embeddings,
        "encoder": encoder,
        "encoder_layers": encoder - embeddings - pooled,
    }
    if getattr(model.encoder, "pooler", None) is not None:
        counts["pooler"] = sum(p.numel() for p in model.encoder.pooler.parameters())
    for head in model.heads:
        counts[f"head:{head}"] = sum(p.numel() for p in getattr(model, head).parameters())
    return counts


LABELS = {
    "total": "total (with heads)",
    "embeddings": "embeddings",
    "encoder": "encoder (without heads)",
    "encoder_layers": "layers (without embeddings, heads)",
}


def run(args: argparse.Namespace) -> int:
    from leanbert.models import list_model_presets, model_preset
    from leanbert.models.model import LeanbertModel

    if args.model is None:
        print("model presets: " + ", ".join(list_model_presets()))
        return 0
    if Path(args.model).is_dir():
        from leanbert.checkpoint import from_pretrained

        model = from_pretrained(args.model)
        source = args.model
    else:
        overrides = list(args.overrides)
        if args.heads is not None:
            overrides.append(f"heads=[{args.heads}]")
        import torch

        with torch.device("meta"):  # counts only: no memory, no init time
            model = LeanbertModel(model_preset(args.model, overrides))
        source = f"preset {args.model}"
    counts = parameter_counts(model)
    if args.json:
        print(json.dumps({"source": source, "config": model.config.model_dump(mode="json"), "parameters": counts}, indent=2))
        return 0
    print(f"{source}: {model.config.model_type}, heads: {', '.join(model.heads) or 'none'}")
    for k, v in model.config.model_dump(mode="json").items():
        print(f"  {k:<26} {v}")
    print("parameters:")
    for k, v in counts.items():
        print(f"  {LABELS.get(k, k):<34} {v:>13,}  ({v / 1e6:.2f} M)")
    return 0
