"""`leanbert tokenizer`: train a WordPiece tokenizer on raw text"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("tokenizer", help="train a WordPiece tokenizer on raw text", description="train a WordPiece tokenizer on raw text (not built yet: data pipeline issue)")
    p.set_defaults(func=not_built("leanbert tokenizer", "data pipeline issue"))
