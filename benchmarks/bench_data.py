"""Data-pipeline benchmark: data preparation throughput and loader throughput.

1. Data preparation (MB of UTF-8 text per second): the whole of ``leanbert data prepare``
   (reading, blank-line documents, sentence splitting, WordPiece, the token cache, packing,
   shuffled shards, manifest), against the reference a ``tokenizers`` user would write on the
   same files with the same tokenizer: read each file, split it into paragraphs at blank lines,
   ``Tokenizer.encode_batch`` with the library's own Rust threads (TOKENIZERS_PARALLELISM
   unset). ``encode_batch_fast`` (no character offsets) is shown too. Rounds are interleaved and
   the best of each kept, so a busy machine slows every row alike.
2. Loader (batches per second) of ``ShardLoader`` + ``MaskingCollator`` against what a
   training step consumes: the measured steps per second of a small BERT on this machine
   (forward, backward, AdamW) at the same batch shape.

    python benchmarks/bench_data.py [--books 12] [--workers 2] [--rounds 3] [--output PATH]
    leanbert bench data [same options]

Prints a table and writes JSON to ``--output`` (default benchmarks/results/data.json). The
default worker count of ``leanbert data prepare`` is measured (see
:func:`leanbert.data.shards.tokenize_sources`).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUTENBERG = ROOT / ".." / "shared" / "data" / "pretrain" / "gutenberg" / "clean"


def reference(files, tok, fast: bool = False) -> int:
    """What a tokenizers user writes: files -> paragraphs -> encode_batch. Returns the token count."""
    encode = tok.encode_batch_fast if fast else tok.encode_batch
    tokens = 0
    for f in files:
        paragraphs = [p for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        tokens += sum(len(e) for e in encode(paragraphs, add_special_tokens=False))
    return tokens


def leanbert_prepare(files, tok, workers, mode: str = "packed") -> int:
    """``leanbert data prepare`` from scratch (no token cache) into a temporary directory."""
    from leanbert.data.shards import prepare

    with tempfile.TemporaryDirectory() as tmp:
        m = prepare(files, tok, Path(tmp) / "out", {"mode": mode}, workers=workers)
    return sum(s["tokens"] for s in m["sources"])


def bench_preparation(files, tok, workers: int, rounds: int):
    mb = sum(f.stat().st_size for f in files) / 1e6
    variants = {
        "tokenizers encode_batch (reference: read, paragraphs, Rust threads)": lambda: reference(files, tok),
        "tokenizers encode_batch_fast (no offsets)": lambda: reference(files, tok, fast=True),
        "leanbert data prepare (default: workers measured)": lambda: leanbert_prepare(files, tok, None),
        "leanbert data prepare --workers 0 (in process)": lambda: leanbert_prepare(files, tok, 0),
        f"leanbert data prepare --workers {workers}": lambda: leanbert_prepare(files, tok, workers),
        "leanbert data prepare --mode pairs": lambda: leanbert_prepare(files, tok, None, "pairs"),
    }
    best = {k: float("inf") for k in variants}
    tokens = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            t = time.perf_counter()
            tokens[name] = fn()
            best[name] = min(best[name], time.perf_counter() - t)
    rows = [(name, mb / best[name], tokens[name]) for name in variants]
    ref = mb / best[next(iter(variants))]
    names = list(variants)
    results = {"corpus_mb": mb, "rounds": rounds, "reference_mb_s": ref,
               "reference_fast_mb_s": mb / best[names[1]],
               "prepare_mb_s": mb / best[names[2]], "prepare_workers_0_mb_s": mb / best[names[3]],
               f"prepare_workers_{workers}_mb_s": mb / best[names[4]], "prepare_pairs_mb_s": mb / best[names[5]]}
    results["prepare_vs_reference"] = results["prepare_mb_s"] / ref
    results["prepare_workers_0_vs_reference"] = results["prepare_workers_0_mb_s"] / ref
    results["prepare_pairs_vs_reference"] = results["prepare_pairs_mb_s"] / ref
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
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each preparation row (best kept)")
    ap.add_argument("--quick", action="store_true", help="one book, one round, one step (a smoke test; numbers mean little)")
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "data.json",
                    help="JSON output (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.quick:
        args.books, args.steps, args.rounds = 1, 1, 1
    if not GUTENBERG.is_dir():
        print(f"real data not found at {GUTENBERG} (../shared/data beside the checkout)", file=sys.stderr)
        return 2
    files = sorted(GUTENBERG.glob("*.txt"))[: args.books]

    from leanbert.data.shards import auto_workers
    from leanbert.data.tokenizer import resolve_tokenizer, train_tokenizer
    from leanbert.io import atomic_write_json
    from leanbert.provenance import with_provenance

    try:
        tok, tok_name = resolve_tokenizer("bert-base-uncased"), "bert-base-uncased"
    except Exception:  # offline: a tokenizer trained on the same books
        tok, tok_name = train_tokenizer(files, vocab_size=8000), "trained WordPiece 8000"

    default_workers = auto_workers(files, tok)
    tok_rows, tok_res = bench_preparation(files, tok, args.workers, args.rounds)
    tok_res["prepare_default_workers"] = default_workers
    load_res, _ = bench_loader(files[:4], tok, args.batch, args.steps)

    print(f"\ncorpus: {len(files)} Gutenberg books, {tok_res['corpus_mb']:.1f} MB; tokenizer {tok_name}; "
          f"{os.cpu_count()} CPU cores; 'leanbert data prepare' picks {default_workers} worker(s) here\n")
    print(f"{'data preparation (best of ' + str(args.rounds) + ')':<70} {'MB/s':>8} {'x ref':>6} {'tokens':>10}")
    for label, rate, tokens in tok_rows:
        print(f"{label:<70} {rate:8.2f} {rate / tok_res['reference_mb_s']:6.2f} {tokens:10d}")
    print(f"\n{'loader (batch ' + str(args.batch) + ' x 128, packed, masking)':<70} {'batches/s':>10}")
    for key, val in load_res.items():
        print(f"{key:<70} {val:10.1f}")
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
    atomic_write_json(args.output, with_provenance(result, ROOT))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
