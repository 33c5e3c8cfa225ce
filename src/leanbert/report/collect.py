"""Collect the report's inputs: one collector per benchmark or experiment JSON.

Each input is an :class:`InputSpec` (where its JSON lies, which code it depends on) and becomes a
:class:`Record`: its status, the figures the report shows (a small dict per collector, its keys
documented there), the setting it was measured with ("measured on <cpu>, torch x, <model>,
<data>, <steps>, <seeds>") and the paper's number beside it where SPEC.md or the README give one.

Status (:func:`freshness`), from the JSON's ``provenance`` block (``leanbert.provenance``):

- ``ok``: made at the checkout's HEAD, or at a commit since which the code it depends on did not
  change (``git diff <commit> HEAD -- src/leanbert <its script>``; the report's own code and
  ``provenance.py``, which only writes where a result was made, do not count, nor do changes to
  Python files that leave their code as it was: docstrings and comments), from a clean tree;
- ``stale``: that code changed since, or the result was made from a tree with uncommitted changes;
- ``cannot tell``: no provenance (or no commit in it), a commit this clone lacks, or no git here;
- ``missing``: no file; ``unreadable``: not JSON, or not a JSON object; ``incomplete``: JSON that
  lacks a field the collector needs (written by an older or newer version of its script);
- ``superseded``: an old run kept for reference (the token-dropping experiment's ``*_small``).
"""

from __future__ import annotations

import ast
import json
import shutil
import statistics
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, STALE, UNKNOWN, MISSING = "ok", "stale", "cannot tell", "missing"
UNREADABLE, INCOMPLETE, SUPERSEDED = "unreadable", "incomplete", "superseded"
USABLE = (OK, STALE, UNKNOWN, SUPERSEDED)  # statuses whose figures the report shows

# The code a result depends on, besides its own script. The report's own modules and the
# provenance record do not change any measured figure, so a change there does not make results stale.
LIBRARY = ("src/leanbert",)
NOT_DEPENDED_ON = ("src/leanbert/report", "src/leanbert/cli/report.py", "src/leanbert/provenance.py")

# The papers' numbers (SPEC.md and README.md), put beside ours.
PAPER = {
    "token_dropping": "Hou et al. 2022: 25% less pretraining cost at similar GLUE and SQuAD scores",
    "token_dropping_flops": 0.254,  # SPEC Sec. 2: BERT-base, n=512, k=256, forward FLOPs 96.64 -> 72.07 G
    "mobilebert_size_ratio": 4.3,
    "mobilebert_speed_ratio": 5.5,
    "mobilebert_pixel4_ms": 62.0,
    "mobilebert_glue": 77.7,
    "mobilebert": "Sun et al. 2020: 4.3x smaller and 5.5x faster than BERT-base, GLUE 77.7 (0.6 below "
                  "BERT-base), 62 ms on a Pixel 4 (sequence length 128)",
}


@dataclass(frozen=True)
class InputSpec:
    """One expected input: ``path`` in the checkout (full mode), ``quick_path`` under
    ``DIR/inputs`` (``--quick``), and the paths whose change makes it stale."""

    key: str
    kind: str  # "benchmark" or "experiment"
    title: str
    path: str
    quick_path: str
    script: str
    superseded: bool = False  # an old run, shown for reference only

    @property
    def depends_on(self) -> tuple[str, ...]:
        return (*LIBRARY, self.script)


def _bench(name: str, title: str) -> InputSpec:
    module = name.replace("-", "_")
    return InputSpec(f"bench:{name}", "benchmark", title, f"benchmarks/results/{module}.json",
                     f"benchmarks/{module}.json", f"benchmarks/bench_{module}.py")


