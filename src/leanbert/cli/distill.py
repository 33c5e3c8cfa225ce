"""`leanbert distill`: MobileBERT knowledge transfer from its teacher"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("distill", help="MobileBERT knowledge transfer from its teacher", description="MobileBERT knowledge transfer from its teacher (not built yet: knowledge transfer issue)")
    p.set_defaults(func=not_built("leanbert distill", "knowledge transfer issue"))
