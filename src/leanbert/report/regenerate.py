"""The commands that produce each input of the report, in full mode and at toy scale, with the
time each is expected to take on the project's 2-core CPU machine (measured there, loaded by
other jobs; a quiet or bigger machine is faster). --quick runs two toy runs at a time, one thread
each: about 6 minutes in all there.

- Full mode (``leanbert report``) runs the full command of every input that is missing (and of
  the stale ones with ``--refresh-stale``), writing where the benchmarks and experiments
  normally write (``benchmarks/results/``, ``experiments/*/``), then renders.
- ``--quick`` runs every benchmark in a quick setting and a toy version of every experiment into
  ``DIR/inputs/`` (never over the committed results), then renders from those. The toy runs
  check that every stage still runs and produces its JSON; their numbers mean little.

Commands are argument lists run in the checkout with the running Python (``python -m leanbert``
for the benchmarks). A job may have several commands, run one after the other (or at once,
``parallel``: the token-dropping experiment's two workers share its work directory).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leanbert.report.collect import SPECS, InputSpec


@dataclass(frozen=True)
class Job:
    """How to produce one input. ``full`` / ``quick`` map (python, root, inputs dir) to the
    commands; minutes are the expected run time on the 2-core machine."""

    key: str
    full: Callable[[str, Path], list[list[str]]]
    quick: Callable[[str, Path, Path], list[list[str]]]
    full_minutes: float
    quick_minutes: float
    parallel: bool = False  # the full commands run at once
    note: str = ""
    after: str | None = None  # in --quick, starts when this job has finished (it reads its output)

    @property
    def spec(self) -> InputSpec:
        return SPECS[self.key]


def _bench(name: str, quick_args: list[str], full_minutes: float, quick_minutes: float, note: str = "") -> Job:
    spec = SPECS[f"bench:{name}"]
    return Job(
        spec.key,
        lambda py, root: [[py, "-m", "leanbert", "bench", name]],
        lambda py, root, inp: [[py, "-m", "leanbert", "bench", name, *quick_args, "--output",
                                str(inp / spec.quick_path)]],
        full_minutes, quick_minutes, note=note)


def _script(spec_key: str, *args: str) -> Callable[[str, Path], list[list[str]]]:
    return lambda py, root: [[py, SPECS[spec_key].script, *args]]


JOBS: tuple[Job, ...] = (
    _bench("pretrain", ["--shapes", "bert-small", "--batch", "4", "--seq", "64", "--rounds", "2", "--steps", "1"],
           8, 0.6),
    _bench("token-dropping", ["--shapes", "4x128", "--pairs", "3", "--warmup", "1"], 3, 0.3),
    _bench("distill", ["--layers", "2", "--batch", "2", "--seq", "64", "--rounds", "2"], 2, 0.2),
    _bench("finetune", ["--quick"], 10, 0.7),
    _bench("inference", ["--quick", "--no-optimum"], 8, 1.6,
           note="full mode builds optimum's venv on first use (benchmarks/.venv-optimum, a few minutes, PyPI)"),
    _bench("data", ["--quick"], 4, 0.4),
    Job("exp:token_dropping",
        lambda py, root: [[py, SPECS["exp:token_dropping"].script, "--family", "mobilebert", "--threads", "1"]] * 2,
        lambda py, root, inp: [[py, SPECS["exp:token_dropping"].script, "--family", "mobilebert",
                                "--work", str(inp / "token_dropping"),
                                "--quick", "--threads", "1", "--steps", "20", "--eval-every", "10", "--books", "2",
                                "--layers", "4", "--seeds", "0,1", "--variants", "none,token,random",
                                "--no-finetune"]],  # its GLUE fine-tuning (full MRPC and CoLA) would take 3 min more
        360, 1.3, parallel=True,
        note="two workers, one per core (run.py's docstring); 14 pretraining runs of 2,000 steps (about 30 "
             "minutes each at one thread) and 84 GLUE fine-tunings: about 6 hours; finished runs' records are "
             "committed, so it continues across sessions"),
    Job("exp:knowledge_transfer",
        _script("exp:knowledge_transfer", "--seeds", "0,1"),
        lambda py, root, inp: [[py, SPECS["exp:knowledge_transfer"].script, "--quick", "--work",
                                str(inp / "knowledge_transfer")]],
        30, 2.5, note="the committed results are from --seeds 0,1 (about 15 minutes per seed)"),
    Job("exp:deployment",
        lambda py, root: [[py, "-m", "leanbert", "bench", "inference", "--output", "experiments/deployment/inference.json"],
                          [py, SPECS["exp:deployment"].script]],
        lambda py, root, inp: [[py, str(root / SPECS["exp:deployment"].script), "--bench", str(inp / SPECS["bench:inference"].quick_path),
                                "--work", str(inp / "deployment" / "work"), "--seeds", "1", "--tasks", "sst2",
                                "--sst2-train", "64", "--epochs", "1", "--jobs", "1",
                                "--glue", str(root.parent / "shared" / "data" / "glue"),
                                "--output", str(inp / SPECS["exp:deployment"].quick_path)]],
        30, 2.3, note="the benchmark with optimum and BERT-base (background jobs paused), then fine-tuning "
                      "MiniLM on SST-2 and MRPC with 2 seeds, evaluating 6 ways, and QAT where int8 loses > 1 point", after="bench:inference"),
    Job("exp:activation_checkpointing",
        _script("exp:activation_checkpointing"),
        lambda py, root, inp: [[py, SPECS["exp:activation_checkpointing"].script, "--batch", "1", "--length", "128",
                                "--steps", "1", "--output", str(inp / SPECS["exp:activation_checkpointing"].quick_path)]],
        3, 0.7),
)
JOB_OF = {j.key: j for j in JOBS}


def show(cmd: list[str], root: Path) -> str:
    """A command as a user would type it in the checkout."""
    out = []
    for i, arg in enumerate(cmd):
        if i == 0 and arg == sys.executable:
            arg = "python"
        elif root.is_absolute() and arg.startswith(str(root) + os.sep):
            arg = str(Path(arg).relative_to(root))
        out.append(arg if arg and " " not in arg else repr(arg))
    text = " ".join(out)
    return text.replace("python -m leanbert ", "leanbert ")


def full_commands(job: Job, root: Path) -> list[str]:
    """The full-mode commands as typed in the checkout (a parallel job's copies said once)."""
    cmds = [show(c, root) for c in job.full(sys.executable, root)]
    if job.parallel:
        return [f"{c} (x{cmds.count(c)}, at once)" if cmds.count(c) > 1 else c for c in dict.fromkeys(cmds)]
    return cmds


@dataclass
class Outcome:
    key: str
    ok: bool
    seconds: float
    message: str = ""


def run_job(job: Job, root: Path, quick: bool, inputs: Path, log_dir: Path, threads: int | None = None) -> Outcome:
    """Run one job's commands in the checkout; stdout and stderr go to ``log_dir/<key>.log``.
    A failure is an :class:`Outcome` with the last line of its output, never an exception.
    ``threads``: OMP_NUM_THREADS for the commands, unless the caller's environment sets it."""
    py = sys.executable
    commands = job.quick(py, root, inputs) if quick else job.full(py, root)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{job.key.replace(':', '-')}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    # a toy run that hangs must not hang the report (or CI): a generous limit per command
    timeout = max(300.0, 6 * 60 * job.quick_minutes) if quick else None
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        if job.parallel and not quick:
            procs = [subprocess.Popen(c, cwd=root, stdout=out, stderr=subprocess.STDOUT, env=env) for c in commands]
            codes = [p.wait() for p in procs]
            failed = next(((c, code) for c, code in zip(commands, codes, strict=True) if code), None)
        else:
            failed = None
            for cmd in commands:
                out.write(f"$ {show(cmd, root)}\n")
                out.flush()
                try:
                    code = subprocess.run(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT, env=env,
                                          timeout=timeout).returncode
                except subprocess.TimeoutExpired:
                    code = f"timed out after {timeout:.0f} s"
                if code:
                    failed = (cmd, code)
                    break
    seconds = time.perf_counter() - started
    if failed is None:
        return Outcome(job.key, True, seconds)
    tail = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()][-1:]
    code = failed[1] if isinstance(failed[1], str) else f"exit {failed[1]}"
    return Outcome(job.key, False, seconds, f"`{show(failed[0], root)}` failed ({code}): "
                                            f"{tail[0][:300] if tail else 'no output'} (log: {log})")