INPUTS: tuple[InputSpec, ...] = (
    _bench("pretrain", "pretraining step speed against transformers"),
    _bench("token-dropping", "token dropping: step-time saving against the FLOP saving"),
    _bench("distill", "knowledge-transfer step against its parts"),
    _bench("finetune", "fine-tuning speed against a transformers loop"),
    _bench("inference", "MobileBERT inference, PyTorch and ONNX Runtime, fp32 and int8"),
    _bench("data", "data preparation and loader throughput"),
    InputSpec("exp:token_dropping", "experiment", "token dropping replication, MobileBERT-shaped (held-out loss, GLUE)",
              "experiments/token_dropping/mobilebert/results.json", "token_dropping/results.json",
              "experiments/token_dropping/run.py"),
    InputSpec("exp:token_dropping_bert", "experiment",
              "token dropping, BERT-shaped (scale criterion not met; superseded)",
              "experiments/token_dropping/results.json", "token_dropping_bert/results.json",
              "experiments/token_dropping/run.py", superseded=True),
    InputSpec("exp:token_dropping_small", "experiment", "token dropping, first run (too small; superseded)",
              "experiments/token_dropping/results_small.json", "token_dropping/results_small.json",
              "experiments/token_dropping/run.py", superseded=True),
    InputSpec("exp:knowledge_transfer", "experiment", "MobileBERT student: distilled against from scratch",
              "experiments/knowledge_transfer/results.json", "knowledge_transfer/results.json",
              "experiments/knowledge_transfer/run.py"),
    InputSpec("exp:deployment", "experiment", "deployment: size, latency, int8 accuracy",
              "experiments/deployment/results.json", "deployment/results.json", "experiments/deployment/run.py"),
    InputSpec("exp:activation_checkpointing", "experiment", "activation checkpointing: memory and time",
              "experiments/activation_checkpointing/results.json", "activation_checkpointing/results.json",
              "experiments/activation_checkpointing/measure.py"),
)
SPECS = {s.key: s for s in INPUTS}


@dataclass
class Record:
    """What the report knows about one input."""

    spec: InputSpec
    path: str  # as shown in the report
    status: str
    reason: str = ""
    commit: str | None = None
    created: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    setting: str = ""
    paper: str = ""
    # parts of the input measured at another commit than the file's (e.g. the deployment experiment's
    # accuracy kept by --skip-accuracy): {part: (status, commit)}
    parts: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        return self.status in USABLE


# ----------------------------------------------------------------------------------------- git


class Git:
    """Read-only questions to the git checkout at ``root`` (None when git cannot answer)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.available = shutil.which("git") is not None
        self._head = self._run("rev-parse", "HEAD") if self.available else None

    def _run(self, *args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    @property
    def head(self) -> str | None:
        return self._head

    def has_commit(self, commit: str) -> bool:
        return self._run("cat-file", "-e", f"{commit}^{{commit}}") is not None

    def changed(self, commit: str, paths: tuple[str, ...]) -> list[str] | None:
        """Files under ``paths`` whose code differs between ``commit`` and HEAD (None: git
        failed); a Python file whose docstrings or comments alone changed does not count."""
        excludes = [f":(exclude){p}" for p in NOT_DEPENDED_ON]
        out = self._run("diff", "--name-only", commit, "HEAD", "--", *paths, *excludes)
        if out is None:
            return None
        return [path for path in out.splitlines() if path and not self._same_code(commit, path)]

    def _same_code(self, commit: str, path: str) -> bool:
        if not path.endswith(".py"):
            return False
        old, new = self._run("show", f"{commit}:{path}"), self._run("show", f"HEAD:{path}")
        if old is None or new is None:  # added or removed
            return False
        code = code_of(old)
        return code is not None and code == code_of(new)

    def last_commit_of(self, path: str) -> tuple[str, str] | None:
        """(commit, date) of the last commit that touched ``path`` (a committed file)."""
        out = self._run("log", "-1", "--format=%H %cI", "--", path)
        if not out:
            return None
        commit, _, date = out.partition(" ")
        return commit, date


def code_of(source: str) -> str | None:
    """The AST of a Python module without its docstrings, as text (comments are not in the AST);
    None if it does not parse. Two sources with the same ``code_of`` run the same code."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                node.body = node.body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of ``roots`` or lies in one of them (repository-relative)."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in roots)


