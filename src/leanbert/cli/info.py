"""`leanbert info`."""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("info", help="info (being built)")
    p.set_defaults(func=not_built("leanbert info", "foundation issue"))
