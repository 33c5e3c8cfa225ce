"""`leanbert pretrain`: MLM pretraining (with token dropping)"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("pretrain", help="MLM pretraining (with token dropping)", description="MLM pretraining (with token dropping) (not built yet: pretraining engine issue)")
    p.set_defaults(func=not_built("leanbert pretrain", "pretraining engine issue"))