def freshness(prov: dict[str, Any] | None, spec: InputSpec, git: Git) -> tuple[str, str]:
    """(status, reason) of a result with provenance ``prov`` (see the module docstring)."""
    commit = (prov or {}).get("commit")
    if not prov:
        return UNKNOWN, "no provenance block: the commit it was made at is not recorded"
    if not commit:
        return UNKNOWN, "its provenance has no commit (made outside a git checkout)"
    short = commit[:7]
    if prov.get("dirty"):
        paths = prov.get("dirty_paths")
        if paths is None:  # written before provenance listed them
            return STALE, f"made from uncommitted changes on top of {short}"
        touched = [p for p in paths if _under(p, spec.depends_on) and not _under(p, NOT_DEPENDED_ON)]
        if touched:
            more = f" and {len(touched) - 2} more" if len(touched) > 2 else ""
            return STALE, f"made from uncommitted changes to {', '.join(touched[:2])}{more} on top of {short}"
    if not git.available:
        return UNKNOWN, f"git is not available here, so {short} cannot be compared with this checkout"
    if git.head is None:
        return UNKNOWN, f"{git.root} is not a git checkout, so {short} cannot be compared with it"
    if commit == git.head:
        return OK, "made at HEAD"
    if not git.has_commit(commit):
        return UNKNOWN, f"commit {short} is not in this clone"
    changed = git.changed(commit, spec.depends_on)
    if changed is None:
        return UNKNOWN, f"git could not compare {short} with HEAD"
    if changed:
        more = f" and {len(changed) - 2} more" if len(changed) > 2 else ""
        return STALE, f"code changed since {short}: {', '.join(changed[:2])}{more}"
    return OK, f"made at {short}; {', '.join(spec.depends_on)} unchanged since"


# ------------------------------------------------------------------------------------- helpers


def machine_text(prov: dict[str, Any] | None, fallback: dict[str, Any] | None = None) -> str:
    """'measured on <cpu>, N cores, torch x' from the provenance block, else from the JSON's own
    fields; 'machine not recorded' when neither names it."""
    m = (prov or {}).get("machine") or {}
    versions = (prov or {}).get("versions") or {}
    fb = fallback or {}
    cpu = m.get("cpu") or fb.get("cpu_model") or fb.get("processor")
    cores = m.get("cores") or fb.get("cpus") or fb.get("cpu_count")
    torch = versions.get("torch") or fb.get("torch") or (fb.get("versions") or {}).get("torch")
    if not cpu and not cores:
        return "machine not recorded" + (f", torch {torch}" if torch else "")
    parts = [cpu or "CPU not recorded"] + ([f"{cores} cores"] if cores else []) + ([f"torch {torch}"] if torch else [])
    return "measured on " + ", ".join(parts)


def threads_text(n: Any) -> str:
    """A benchmark's recorded thread setting in words."""
    if isinstance(n, list):  # bench inference: every candidate at each count, reported at its fastest
        return f"each candidate at its fastest of {' or '.join(str(t) for t in n)} threads"
    return "threads not recorded" if n is None else f"{n} thread{'s' if n != 1 else ''}"


def spread(values: list[float]) -> dict[str, Any]:
    """n, mean, median, min, max of ``values`` (empty dict for none)."""
    if not values:
        return {}
    return {"n": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "min": min(values), "max": max(values), "values": list(values)}


def _curves(runs: list[dict[str, Any]], variant_key: str = "variant") -> list[dict[str, Any]]:
    return [{"variant": r[variant_key], "seed": r.get("seed"),
             "points": [{"step": p.get("step"), "mlm_loss": p["mlm_loss"], "flops": p.get("flops", 0.0),
                         "seconds": p.get("seconds", 0.0)} for p in r["curve"]]} for r in runs]


# ---------------------------------------------------------------------------------- collectors
# Each takes the parsed JSON and its provenance and returns (figures, setting, paper).

Collected = tuple[dict[str, Any], str, str]