def fill_provenance(path: Path, root: Path, since: float) -> bool:
    """Give a JSON that a job just wrote (``path``, modified after ``since``) the checkout's
    provenance if it has none or none with a commit (``measure.py`` writes none; the redirected
    deployment run records its redirected folder's). True when it did."""
    import json

    from leanbert.io import atomic_write_json
    from leanbert.provenance import provenance

    try:
        if path.stat().st_mtime < since:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    prov = data.get("provenance") if isinstance(data, dict) else None
    if not isinstance(data, dict) or (isinstance(prov, dict) and prov.get("commit")):
        return False
    data["provenance"] = {**provenance(root), "recorded_by": "leanbert report, which ran the script in this checkout"}
    atomic_write_json(path, data)
    return True


def run_all(jobs: list[Job], root: Path, quick: bool, inputs: Path, log_dir: Path, workers: int = 1,
            report: Callable[[str], None] = print) -> list[Outcome]:
    """Run ``jobs``, ``workers`` at a time, give what they wrote a provenance block where it has
    none (:func:`fill_provenance`), and return their outcomes in the order of ``jobs``. Full mode
    runs them in order; --quick runs the longest first, a job with ``after`` once that job is
    done, each with one thread."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
    from threading import Lock

    lock = Lock()
    keys = {j.key for j in jobs}
    results: dict[str, Outcome] = {}

    def one(job: Job) -> Outcome:
        expected = job.quick_minutes if quick else job.full_minutes
        with lock:
            report(f"start: {job.spec.title} (expected ~{expected:g} min)")
        since = time.time()
        # toy runs take one thread each: on a busy 2-core machine a second OpenMP thread that waits
        # for a core makes small models several times slower (the knowledge-transfer toy: 13 s -> 103 s)
        outcome = run_job(job, root, quick, inputs, log_dir, threads=1 if quick else None)
        if outcome.ok:
            fill_provenance(inputs / job.spec.quick_path if quick else root / job.spec.path, root, since)
        with lock:
            report(f"[{len(results) + 1}/{len(jobs)}] {'done' if outcome.ok else 'FAILED'} in {outcome.seconds:.0f} s: "
                   f"{job.spec.title}" + ("" if outcome.ok else f": {outcome.message}"))
        return outcome

    def ready(job: Job) -> bool:
        return not quick or job.after is None or job.after not in keys or job.after in results

    pending = sorted(jobs, key=lambda j: -j.quick_minutes) if quick else list(jobs)
    running: dict[Any, Job] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        while pending or running:
            for job in [j for j in pending if ready(j)][: max(1, workers) - len(running)]:
                pending.remove(job)
                running[pool.submit(one, job)] = job
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                results[running.pop(future).key] = future.result()
    return [results[job.key] for job in jobs]


def prune_work(inputs: Path) -> int:
    """Remove the toy runs' work directories under ``inputs`` (data, checkpoints, fine-tuned
    models, ONNX exports: several hundred MB) once their JSON is written; the JSON, plots, logs and
    the token-dropping run's small ``records/`` stay. Returns the bytes freed."""
    import shutil as _shutil

    keep = {"logs", "benchmarks", "records"}
    freed = 0
    for experiment in (p for p in inputs.iterdir() if p.is_dir() and p.name not in keep):
        for child in experiment.iterdir():
            if child.is_dir() and child.name not in keep:
                freed += sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
                _shutil.rmtree(child, ignore_errors=True)
    return freed
