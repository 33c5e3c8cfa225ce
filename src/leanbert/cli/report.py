"""`leanbert report`: one-command report with plots"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("report", help="one-command report with plots", description="one-command report with plots (not built yet: report issue)")
    p.set_defaults(func=not_built("leanbert report", "report issue"))
