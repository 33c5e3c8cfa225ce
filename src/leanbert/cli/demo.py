"""`leanbert demo`."""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("demo", help="demo (being built)")
    p.set_defaults(func=not_built("leanbert demo", "foundation issue"))
