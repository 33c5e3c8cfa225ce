"""`leanbert score`: official GLUE/SQuAD metrics from a predictions file"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("score", help="official GLUE/SQuAD metrics from a predictions file", description="official GLUE/SQuAD metrics from a predictions file (not built yet: fine-tuning issue)")
    p.set_defaults(func=not_built("leanbert score", "fine-tuning issue"))
