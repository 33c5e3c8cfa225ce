"""Data-pipeline benchmark: tokenisation throughput and loader throughput.

1. Tokenisation (MB of UTF-8 text per second) of ``leanbert data prepare``'s tokenising stage
   (reading, blank-line documents, sentence splitting, WordPiece, writing the token cache) with
   N worker processes, against the reference: plain ``tokenizers`` ``encode_batch`` on the
   same documents in one process (which uses the library's own Rust threads).
2. Loader (batches per second) of ``ShardLoader`` + ``MaskingCollator`` against what a
   training step consumes: the measured steps per second of a small BERT on this machine
   (forward, backward, AdamW) at the same batch shape.

    python benchmarks/bench_data.py [--books 12] [--workers 2] [--batch 32]   # or: leanbert bench data

Prints a table and writes benchmarks/results/data.json (``--output``). The tokenisation rows
include ``leanbert data prepare``'s default worker count (measured, see
:func:`leanbert.data.shards.auto_workers`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUTENBERG = ROOT / ".." / "shared" / "data" / "pretrain" / "gutenberg" / "clean"


def bench_tokenisation(files, tok, workers):
    from leanbert.data.corpus import find_sources, iter_corpus
    from leanbert.data.shards import PrepareConfig, tokenize_sources

    sources = find_sources(files)
    mb = sum(f.stat().st_size for f in files) / 1e6
    docs = list(iter_corpus(files))
    t = time.perf_counter()
    encs = tok.encode_batch(docs, add_special_tokens=False)
    ref_s = time.perf_counter() - t
    ref_tokens = sum(len(e.ids) for e in encs)
    rows = [("tokenizers encode_batch, 1 process (Rust threads)", mb / ref_s, ref_tokens)]
    results = {"corpus_mb": mb, "reference_mb_s": mb / ref_s}
    for w in sorted({0, workers}):
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            dirs = tokenize_sources(sources, [f"{i:064x}" for i in range(len(sources))], tok, PrepareConfig(),
                                    Path(tmp), workers=w)
            secs = time.perf_counter() - t
            tokens = sum(json.loads((d / "meta.json").read_text())["tokens"] for d in dirs)
        label = f"leanbert prepare tokenising, {w} workers" if w else "leanbert prepare tokenising, in process"
        rows.append((label, mb / secs, tokens))
        results[f"leanbert_workers_{w}_mb_s"] = mb / secs
    return rows, results


def bench_loader(files, tok, batch, steps):
    import torch

    from leanbert.data.loader import ShardLoader
    from leanbert.data.masking import MaskingCollator
    from leanbert.data.shards import prepare
    from leanbert.models import build_model

    with tempfile.TemporaryDirectory() as tmp:
        prepare(files, tok, tmp, {"seq_length": 128}, workers=0)
        collator = MaskingCollator.from_prepared(tmp)
        out = {}
        for prefetch in (0, 2):
            loader = ShardLoader(tmp, batch_size=batch, collator=collator, prefetch=prefetch)
            it = iter(loader)
            next(it)
            t = time.perf_counter()
            n = 200
            for _ in range(n):
                b = next(it)
            out[f"loader_prefetch_{prefetch}_batches_s"] = n / (time.perf_counter() - t)
        torch.manual_seed(0)
        rows = []
        for preset in ("bert-tiny", "bert-mini"):
            model = build_model(preset, vocab_size=tok.get_vocab_size())
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            b = {k: v for k, v in b.items() if k != "next_sentence_label"}
            for i in range(steps + 1):
                if i == 1:
                    t = time.perf_counter()
                opt.zero_grad()
                model(**b).loss.backward()
                opt.step()
            out[f"{preset}_train_steps_s"] = steps / (time.perf_counter() - t)
            rows.append(preset)
    return out, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="leanbert bench data", description=__doc__.splitlines()[0])
    ap.add_argument("--books", type=int, default=12, help="Gutenberg books to use (sorted by name)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes to compare with in-process")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="training steps timed per model")
    ap.add_argument("--quick", action="store_true", help="one book, one step (a smoke test; numbers mean little)")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "data.json"), help="JSON output")
    args = ap.parse_args(argv)
    if args.quick:
        args.books, args.steps = 1, 1
    if not GUTENBERG.is_dir():
        print(f"real data not found at {GUTENBERG} (../shared/data beside the checkout)", file=sys.stderr)
        return 2
    files = sorted(GUTENBERG.glob("*.txt"))[: args.books]

    from leanbert.data.shards import auto_workers
    from leanbert.data.tokenizer import resolve_tokenizer, train_tokenizer
    from leanbert.io import atomic_write_json

    try:
        tok, tok_name = resolve_tokenizer("bert-base-uncased"), "bert-base-uncased"
    except Exception:  # offline: a tokenizer trained on the same books
        tok, tok_name = train_tokenizer(files, vocab_size=8000), "trained WordPiece 8000"

    default_workers = auto_workers(files, tok)
    tok_rows, tok_res = bench_tokenisation(files, tok, args.workers)
    tok_res["prepare_default_workers"] = default_workers
    load_res, _ = bench_loader(files[:4], tok, args.batch, args.steps)

    print(f"\ncorpus: {len(files)} Gutenberg books, {tok_res['corpus_mb']:.1f} MB; tokenizer {tok_name}; "
          f"{os.cpu_count()} CPU cores; 'leanbert data prepare' picks {default_workers} worker(s) here\n")
    print(f"{'tokenisation':<55} {'MB/s':>8} {'tokens':>12}")
    for label, rate, tokens in tok_rows:
        print(f"{label:<55} {rate:8.2f} {tokens:12d}")
    print(f"\n{'loader (batch ' + str(args.batch) + ' x 128, packed, masking)':<55} {'batches/s':>10}")
    for key, val in load_res.items():
        print(f"{key:<55} {val:10.1f}")
    result = {
        "benchmark": "data",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "tokenizer": tok_name,
        "books": len(files),
        "workers": args.workers,
        "batch_size": args.batch,
        "tokenisation": tok_res,
        "loader": load_res,
    }
    atomic_write_json(args.output, result)
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
