"""`leanbert bench`: speed benchmarks against reference implementations"""

from __future__ import annotations

from leanbert.cli._common import not_built


def register(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks against reference implementations", description="speed benchmarks against reference implementations (not built yet: pretraining engine issue)")
    p.set_defaults(func=not_built("leanbert bench", "pretraining engine issue"))
