"""`leanbert evaluate`: evaluate a fine-tuned checkpoint"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a fine-tuned checkpoint", description="evaluate a fine-tuned checkpoint (not built yet: fine-tuning issue)")
    p.set_defaults(func=not_built("leanbert evaluate", "fine-tuning issue"))
