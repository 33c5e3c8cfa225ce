"""`leanbert report`: one Markdown report and one self-contained HTML page, with plots, from the
benchmarks' and experiments' JSON (``leanbert.report``)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from leanbert.errors import ConfigError, LeanbertError, RunFailed


def _expected_times() -> str:
    from leanbert.report.regenerate import JOBS

    lines = ["expected run time of each input on a 2-core CPU (full mode / --quick):"]
    for job in JOBS:
        full = f"{job.full_minutes:g} min" if job.full_minutes < 120 else f"{job.full_minutes / 60:g} h"
        lines.append(f"  {job.spec.path:<50} {full:>8} / {job.quick_minutes:g} min")
    total = sum(j.quick_minutes for j in JOBS)
    lines.append(f"  --quick in all: about {max(total / 2, max(j.quick_minutes for j in JOBS)):.0f} min "
                 "(two runs at a time, one thread each)")
    return "\n".join(lines)


# Full mode starts nothing expected to take longer unless asked (--max-minutes).
DEFAULT_MAX_MINUTES = 60.0


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="one report (Markdown + HTML, with plots) from every benchmark and experiment",
        description=(
            "Collect the JSON of the benchmarks (benchmarks/results/) and experiments (experiments/*/) and write "
            "report.md, report.html (self-contained: plots inlined) and summary.json. Every input is listed with "
            "its status: ok, stale (the code changed since it was measured, or it was measured from uncommitted "
            "changes), cannot tell (no commit recorded), missing or unreadable. Full mode reuses the inputs that "
            "are there and runs the ones that are missing; --quick runs every benchmark quickly and a toy "
            "version of every experiment into DIR/inputs/ and reports those."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The expected-times table needs the job list: built when --help is asked for, so that no
    # other command pays for importing leanbert.report at start-up.
    plain_help = p.format_help

    def format_help() -> str:
        p.epilog = _expected_times()
        return plain_help()

    p.format_help = format_help
    p.add_argument("--output", "-o", type=Path, default=None,
                   help="report directory (default: report/ in the checkout; with --quick: outputs/report-quick/, "
                        "git-ignored, so that a toy run never replaces the committed report)")
    p.add_argument("--quick", action="store_true",
                   help="run every benchmark in a quick setting and a toy version of every experiment into "
                        "DIR/inputs/ (a few minutes; their work directories are removed afterwards), and report those")
    p.add_argument("--no-run", action="store_true", help="full mode: report the inputs that are there, run nothing")
    p.add_argument("--refresh-stale", action="store_true", help="full mode: also rerun the inputs that are stale")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help=f"full mode: do not start an input expected to take longer than M minutes (it stays missing "
                        f"and the report says how to make it; default {DEFAULT_MAX_MINUTES:g}: the token-dropping "
                        "replication, ~6 hours, runs only when asked, e.g. --max-minutes 400)")
    p.add_argument("--readme", action=argparse.BooleanOptionalAction, default=None,
                   help="rewrite the README's headline table from the new summary.json (default: only when "
                        "writing the checkout's report/ in full mode)")
    p.add_argument("--note", action="append", default=[], metavar="TEXT",
                   help="a line to put at the top of the report, e.g. how loaded the machine was (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print what would run, and exit")
    p.add_argument("--overwrite", action="store_true", help="write into an output directory holding other files")
    p.set_defaults(func=run)


def checkout_root() -> Path:
    """The source checkout this leanbert runs from (the report needs its benchmarks/ and experiments/)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "benchmarks").is_dir() or not (root / "experiments").is_dir():
        raise LeanbertError(f"no benchmarks/ and experiments/ beside {root / 'src'}; leanbert report runs from a "
                            "source checkout (pip install -e .)")
    return root


def _check_output(out: Path, root: Path, overwrite: bool) -> None:
    from leanbert.io import check_output_dir
    from leanbert.report.render import OWNED

    check_output_dir(out, "--output")
    resolved = out.resolve()
    if resolved == root or resolved in root.parents:
        raise ConfigError(f"--output {out} is the checkout or above it; give a directory for the report")
    if out.is_dir() and not overwrite:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in OWNED and not p.name.startswith("."))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise ConfigError(f"--output {out} holds files leanbert report did not write ({shown}); choose another "
                              "directory, or pass --overwrite")


def _run_jobs(jobs, root: Path, quick: bool, inputs: Path, log_dir: Path) -> list:
    from leanbert.report.regenerate import run_all

    # --quick: two toy runs at a time, one thread each (they measure nothing; the wall-clock matters);
    # full mode: one at a time, so that no benchmark shares the machine with another
    workers = min(2, os.cpu_count() or 1) if quick else 1
    return run_all(jobs, root, quick, inputs, log_dir, workers, report=lambda line: print(line, flush=True))