def collect_pretrain(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``shapes``: one per shape {shape, batch, seq_len, model_alone_fp32,
    full_path_bf16_fused, candidates: {name: {tokens_per_s, mfu, speedup}}}."""
    shapes = []
    for run in d["runs"]:
        cands = {name: {"tokens_per_s": v["tokens_per_s"], "mfu": v["mfu"], "speedup": v["speedup_vs_transformers"]}
                 for name, v in run["results"].items()}
        shapes.append({"shape": run["shape"], "batch": run["batch"], "seq_len": run["seq_len"],
                       "model_alone_fp32": run["like_for_like"]["model_alone_fp32"],
                       "full_path_bf16_fused": run["like_for_like"]["full_path_bf16_fused"], "candidates": cands,
                       "rounds": run["rounds"], "steps_per_round": run["steps_per_round"]})
    first = d["runs"][0] if d["runs"] else {}
    setting = (f"{machine_text(prov, d)}, {threads_text(d.get('threads'))}; "
               f"{', '.join(s['shape'] for s in shapes)} (random init), batch {first.get('batch')} x "
               f"{first.get('seq_len')}, synthetic token ids, 20 predictions per sequence; "
               f"{first.get('rounds')} interleaved rounds x {first.get('steps_per_round')} steps per candidate "
               "(medians); one fixed batch (seed 0)")
    return {"shapes": shapes, "threads": d.get("threads")}, setting, "no paper figure: the papers do not report step speed against transformers"


def collect_token_dropping_bench(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``rows``: per shape {shape, measured_saving, paired_saving, cpu_time_saving,
    flop_saving, quotient, meets_target}; ``target``, ``all_met``, ``model``."""
    rows = [{"shape": r["shape"], "measured_saving": r["measured_saving"],
             "paired_saving": r.get("measured_saving_paired_median"), "cpu_time_saving": r.get("cpu_time_saving"),
             "flop_saving": r["flop_saving"], "quotient": r["quotient"], "meets_target": r["meets_target"],
             "step_s_full": r["step_s_full"], "step_s_drop": r["step_s_drop"]} for r in d["results"]]
    m = d.get("model", {})
    model = (f"{m.get('model_type', 'bert')} {m.get('num_layers', '?')} layers, hidden {m.get('hidden_size', '?')}, "
             f"{m.get('num_heads', '?')} heads")
    env = d.get("environment", {})
    pairs = len(d["results"][0].get("step_s_full_all", [])) if d["results"] else 0
    setting = (f"{machine_text(prov, env)}, {threads_text(env.get('threads'))}, {env.get('device', 'cpu')}; "
               f"{model}, keep {d.get('keep')}; shapes {', '.join(r['shape'] for r in rows)}; synthetic token ids; "
               f"{pairs} interleaved (drop, full) step pairs (medians); the seed is not recorded (default 0)")
    figures = {"rows": rows, "target": d.get("target_quotient"), "all_met": d.get("all_met"), "model": model,
               "keep": d.get("keep")}
    return figures, setting, f"{PAPER['token_dropping']}; FLOP ideal for BERT-base, n=512, k=256: -25.4%"


def collect_distill(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``stages``: {layer, ratio, meets_target}; ``target``, ``worst``."""
    stages = [{"layer": s["layer"], "ratio": s["step_over_parts"], "meets_target": s["meets_target"],
               "transfer_step_s": s["transfer_step_s"]} for s in d["stages"]]
    setting = (f"{machine_text(prov, d)}, {threads_text(d.get('threads'))}; teacher {d.get('teacher')}, "
               f"student {d.get('student')}, {d.get('layers')} layers each, batch {d.get('batch')} x "
               f"{d.get('seq_len')}, teacher in bf16: {d.get('teacher_bf16')}; synthetic token ids; medians of "
               "interleaved rounds")
    worst = max((s["ratio"] for s in stages), default=None)
    return ({"stages": stages, "target": d.get("target"), "worst": worst}, setting,
            "no paper figure (project target: a transfer step costs at most 1.15x its parts)")


def collect_finetune(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``ratios``: {pair: {train steps, whole call}}; ``examples_per_s``: {candidate: x};
    ``target``: {pair, target, value, met}."""
    ratios = {pair: {"train steps": r.get("train steps"), "whole call": r.get("whole call")}
              for pair, r in d["ratios"].items()}
    eps = {name: c["examples_per_s"] for name, c in d["candidates"].items()}
    targets = [{"pair": p, **t} for p, t in d.get("targets", {}).items()]
    s, model = d["settings"], d.get("model", {})
    load = (d.get("machine") or {}).get("load_average_mean")
    setting = (f"{machine_text(prov, d.get('machine'))}, {threads_text(s.get('threads'))}"
               + (f", load average {load:.1f}" if load is not None else "") + "; "
               f"{model.get('name')} ({(model.get('parameters') or 0) / 1e6:.1f} M parameters); "
               f"{s.get('task')}: the first {s.get('examples')} training examples, {s.get('epochs')} epoch, batch "
               f"{s.get('batch')}, max length {s.get('max_seq_length')}, {s.get('steps')} steps; "
               f"{s.get('rounds')} round(s); seed {s.get('seed')}" + (" (--quick)" if s.get("quick") else ""))
    return ({"ratios": ratios, "examples_per_s": eps, "targets": targets}, setting,
            "no paper figure (project target: leanbert fp32 >= 1.5x a transformers loop)")


def collect_inference(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``p50_ms`` / ``file_mb`` per candidate at batch 1 x 128; ``targets``: {name:
    {target, against, best_path, value, met}}; ``missing``: {candidate: why}; ``layers``."""
    lat = d["latency"].get("b1_l128", {})
    s = d["settings"]
    layers = d.get("setup", {}).get("mobilebert_config", {}).get("num_hidden_layers")
    figures = {"p50_ms": {n: v["p50_ms"] for n, v in lat.items()},
               "file_mb": {n: c["file_bytes"] / 1e6 for n, c in d["candidates"].items()},
               "precision": {n: c["precision"] for n, c in d["candidates"].items()},
               "model": {n: c["model"] for n, c in d["candidates"].items()},
               "targets": d.get("targets", {}), "missing": d.get("missing", {}), "layers": layers}
    load = (d.get("machine") or {}).get("load_average")
    setting = (f"{machine_text(prov, d.get('machine'))}, {threads_text(s.get('threads'))} (torch and ONNX Runtime)"
               + (f", load average {load:.1f} at the end" if load is not None else "") + "; MobileBERT ({layers} layers, random init, transformers' default config) and BERT-base; "
               f"batch 1 x {', '.join(str(n) for n in s.get('lengths', []))}, {s.get('rounds')} interleaved rounds "
               f"(p50); random token ids, seed {s.get('seed')}" + (" (--quick)" if s.get("quick") else ""))
    return figures, setting, PAPER["mobilebert"]


def collect_data(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: MB/s of the reference and of ``leanbert data prepare`` (default, pairs), their
    quotients; loader batches/s."""
    t, load = d["tokenisation"], d.get("loader", {})
    figures = {"reference_mb_s": t["reference_mb_s"], "prepare_mb_s": t["prepare_mb_s"],
               "prepare_vs_reference": t["prepare_vs_reference"],
               "pairs_vs_reference": t.get("prepare_pairs_vs_reference"),
               "loader_batches_s": load.get("loader_prefetch_2_batches_s")}
    setting = (f"{machine_text(prov, d.get('machine'))}; {d.get('books')} Gutenberg books "
               f"({t.get('corpus_mb', 0):.1f} MB), tokenizer {d.get('tokenizer')}; best of {t.get('rounds')} "
               f"interleaved round(s); loader batch {d.get('batch_size')} x 128")
    return figures, setting, "no paper figure (reference: what a tokenizers user writes, encode_batch)"


def _glue_scores(run: dict[str, Any]) -> dict[str, float]:
    """The best-learning-rate GLUE dev score per task of a token-dropping run."""
    return {task: max(by_lr.values()) for task, by_lr in run.get("glue", {}).items() if by_lr}


def collect_token_dropping(d: dict[str, Any], prov: dict | None) -> Collected:
    """The token-dropping experiment (``run.py``'s results.json). figures: ``variants``: {variant:
    {seeds, final_loss (spread), flop_saving, time_saving, glue: {task: spread}}}; ``curves``;
    ``scale_criterion``; ``complete``."""
    summary = d["summary"]["variants"]
    variants = {}
    for v, row in summary.items():
        runs = [r for r in d["runs"] if r["variant"] == v]
        glue: dict[str, list[float]] = {}
        for r in runs:
            for task, score in _glue_scores(r).items():
                glue.setdefault(task, []).append(score)
        variants[v] = {"seeds": row["seeds"], "steps": row.get("steps"),
                       "final_loss": spread([r["final_mlm_loss"] for r in runs]),
                       "flop_saving": row.get("flop_saving_vs_none"),
                       "time_saving": row.get("calibrated_time_saving_vs_none", row.get("measured_time_saving_vs_none")),
                       "glue": {t: spread(x) for t, x in glue.items()}}
    s = d["settings"]
    family = "MobileBERT-shaped" if s.get("family") == "mobilebert" else "BERT"
    setting = (f"{machine_text(prov)}; {family} {s.get('layers')} layers x {s.get('hidden')} "
               f"({s.get('heads')} heads), {s.get('steps')} steps of {s.get('batch')} x {s.get('length')} tokens, "
               f"lr {s.get('lr')}, keep {s.get('keep')}; {s.get('books')} Gutenberg books, {s.get('vocab')}-id "
               f"WordPiece; seeds {s.get('seeds')}; "
               + ("no fine-tuning (--no-finetune)" if s.get("no_finetune") else
                  f"GLUE dev (SST-2 first {s.get('sst2_train')} examples, MRPC, CoLA), best of lr {s.get('ft_lrs')}")
               + (" (--quick)" if s.get("quick") else ""))
    figures = {"variants": variants, "curves": _curves(d["runs"]), "complete": d.get("complete"),
               "scale_criterion": d["summary"].get("scale_criterion")}
    return figures, setting, PAPER["token_dropping"]


def collect_token_dropping_small(d: dict[str, Any], prov: dict | None) -> Collected:
    """The first, too small token-dropping run (``results_small.json``, an older format)."""
    variants = {}
    for v, row in d["summary"].items():
        runs = [r for r in d["runs"] if r["variant"] == v]
        glue = {"sst2": spread([r["sst2"]["accuracy"] for r in runs if "sst2" in r]),
                "mrpc": spread([r["mrpc"]["f1"] for r in runs if "mrpc" in r])}
        variants[v] = {"seeds": [r["seed"] for r in runs], "steps": d["settings"].get("steps"),
                       "final_loss": spread([r["final_mlm_loss"] for r in runs]),
                       "flop_saving": row.get("flop_saving_vs_none"), "time_saving": row.get("time_saving_vs_none"),
                       "glue": {t: x for t, x in glue.items() if x}}
    s = d["settings"]
    setting = (f"{machine_text(prov)}; BERT {s.get('layers')} layers x {s.get('hidden')} ({s.get('heads')} heads), "
               f"{s.get('steps')} steps of {s.get('batch')} x {s.get('length')} tokens, lr {s.get('lr')}, keep "
               f"{s.get('keep')}; {s.get('books')} Gutenberg books, {s.get('vocab')}-id WordPiece; "
               f"seeds {sorted({r['seed'] for r in d['runs']})}")
    return {"variants": variants, "curves": _curves(d["runs"]), "complete": True}, setting, PAPER["token_dropping"]


def collect_knowledge_transfer(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``variants``: {name: {final_loss (spread over seeds), train_flops, train_seconds,
    steps, sst2 (spread of accuracy), mrpc (spread of F1)}}; ``curves``; ``teacher``;
    ``token_dropping_effect``."""
    variants = {}
    curves = []
    for name, runs in d["runs"].items():
        variants[name] = {"final_loss": spread([r["final_mlm_loss"] for r in runs]),
                          "train_flops": statistics.fmean(r["train_flops"] for r in runs),
                          "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
                          "steps": runs[0]["steps"] if runs else None,
                          "sst2": spread([m["accuracy"] for r in runs for m in r.get("sst2", [])]),
                          "mrpc": spread([m["f1"] for r in runs for m in r.get("mrpc", [])])}
        curves += _curves([{**r, "variant": name} for r in runs])
    s = d["settings"]
    setting = (f"{machine_text(prov)}; student MobileBERT-shaped {s.get('layers')} layers, inter-block "
               f"{s.get('hidden')}, bottleneck 32; teacher IB-BERT-shaped {s.get('layers')} layers, "
               f"{s.get('teacher_steps')} steps; progressive transfer {s.get('stage_steps')} steps per stage + "
               f"{s.get('pd_steps')} steps of pretraining distillation, batch {s.get('batch')} x {s.get('length')}; "
               f"{s.get('books')} Gutenberg books; seeds {s.get('seeds')}, fine-tuning seeds {s.get('ft_seeds')} "
               f"(SST-2 first {s.get('sst2_train')} examples, MRPC)" + (" (--quick)" if s.get("quick") else ""))
    figures = {"variants": variants, "curves": curves, "teacher": d["summary"].get("teacher"),
               "token_dropping_effect": d["summary"].get("token_dropping_effect")}
    return figures, setting, f"{PAPER['mobilebert']}; progressive knowledge transfer is the paper's recipe"


def collect_deployment(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``rows``: {candidate: {model, precision, kind, file_mb, p50_ms}} at batch 1 x 128;
    ``size_ratio`` / ``speed_ratio`` against BERT-base fp32; ``targets``; ``missing``;
    ``accuracy``: {task: {metric: {variant: {mean, per_seed, delta_points_mean}}}};
    ``worst_int8_delta``: (points, task, metric, variant) of post-training int8;
    ``worst_qat_int8_delta``: the same after quantization-aware fine-tuning (None if not run)."""
    dep = d.get("deployment") or {}
    rows = {n: {"model": r["model"], "precision": r["precision"], "kind": r["kind"], "file_mb": r["file_bytes"] / 1e6,
                "p50_ms": r.get("p50_ms_b1_l128")} for n, r in dep.get("rows", {}).items()}
    accuracy = {task: {metric: {v: {"mean": e["mean"], "per_seed": e["per_seed"],
                                    "delta_points_mean": e["delta_points_mean"]} for v, e in entry.items()}
                       for metric, entry in t["metrics"].items()} for task, t in (d.get("accuracy") or {}).items()}
    deltas = [(e["delta_points_mean"], task, metric, v) for task, t in accuracy.items()
              for metric, entry in t.items() for v, e in entry.items() if "int8" in v]
    qat = [x for x in deltas if x[3].startswith("qat-")]
    deltas = [x for x in deltas if not x[3].startswith("qat-")]
    acc = d.get("accuracy_settings", {})
    seeds = acc.get("seeds")
    m = dep.get("machine", {})
    setting = (f"{machine_text(prov, m)}, {threads_text(dep.get('threads'))}"
               + (f", load average {m['load_average']:.1f}" if m.get("load_average") is not None else "")
               + "; size and latency: MobileBERT "
               "and BERT-base, random init, batch 1 x 128 (p50 of interleaved rounds); accuracy: "
               f"{acc.get('model', 'not run')}, {acc.get('epochs')} epochs, SST-2 first {acc.get('sst2_train')} "
               f"examples, dev sets; seeds {seeds}")
    figures = {"rows": rows, "size_ratio": dep.get("size_ratio_vs_bert_base_fp32", {}),
               "speed_ratio": dep.get("speed_ratio_vs_bert_base_fp32", {}), "targets": dep.get("targets", {}),
               "missing": dep.get("missing", {}), "accuracy": accuracy, "accuracy_seeds": seeds,
               "worst_int8_delta": min(deltas) if deltas else None, "worst_qat_int8_delta": min(qat) if qat else None}
    return figures, setting, PAPER["mobilebert"]


def collect_activation_checkpointing(d: dict[str, Any], prov: dict | None) -> Collected:
    """figures: ``time_ratio``, ``peak_rss_ratio``, ``saved_mb``, ``rows``: {on|off: {step_s, peak_mb}}."""
    rows = {("on" if r["activation_checkpointing"] else "off"): {"step_s": r["step_seconds"], "peak_mb": r["peak_rss_mb"]}
            for r in d["rows"]}
    s = d["summary"]
    setting = (f"{machine_text(prov, d.get('machine'))}, {threads_text(d.get('machine', {}).get('threads'))}; "
               f"BERT-base with its MLM head, batch {d.get('batch')} x {d.get('length')}, {d.get('precision')}, "
               f"AdamW; best of {d.get('steps')} timed step(s) after one warm-up; each setting in its own process")
    return ({"time_ratio": s["time_ratio"], "peak_rss_ratio": s["peak_rss_ratio"], "saved_mb": s["peak_rss_saved_mb"],
             "rows": rows}, setting, "no paper figure")


COLLECTORS: dict[str, Callable[[dict[str, Any], dict | None], Collected]] = {
    "bench:pretrain": collect_pretrain,
    "bench:token-dropping": collect_token_dropping_bench,
    "bench:distill": collect_distill,
    "bench:finetune": collect_finetune,
    "bench:inference": collect_inference,
    "bench:data": collect_data,
    "exp:token_dropping": collect_token_dropping,
    "exp:token_dropping_bert": collect_token_dropping,
    "exp:token_dropping_small": collect_token_dropping_small,
    "exp:knowledge_transfer": collect_knowledge_transfer,
    "exp:deployment": collect_deployment,
    "exp:activation_checkpointing": collect_activation_checkpointing,
}


# ------------------------------------------------------------------------------------ collect


def read_json(path: Path) -> tuple[dict[str, Any] | None, str]:
    """(the JSON object, "") or (None, why it cannot be read)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        return None, f"cannot be read: {e.strerror or type(e).__name__}"
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except json.JSONDecodeError as e:
        return None, f"is not valid JSON ({e.msg}, line {e.lineno} column {e.colno})"
    if not isinstance(data, dict):
        return None, f"holds a JSON {type(data).__name__}, not an object"
    return data, ""


def collect_one(spec: InputSpec, path: Path, shown: str, git: Git) -> Record:
    """The record of one input file at ``path`` (``shown``: its path as the report prints it)."""
    if not path.is_file():
        why = "is a directory, not a file" if path.is_dir() else "no file"
        return Record(spec, shown, MISSING, why)
    data, why = read_json(path)
    if data is None:
        return Record(spec, shown, UNREADABLE, why)
    prov = data.get("provenance") if isinstance(data.get("provenance"), dict) else None
    status, reason = freshness(prov, spec, git)
    commit, created = (prov or {}).get("commit"), (prov or {}).get("created")
    if prov is None:  # a committed file without provenance: say when it was committed
        last = git.last_commit_of(shown) if git.head else None
        if last:
            reason += f"; the file was last committed in {last[0][:7]}"
            created = created or last[1]
    if spec.superseded:
        status, reason = SUPERSEDED, f"an old run kept for reference ({reason})"
    try:
        figures, setting, paper = COLLECTORS[spec.key](data, prov)
    except (KeyError, TypeError, IndexError, ValueError, ZeroDivisionError, AttributeError) as e:
        what = f"the field {e}" if isinstance(e, KeyError) else f"an expected value ({type(e).__name__}: {e})"
        return Record(spec, shown, INCOMPLETE, f"lacks {what}: written by another version of {spec.script}?",
                      commit, created)
    parts = {}
    for key, part_prov in data.items():  # "<part>_provenance": that part was measured at another commit
        if key.endswith("_provenance") and isinstance(part_prov, dict) and not spec.superseded:
            part_status, _ = freshness(part_prov, spec, git)
            parts[key.removesuffix("_provenance")] = (part_status, part_prov.get("commit"))
    return Record(spec, shown, status, reason, commit, created, figures, setting, paper, parts)


def collect(root: str | Path, inputs: str | Path | None = None) -> list[Record]:
    """Every expected input's record. ``root``: the checkout (git and the full-mode paths);
    ``inputs``: a ``--quick`` run's ``DIR/inputs`` (paths there instead of the checkout's)."""
    root = Path(root)
    git = Git(root)
    records = []
    for spec in INPUTS:
        if inputs is not None and spec.superseded:
            continue  # a toy run makes only the current inputs
        if inputs is None:
            path, shown = root / spec.path, spec.path
        else:
            path, shown = Path(inputs) / spec.quick_path, f"inputs/{spec.quick_path}"
        records.append(collect_one(spec, path, shown, git))
    return records
