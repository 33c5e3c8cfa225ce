"""`leanbert export`."""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("export", help="export (being built)")
    p.set_defaults(func=not_built("leanbert export", "foundation issue"))