def run(args: argparse.Namespace) -> int:
    from leanbert.provenance import provenance
    from leanbert.report import collect, render
    from leanbert.report.regenerate import JOBS, full_commands, prune_work

    started = time.perf_counter()
    root = checkout_root()
    if args.quick and (args.no_run or args.refresh_stale or args.max_minutes is not None):
        raise ConfigError("--no-run, --refresh-stale and --max-minutes are for full mode; --quick runs everything")
    if args.quick and args.readme:
        raise ConfigError("--readme shows the committed report's numbers; it does not take a --quick run's")
    default_out = root / ("outputs/report-quick" if args.quick else "report")
    out = args.output if args.output is not None else default_out
    _check_output(out, root, args.overwrite)
    notes: list[str] = list(args.note)

    if args.quick:
        inputs = out / "inputs"
        if args.dry_run:
            for job in JOBS:
                print(f"{job.spec.title}: ~{job.quick_minutes:g} min")
            return 0
        if inputs.is_dir():  # a toy run starts fresh (the experiments would reuse their finished runs)
            if any(inputs.iterdir()) and not (inputs / "logs").is_dir():
                raise ConfigError(f"{inputs} holds files an earlier leanbert report --quick did not write; choose "
                                  "another --output, or remove it")
            shutil.rmtree(inputs)
        inputs.mkdir(parents=True)
        print(f"leanbert report --quick: {len(JOBS)} runs into {inputs}, two at a time (expected ~"
              f"{sum(j.quick_minutes for j in JOBS) / 2:.0f} min on 2 cores)", flush=True)
        outcomes = _run_jobs(JOBS, root, True, inputs, inputs / "logs")
        records = collect.collect(root, inputs)
        freed = prune_work(inputs)
        print(f"removed the toy runs' work directories ({freed / 1e6:.0f} MB); their JSON and logs stay", flush=True)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        notes.append(f"Toy run (--quick): every benchmark in a quick setting and a toy version of every experiment, "
                     f"{(time.perf_counter() - started) / 60:.1f} min in all"
                     + (f", load average {load:.1f} on {os.cpu_count()} cores at the end" if load is not None else "")
                     + "; the numbers check that each stage runs, they do not measure it.")
    else:
        records = collect.collect(root)
        bad = [r for r in records if r.status == collect.UNREADABLE]
        if bad:
            raise LeanbertError(f"{bad[0].path} {bad[0].reason}" + (f" (and {len(bad) - 1} more unreadable inputs)"
                                                                    if len(bad) > 1 else "")
                                + "; rerun what writes it (leanbert report --dry-run lists the commands) or remove it")
        wanted = {r.spec.key for r in records if not r.spec.superseded and (
            r.status == collect.MISSING or (args.refresh_stale and r.status == collect.STALE))}
        jobs = [j for j in JOBS if j.key in wanted]
        limit = DEFAULT_MAX_MINUTES if args.max_minutes is None else args.max_minutes
        for j in [j for j in jobs if j.full_minutes > limit and not args.no_run]:
            line = (f"Not run (expected ~{j.full_minutes:g} min > --max-minutes {limit:g}): "
                    f"`{j.spec.path}`; to make it: `{'` then `'.join(full_commands(j, root))}`.")
            notes.append(line)
            print(line.replace("`", ""))
        jobs = [j for j in jobs if j.full_minutes <= limit or args.no_run]
        if args.dry_run and not jobs:
            print("nothing to run: every input is there" + ("" if args.refresh_stale else
                                                           " (stale ones rerun with --refresh-stale)"))
        if args.no_run or args.dry_run:
            for j in jobs:
                print(f"{'would run' if args.dry_run else 'not run (--no-run)'}: {j.spec.path} (~{j.full_minutes:g} min): "
                      + " then ".join(full_commands(j, root)))
            if args.dry_run:
                return 0
            jobs = []
        outcomes = _run_jobs(jobs, root, False, root, out / "inputs" / "logs") if jobs else []
        if jobs:
            records = collect.collect(root)
    failed = [o for o in outcomes if not o.ok]
    notes += [f"Run failed: {o.message}" for o in failed]

    prov = provenance(root)
    report = render.build(records, "quick" if args.quick else "full", prov["commit"], prov["dirty"], notes)
    written = render.write(report, out, root)
    counts: dict[str, int] = {}
    for r in records:
        counts[r.status] = counts.get(r.status, 0) + 1
    figures = sum(1 for s in report.sections if s.image)
    print(f"wrote {out / 'report.md'}, {out / 'report.html'} and {out / 'summary.json'} ({figures} figures, "
          f"{len(written)} files); inputs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))

    readme = root / "README.md"
    if args.readme or (args.readme is None and not args.quick and out.resolve() == (root / "report").resolve()):
        from leanbert.io import atomic_write_text

        try:
            text = render.replace_readme_block(readme.read_text(encoding="utf-8"),
                                               render.headline_markdown(report.summary))
        except ValueError as e:
            raise ConfigError(f"{readme}: {e}; add the two marker lines where the table goes") from None
        atomic_write_text(readme, text)
        print(f"updated the headline table in {readme}")
    took = time.perf_counter() - started
    print(f"leanbert report{' --quick' if args.quick else ''} took {took / 60:.1f} min", file=sys.stderr)
    if failed:
        raise RunFailed(f"{len(failed)} of {len(outcomes)} runs failed (first: {failed[0].message}); the report "
                        "lists their inputs as missing")
    return 0
