"""`leanbert bench NAME`: run a benchmark from the repository's ``benchmarks/`` folder.

Each ``benchmarks/bench_NAME.py`` compares leanbert against a reference implementation in
the same run (ratios, not absolute seconds), prints a table and writes JSON to
``--output PATH`` (every benchmark takes that flag; default: a file in ``benchmarks/results/``).
It exposes ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from leanbert.errors import LeanbertError, did_you_mean


def benchmarks_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "benchmarks"


def available() -> list[str]:
    d = benchmarks_dir()
    return sorted(p.stem[len("bench_"):].replace("_", "-") for p in d.glob("bench_*.py")) if d.is_dir() else []


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="speed benchmarks against reference implementations",
        description="Run benchmarks/bench_NAME.py; extra arguments go to the benchmark "
        "(try 'leanbert bench NAME --help'). Every benchmark prints a table and writes JSON to "
        "--output PATH (default: a file in benchmarks/results/).",
    )
    p.add_argument("name", nargs="?", help="benchmark name (omit to list them)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the benchmark")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = available()
    if not names:
        raise LeanbertError(
            f"no benchmarks found in {benchmarks_dir()}; run from a source checkout of leanbert"
        )
    if args.name is None:
        print("benchmarks: " + ", ".join(names))
        return 0
    if args.name not in names:
        raise LeanbertError(
            f"unknown benchmark '{args.name}'{did_you_mean(args.name, names)}; choose one of: {', '.join(names)}"
        )
    path = benchmarks_dir() / f"bench_{args.name.replace('-', '_')}.py"
    spec = importlib.util.spec_from_file_location(f"leanbert_bench_{args.name.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return int(module.main(list(args.args)) or 0)
