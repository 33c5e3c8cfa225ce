"""`leanbert data`: get corpora and prepare token shards"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("data", help="get corpora and prepare token shards", description="get corpora and prepare token shards (not built yet: data pipeline issue)")
    p.set_defaults(func=not_built("leanbert data", "data pipeline issue"))
