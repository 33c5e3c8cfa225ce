"""`leanbert finetune`: fine-tune on a GLUE task or SQuAD"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("finetune", help="fine-tune on a GLUE task or SQuAD", description="fine-tune on a GLUE task or SQuAD (not built yet: fine-tuning issue)")
    p.set_defaults(func=not_built("leanbert finetune", "fine-tuning issue"))
