"""The report's sections, and their Markdown and self-contained HTML forms.

:func:`build` turns the collected records into :class:`Section` s (paragraphs, tables, one figure)
and the headline rows; :func:`write` writes ``report.md`` (figures as ``figures/*.png``),
``report.html`` (the same content, figures inlined as ``data:image/png;base64`` URIs, CSS inline,
no script, nothing fetched from elsewhere) and ``summary.json`` (the headline numbers with their
sources, and every input's status). :func:`headline_markdown` renders the README's table from
``summary.json``, so the README shows the report's numbers, not numbers typed by hand.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leanbert.report import plots
from leanbert.report.collect import OK, PAPER, SUPERSEDED, Record
from leanbert.report.regenerate import JOB_OF, full_commands

README_START = "<!-- report:headline:start -->"
README_END = "<!-- report:headline:end -->"


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    key: str
    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    image: bytes | None = None
    notes: list[str] = field(default_factory=list)  # after the tables


# ---------------------------------------------------------------------------------- formatting


def x(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}x"


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def num(v: float | None, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def spread_text(s: dict[str, Any], scale: float = 1.0, spec: str = ".2f") -> str:
    """'4.95 (4.93-4.97, 2 seeds)' from a collect.spread dict."""
    if not s:
        return "n/a"
    if s["n"] == 1:
        return f"{format(scale * s['mean'], spec)} (1 run)"
    return (f"{format(scale * s['mean'], spec)} ({format(scale * s['min'], spec)}-{format(scale * s['max'], spec)}, "
            f"{s['n']} runs)")


def source(r: Record) -> str:
    commit = f", {r.commit[:7]}" if r.commit else ""
    return f"`{r.path}` ({r.status}{commit})"


def measured_with(rs: list[Record]) -> list[str]:
    """A 'Measured with' line per usable input (its status and reason when not ok), and a line
    for each input the section lacks, with the command that makes it."""
    out = []
    for r in rs:
        if r.usable:
            state = "" if r.status == OK else f" **{r.status.capitalize()}**: {r.reason}."
            out.append(f"**Measured with** {source(r)}: {r.setting}.{state}")
        elif not r.spec.superseded:
            job = JOB_OF.get(r.spec.key)
            how = f" To make it: `{'` and `'.join(full_commands(job, Path('.')))}`." if job else ""
            out.append(f"**{r.status.capitalize()}**: `{r.path}` ({r.spec.title}): {r.reason}.{how}")
    return out


# ------------------------------------------------------------------------------------ sections


def _by_key(records: list[Record]) -> dict[str, Record]:
    return {r.spec.key: r for r in records}


def section_pretraining(rec: dict[str, Record]) -> Section:
    r = rec["bench:pretrain"]
    s = Section("pretraining", "Pretraining speed against transformers", measured_with([r]))
    if not r.usable:
        return s
    rows = []
    for shape in r.figures["shapes"]:
        for name, c in shape["candidates"].items():
            rows.append([shape["shape"], f"{shape['batch']} x {shape['seq_len']}", name, f"{c['tokens_per_s']:,.0f}",
                         pct(c["mfu"]), x(c["speedup"])])
    s.tables.append(Table(["shape", "batch", "candidate", "tokens/s", "MFU", "vs transformers fp32"], rows))
    s.tables.append(Table(["shape", "leanbert model / transformers (fp32, plain AdamW)",
                           "leanbert train / transformers train (bf16, fused AdamW)"],
                          [[sh["shape"], x(sh["model_alone_fp32"]), x(sh["full_path_bf16_fused"])]
                           for sh in r.figures["shapes"]]))
    s.notes.append("MFU: model FLOPs per second over the matrix-product peak measured at start-up (fp32 or bf16). "
                   "The papers give no speed against transformers, so there is no paper figure here.")
    s.image = plots.pretraining(r.figures, f"{r.setting}. Source: {r.path} ({r.status}).")
    return s


def _td_experiment(rec: dict[str, Record]) -> Record | None:
    """The token-dropping experiment's record to show: the current run, else the superseded one."""
    for key in ("exp:token_dropping", "exp:token_dropping_bert", "exp:token_dropping_small"):
        r = rec.get(key)
        if r is not None and r.usable:
            return r
    return None


def section_token_dropping_saving(rec: dict[str, Record]) -> Section:
    bench, exp = rec["bench:token-dropping"], _td_experiment(rec)
    inputs = [bench] + ([exp] if exp else [rec["exp:token_dropping"]])
    s = Section("token_dropping_saving", "Token dropping: time saving against the FLOP ideal", measured_with(inputs))
    rows = []
    if bench.usable:
        for row in bench.figures["rows"]:
            rows.append([f"benchmark {row['shape']}", pct(row["flop_saving"]), pct(row["measured_saving"]),
                         pct(row["paired_saving"]), num(row["quotient"]),
                         f"{'met' if row['meets_target'] else 'NOT met'} (>= {bench.figures['target']})"])
    if exp:
        for v, row in exp.figures["variants"].items():
            if v != "none" and row.get("flop_saving") is not None:
                rows.append([f"experiment {v}" + (" (superseded run)" if exp.status == SUPERSEDED else ""),
                             pct(row["flop_saving"]), pct(row.get("time_saving")), "", "", ""])
    if rows:
        s.tables.append(Table(["what", "FLOP saving (analytic)", "measured time saving", "paired median",
                               "measured / FLOPs", "target"], rows))
    s.notes.append(f"Paper: {PAPER['token_dropping']}; SPEC's FLOP count for BERT-base at n=512, k=256: "
                   f"-{100 * PAPER['token_dropping_flops']:.1f}% forward FLOPs.")
    caption = "; ".join(f"{r.setting} ({r.path}, {r.status})" for r in inputs if r.usable)
    s.image = plots.token_dropping_saving(bench.figures if bench.usable else None, exp.figures if exp else None,
                                          caption + f". Paper: {PAPER['token_dropping']}.")
    return s


def section_token_dropping_loss(rec: dict[str, Record]) -> Section:
    exp = _td_experiment(rec)
    main = rec["exp:token_dropping"]
    s = Section("token_dropping_loss", "Token dropping: held-out MLM loss against FLOPs and time",
                measured_with([main] + ([exp] if exp and exp is not main else [])))
    if exp is None:
        return s
    if exp.status == SUPERSEDED:
        s.paragraphs.insert(0, "The current experiment's results are not there, so this section shows a "
                               f"**superseded run** (`{exp.path}`: {exp.spec.title}), whose held-out loss stayed near "
                               "a frequency-only model's: too close to separate importance-based from random dropping.")
    elif exp.figures.get("complete") is False:
        s.paragraphs.insert(0, "**Partial**: the experiment is still running; the figures are from the runs that "
                               "have finished.")
    rows = []
    for v, row in exp.figures["variants"].items():
        glue = ", ".join(f"{t} {spread_text(g, 100, '.1f')}" for t, g in row["glue"].items()) or "n/a"
        rows.append([v, ", ".join(str(x_) for x_ in row["seeds"]), str(row.get("steps")),
                     spread_text(row["final_loss"], 1, ".3f"), pct(row.get("flop_saving")), pct(row.get("time_saving")),
                     glue])
    s.tables.append(Table(["variant", "seeds", "steps", "final held-out MLM loss (nats)", "FLOP saving",
                           "time saving", "GLUE dev (x100, best lr)"], rows))
    crit = exp.figures.get("scale_criterion")
    if crit:
        s.notes.append(f"Scale criterion: no dropping ends {crit['nats_below_unigram_entropy']:.2f} nats below the "
                       f"held-out unigram entropy ({crit['heldout_unigram_entropy']:.2f}); needed: 1 nat "
                       f"({'met' if crit['met'] else 'not met'}).")
    s.notes.append(f"Paper: {PAPER['token_dropping']}.")
    title = "Token dropping" + (" (superseded run)" if exp.status == SUPERSEDED else "")
    s.image = plots.loss_curves(exp.figures["curves"], f"{exp.setting}. Source: {exp.path} ({exp.status}). "
                                                       f"Paper: {exp.paper}.", title)
    return s


def section_distillation(rec: dict[str, Record]) -> Section:
    r = rec["exp:knowledge_transfer"]
    s = Section("distillation", "MobileBERT: distilled against from scratch", measured_with([r]))
    if not r.usable:
        return s
    rows = []
    for name, v in r.figures["variants"].items():
        rows.append([name, spread_text(v["final_loss"], 1, ".3f"), f"{v['train_flops']:.3g}",
                     f"{v['train_seconds']:.0f} s", str(v["steps"]), spread_text(v["sst2"], 100, ".1f"),
                     spread_text(v["mrpc"], 100, ".1f")])
    t = r.figures.get("teacher")
    if t:
        rows.append(["teacher (not charged)", f"{t['final_mlm_loss']:.3f}", f"{t['train_flops']:.3g}",
                     f"{t['train_seconds']:.0f} s", str(t["steps"]), "", ""])
    s.tables.append(Table(["student", "held-out MLM loss", "training FLOPs", "wall-clock", "steps",
                           "SST-2 dev acc (x100)", "MRPC dev F1 (x100)"], rows))
    eff = r.figures.get("token_dropping_effect")
    if eff:
        s.notes.append(f"Token dropping inside pretraining distillation: {pct(eff['pd_flop_saving'])} fewer FLOPs and "
                       f"{pct(eff['pd_time_saving'])} less time in that phase, held-out loss "
                       f"{eff['final_mlm_loss_change']:+.4f}.")
    s.notes.append(f"Paper: {r.paper}. The paper's figures are for the full-size models after 240k + 500k steps; "
                   "these are toy-sized models on a CPU, so only the comparison between the rows is meaningful.")
    s.image = plots.loss_curves(r.figures["curves"], f"{r.setting}. Source: {r.path} ({r.status}).",
                                "MobileBERT-shaped student: knowledge transfer against from scratch")
    return s


def section_finetune_scores(rec: dict[str, Record]) -> Section:
    exp, kt, dep = _td_experiment(rec), rec["exp:knowledge_transfer"], rec["exp:deployment"]
    inputs = [r for r in (exp, kt, dep) if r is not None]
    s = Section("finetune_scores", "Fine-tuning scores with their spread over seeds", measured_with(inputs))
    groups: list[tuple[str, list[float]]] = []
    rows = []
    if exp:
        for v, row in exp.figures["variants"].items():
            for task, g in row["glue"].items():
                groups.append((f"TD {v} {task}", g["values"]))
                rows.append(["token dropping" + (" (superseded)" if exp.status == SUPERSEDED else ""), f"BERT, {v}",
                             task, spread_text(g, 100, ".1f")])
    if kt.usable:
        for name, v in kt.figures["variants"].items():
            for task, metric in (("sst2", "acc"), ("mrpc", "F1")):
                if v[task]:
                    groups.append((f"KT {name} {task}", v[task]["values"]))
                    rows.append(["knowledge transfer", f"MobileBERT-shaped, {name}", f"{task} {metric}",
                                 spread_text(v[task], 100, ".1f")])
    if dep.usable:
        for task, metrics in dep.figures["accuracy"].items():
            for metric, variants in metrics.items():
                for variant in ("pytorch-fp32", "onnx-int8"):
                    if variant in variants:
                        vals = variants[variant]["per_seed"]
                        groups.append((f"MiniLM {variant} {task} {metric}", vals))
                        rows.append(["deployment", f"all-MiniLM-L6-v2, {variant}", f"{task} {metric}",
                                     spread_text({"n": len(vals), "mean": sum(vals) / len(vals), "min": min(vals),
                                                  "max": max(vals)}, 100, ".1f")])
    if rows:
        s.tables.append(Table(["experiment", "model", "task (dev)", "score x100: mean (min-max, runs)"], rows))
    s.notes.append(f"Paper: MobileBERT's GLUE score is {PAPER['mobilebert_glue']} (the average over the GLUE tasks "
                   "at full scale); these are small models with short fine-tuning, not comparable with it.")
    caption = "; ".join(f"{r.setting} ({r.path}, {r.status})" for r in inputs if r.usable)
    s.image = plots.finetune_scores(groups, caption)
    return s


def section_deployment(rec: dict[str, Record]) -> Section:
    dep, bench = rec["exp:deployment"], rec["bench:inference"]
    s = Section("deployment", "Deployment: size and latency, fp32 and int8", measured_with([dep, bench]))
    rows_for_plot: dict[str, dict[str, Any]] = {}
    if dep.usable and dep.figures["rows"]:
        f = dep.figures
        rows_for_plot = f["rows"]
        s.tables.append(Table(["candidate", "model", "runtime", "precision", "size (MB)", "p50 ms (batch 1 x 128)"],
                              [[n, r["model"], r["kind"], r["precision"], f"{r['file_mb']:.1f}", num(r["p50_ms"], ".1f")]
                               for n, r in f["rows"].items()]
                              + [[n, "", "", "", "", f"not measured: {why}"] for n, why in f["missing"].items()]))
        if f["size_ratio"]:
            s.tables.append(Table(
                ["MobileBERT candidate", "smaller than BERT-base fp32", "paper (MobileBERT)", "faster than BERT-base fp32",
                 "paper (MobileBERT)"],
                [[n, x(v, 1), f"{PAPER['mobilebert_size_ratio']}x", x(f["speed_ratio"].get(n)),
                  f"{PAPER['mobilebert_speed_ratio']}x"] for n, v in f["size_ratio"].items()]))
        if f["targets"]:
            s.tables.append(Table(["target (batch 1 x 128)", "against", "best path", "ours", "target", "met"],
                                  [[name, t["against"], t.get("best_path") or "", x(t["value"]), f"{t['target']}x",
                                    {True: "yes", False: "NO", None: "not measured"}[t["met"]]]
                                   for name, t in f["targets"].items()]))
        if f["accuracy"]:
            acc_rows = []
            for task, metrics in f["accuracy"].items():
                for metric, variants in metrics.items():
                    for v, e in variants.items():
                        acc_rows.append([f"{task} {metric}", v, f"{100 * e['mean']:.2f}", f"{e['delta_points_mean']:+.2f}",
                                         ", ".join(f"{100 * p:.2f}" for p in e["per_seed"])])
            s.tables.append(Table(["task (dev)", "variant", "mean x100", "change from fp32 (points)", "per seed"],
                                  acc_rows))
    if bench.usable:
        f = bench.figures
        s.tables.append(Table(["bench inference candidate", "size (MB)", "p50 ms (batch 1 x 128)"],
                              [[n, f"{f['file_mb'].get(n, 0):.1f}", num(ms, ".1f")] for n, ms in f["p50_ms"].items()]
                              + [[n, "", f"not measured: {why}"] for n, why in f["missing"].items()]))
        if not rows_for_plot:
            rows_for_plot = {n: {"model": f["model"][n], "precision": f["precision"][n], "file_mb": f["file_mb"][n],
                                 "p50_ms": ms} for n, ms in f["p50_ms"].items()}
    s.notes.append(f"Paper: {PAPER['mobilebert']}. The paper's latency is a phone's; only the ratios compare.")
    shown = dep if dep.usable and dep.figures["rows"] else bench
    s.image = plots.deployment(rows_for_plot, f"{shown.setting}. Source: {shown.path} ({shown.status}). Paper: "
                                              f"{PAPER['mobilebert']}.", PAPER["mobilebert_speed_ratio"],
                               PAPER["mobilebert_size_ratio"])
    return s


def section_other_speed(rec: dict[str, Record]) -> Section:
    ft, di, da = rec["bench:finetune"], rec["bench:distill"], rec["bench:data"]
    s = Section("other_speed", "Fine-tuning, distillation and data preparation speed", measured_with([ft, di, da]))
    bars: list[tuple[str, float, float | None]] = []
    rows = []
    if ft.usable:
        targets = {t["pair"]: t["target"] for t in ft.figures["targets"]}
        for pair, r in ft.figures["ratios"].items():
            rows.append(["fine-tuning", pair, x(r["train steps"]), x(r["whole call"]),
                         f">= {targets[pair]}x" if pair in targets else ""])
            if r["train steps"] is not None:
                bars.append((f"finetune {pair} (train steps)", r["train steps"], targets.get(pair)))
    if di.usable:
        for st in di.figures["stages"]:
            rows.append(["distillation", f"transfer step / its parts, stage {st['layer']} (lower is better)",
                         x(st["ratio"]), "", f"<= {di.figures['target']}x"])
            bars.append((f"distill step / parts, stage {st['layer']} (lower is better)", st["ratio"],
                         di.figures["target"]))
    if da.usable:
        f = da.figures
        rows.append(["data prepare", "leanbert data prepare / tokenizers encode_batch", x(f["prepare_vs_reference"]),
                     "", ""])
        bars.append(("data prepare / encode_batch", f["prepare_vs_reference"], None))
        if f.get("pairs_vs_reference") is not None:
            rows.append(["data prepare", "--mode pairs / tokenizers encode_batch", x(f["pairs_vs_reference"]), "", ""])
    if rows:
        s.tables.append(Table(["stage", "ratio", "value", "whole call", "target"], rows))
    s.notes.append("The papers give no figures for these; the targets are the project's.")
    caption = "; ".join(f"{r.setting} ({r.path}, {r.status})" for r in (ft, di, da) if r.usable)
    s.image = plots.ratios(bars, caption)
    return s


def section_activation_checkpointing(rec: dict[str, Record]) -> Section:
    r = rec["exp:activation_checkpointing"]
    s = Section("activation_checkpointing", "Activation checkpointing: memory against time", measured_with([r]))
    if r.usable:
        f = r.figures
        s.tables.append(Table(["activation checkpointing", "step time (s)", "peak resident memory (MB)"],
                              [[k, f"{v['step_s']:.2f}", f"{v['peak_mb']:,.0f}"] for k, v in f["rows"].items()]
                              + [["on / off", x(f["time_ratio"]), f"{x(f['peak_rss_ratio'])} ({f['saved_mb']:,.0f} MB less)"]]))
    return s


SECTIONS = (section_pretraining, section_token_dropping_saving, section_token_dropping_loss, section_distillation,
            section_finetune_scores, section_deployment, section_other_speed, section_activation_checkpointing)


# ------------------------------------------------------------------------------------ headline


def _headline_row(what: str, ours: str, paper: str, r: Record, part: str | None = None) -> dict[str, str]:
    """One headline row; ``part``: the part of the input the figure comes from, where that part was
    measured at another commit than the file (``Record.parts``)."""
    status, commit = r.parts.get(part, (r.status, r.commit)) if part else (r.status, r.commit)
    return {"what": what, "ours": ours, "paper": paper, "source": r.path, "status": status,
            "commit": (commit or "")[:7]}


def headline(records: list[Record]) -> list[dict[str, str]]:
    """The headline numbers, each with its source; an input that is not usable gives a row that
    says so (never a dropped row)."""
    rec = _by_key(records)
    rows = []

    def missing(what: str, paper: str, r: Record, why: str = "not in this run") -> None:
        rows.append(_headline_row(what, f"not measured: {why}" if r.usable else f"{r.status}: see Inputs", paper, r))

    r = rec["bench:pretrain"]
    what = "pretraining step against transformers (bf16, fused AdamW)"
    if r.usable and r.figures["shapes"]:
        sh = next((s for s in r.figures["shapes"] if s["shape"] == "bert-base"), r.figures["shapes"][-1])
        rows.append(_headline_row(f"{what}, {sh['shape']} {sh['batch']} x {sh['seq_len']}",
                                  x(sh["full_path_bf16_fused"]), "no paper figure", r))
    else:
        missing(what, "no paper figure", r)

    r = rec["bench:token-dropping"]
    what = "token dropping: step-time saving against FLOP saving"
    if r.usable and r.figures["rows"]:
        b = r.figures["rows"][0]
        rows.append(_headline_row(f"{what} ({b['shape']}, keep {r.figures.get('keep')})",
                                  f"{pct(b['measured_saving'])} vs {pct(b['flop_saving'])} ({x(b['quotient'])})",
                                  "25% less pretraining cost", r))
    else:
        missing(what, "25% less pretraining cost", r)

    r = rec["exp:token_dropping"]
    what = "token dropping replication: held-out MLM loss, token vs no dropping"
    if r.usable and {"token", "none"} <= set(r.figures["variants"]):
        v = r.figures["variants"]
        rows.append(_headline_row(what, f"{v['token']['final_loss']['median']:.3f} vs "
                                        f"{v['none']['final_loss']['median']:.3f} nats "
                                        f"({v['token']['final_loss']['n']} seed{'' if v['token']['final_loss']['n'] == 1 else 's'})"
                                        + ("" if r.figures.get("complete") is not False else ", partial"),
                                  "similar GLUE / SQuAD at 25% less cost", r))
    else:
        missing(what, "similar GLUE / SQuAD at 25% less cost", r)

    r = rec["exp:knowledge_transfer"]
    what = "MobileBERT-shaped student: held-out MLM loss, distilled vs from scratch (same FLOPs)"
    if r.usable and {"distilled", "scratch"} <= set(r.figures["variants"]):
        v = r.figures["variants"]
        rows.append(_headline_row(what, f"{v['distilled']['final_loss']['mean']:.2f} vs "
                                        f"{v['scratch']['final_loss']['mean']:.2f} nats",
                                  f"distilled: GLUE {PAPER['mobilebert_glue']} at full scale", r))
    else:
        missing(what, f"distilled: GLUE {PAPER['mobilebert_glue']} at full scale", r)

    r = rec["exp:deployment"]
    paper_ratio = f"{PAPER['mobilebert_size_ratio']}x smaller, {PAPER['mobilebert_speed_ratio']}x faster"
    what = "MobileBERT against BERT-base fp32: size, batch-1 x 128 latency (best path)"
    if r.usable and r.figures["size_ratio"] and r.figures["speed_ratio"]:
        f = r.figures
        best = max(f["speed_ratio"], key=f["speed_ratio"].get)
        rows.append(_headline_row(what, f"{x(f['size_ratio'].get('leanbert-fp32'), 1)} smaller (fp32), "
                                        f"{x(f['speed_ratio'][best])} faster ({best})", paper_ratio, r,
                                  part="deployment"))
    else:
        missing(what, paper_ratio, r, "no BERT-base in the benchmark run")
    what = "MobileBERT int8 against transformers fp32 / optimum int8 (batch 1 x 128)"
    targets = r.figures.get("targets", {}) if r.usable else {}
    if targets.get("int8_vs_transformers_fp32"):
        a, b = targets["int8_vs_transformers_fp32"], targets.get("int8_vs_optimum_int8", {})
        rows.append(_headline_row(what, f"{x(a['value'])} / {x(b.get('value'))}",
                                  f"targets {a['target']}x / {b.get('target', 'n/a')}x", r, part="deployment"))
    else:
        missing(what, "targets 2x / 1.2x", r, "no transformers fp32 in the benchmark run")
    what = "int8 accuracy: largest mean change from fp32 (MiniLM, dev)"
    worst = r.figures.get("worst_int8_delta") if r.usable else None
    if worst:
        qat = r.figures.get("worst_qat_int8_delta")
        after = f"; after QAT {qat[0]:+.2f} ({qat[1]} {qat[2]}, {qat[3]})" if qat else ""
        rows.append(_headline_row(what, f"{worst[0]:+.2f} points ({worst[1]} {worst[2]}, {worst[3]}){after}",
                                  "no paper figure", r, part="accuracy"))
    else:
        missing(what, "no paper figure", r, "the accuracy part was not run")

    r = rec["exp:activation_checkpointing"]
    what = "activation checkpointing, BERT-base step: memory, time"
    if r.usable:
        f = r.figures
        rows.append(_headline_row(what, f"{x(f['peak_rss_ratio'])} memory, {x(f['time_ratio'])} time",
                                  "no paper figure", r))
    else:
        missing(what, "no paper figure", r)
    return rows


def headline_markdown(summary: dict[str, Any]) -> str:
    """The headline table as the README shows it (between its markers), from ``summary.json``."""
    lines = [f"From [`report/summary.json`](report/summary.json) ({summary['mode']} mode, generated "
             f"{summary['generated'][:10]} at {(summary.get('head') or 'an unknown commit')[:7]}); the status says "
             "whether the code changed since the figure was measured.", "",
             "| what | ours | paper / target | source (status) |", "|---|---|---|---|"]
    for row in summary["headline"]:
        commit = f", {row['commit']}" if row["commit"] else ""
        lines.append(f"| {row['what']} | {row['ours']} | {row['paper']} | `{row['source']}` ({row['status']}{commit}) |")
    return "\n".join(lines)


def replace_readme_block(readme: str, block: str) -> str:
    """``readme`` with the text between the headline markers replaced by ``block``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {README_START} ... {README_END} block")
    return readme[: start + len(README_START)] + "\n" + block + "\n" + readme[end:]


def readme_block(readme: str) -> str:
    """The text between the README's headline markers (without the surrounding newlines)."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {README_START} ... {README_END} block")
    return readme[start + len(README_START): end].strip("\n")


# -------------------------------------------------------------------------------------- build


@dataclass
class Report:
    sections: list[Section]
    summary: dict[str, Any]
    records: list[Record]


def build(records: list[Record], mode: str, head: str | None, dirty: bool | None,
          extra_notes: list[str] | None = None) -> Report:
    rec = _by_key(records)
    sections = [make(rec) for make in SECTIONS]
    summary = {
        "generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "head": head,
        "dirty": dirty,
        "headline": headline(records),
        "inputs": [{"key": r.spec.key, "kind": r.spec.kind, "path": r.path, "status": r.status, "reason": r.reason,
                    "commit": r.commit, "created": r.created} for r in records],
        "notes": list(extra_notes or []),
    }
    return Report(sections, summary, records)


def _inputs_table(records: list[Record]) -> Table:
    rows = []
    for r in records:
        rows.append([r.spec.title, r.spec.kind, f"`{r.path}`", f"**{r.status}**" if r.status != "ok" else r.status,
                     (r.commit or "unknown")[:7], (r.created or "")[:10], r.reason])
    return Table(["input", "kind", "path", "status", "commit", "date", "why"], rows)


def _regenerate_table(root: Path) -> Table:
    rows = []
    for job in JOB_OF.values():
        rows.append([f"`{job.spec.path}`", "<br>".join(f"`{c}`" for c in full_commands(job, root)),
                     f"~{job.full_minutes:g} min" if job.full_minutes < 120 else f"~{job.full_minutes / 60:g} h",
                     f"~{job.quick_minutes:g} min", job.note])
    return Table(["input", "full mode runs", "expected (full)", "expected (--quick)", "note"], rows)


# ------------------------------------------------------------------------------------ markdown


def _md_table(t: Table) -> list[str]:
    def cell(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    return (["| " + " | ".join(cell(h) for h in t.header) + " |", "|" + "---|" * len(t.header)]
            + ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows] + [""])


def markdown(report: Report, root: Path) -> str:
    s = report.summary
    lines = ["# leanbert report", "",
             f"Generated {s['generated']} by `leanbert report{' --quick' if s['mode'] == 'quick' else ''}` at commit "
             f"{(s['head'] or 'unknown')[:7]}{' with uncommitted changes' if s['dirty'] else ''}. Every number comes "
             "from the JSON named beside it; an input that is missing, stale or unreadable is listed as such "
             "(Inputs). Regenerate with `leanbert report` (reuses what is there, runs what is missing) or "
             "`leanbert report --quick` (a toy version of everything, a few minutes).", ""]
    if s["notes"]:
        lines += ["\n>\n".join(f"> {n}" for n in s["notes"]), ""]
    lines += ["## Headline", "", *headline_markdown(s).splitlines()[2:], ""]
    lines += ["## Inputs", "", *_md_table(_inputs_table(report.records))]
    for sec in report.sections:
        lines += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            lines += [p, ""]
        for t in sec.tables:
            lines += _md_table(t)
        for n in sec.notes:
            lines += [n, ""]
        if sec.image:
            lines += [f"![{sec.title}](figures/{sec.key}.png)", ""]
    lines += ["## Regenerating the inputs", "",
              "Expected times are for the project's 2-core CPU machine, loaded by other jobs.", "",
              *_md_table(_regenerate_table(root))]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- html

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}th{background:#f3f3f3}
code{background:#f4f4f4;padding:0 .2em;font-size:.92em}img{max-width:100%;border:1px solid #ddd}
blockquote{border-left:3px solid #c33;margin:0;padding:.2em 1em;background:#fdf3f3}"""


def inline(text: str) -> str:
    """Markdown inline markup used by the report (`code`, **bold**, <br>) as HTML."""
    out = []
    for i, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if i % 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            esc = html.escape(part).replace("&lt;br&gt;", "<br>")
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc))
    return "".join(out)


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{inline(h)}</th>" for h in t.header)
    body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(report: Report, root: Path) -> str:
    md = markdown(report, root)  # same text; tables and images from the structures
    intro = md.split("\n## Headline", 1)[0].split("\n", 2)[2].strip()
    s = report.summary
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>leanbert report</title>"
             f"<style>{CSS}</style></head><body><h1>leanbert report</h1>"]
    for para in intro.split("\n\n"):
        if para.startswith("> "):
            parts.append("<blockquote>" + "<br>".join(inline(p[2:]) for p in para.splitlines() if p.strip() != ">")
                         + "</blockquote>")
        else:
            parts.append(f"<p>{inline(para)}</p>")
    headline = Table(["what", "ours", "paper / target", "source (status)"],
                     [[r["what"], r["ours"], r["paper"],
                       f"`{r['source']}` ({r['status']}{', ' + r['commit'] if r['commit'] else ''})"]
                      for r in s["headline"]])
    parts += ["<h2>Headline</h2>", _html_table(headline), "<h2>Inputs</h2>", _html_table(_inputs_table(report.records))]
    for sec in report.sections:
        parts.append(f"<h2 id=\"{sec.key}\">{html.escape(sec.title)}</h2>")
        parts += [f"<p>{inline(p)}</p>" for p in sec.paragraphs]
        parts += [_html_table(t) for t in sec.tables]
        parts += [f"<p>{inline(n)}</p>" for n in sec.notes]
        if sec.image:
            data = base64.b64encode(sec.image).decode("ascii")
            parts.append(f"<p><img alt=\"{html.escape(sec.title)}\" src=\"data:image/png;base64,{data}\"></p>")
    parts += ["<h2>Regenerating the inputs</h2>",
              "<p>Expected times are for the project's 2-core CPU machine, loaded by other jobs.</p>",
              _html_table(_regenerate_table(root)), "</body></html>"]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------------------- write

OWNED = ("report.md", "report.html", "summary.json", "figures", "inputs")


def write(report: Report, out: Path, root: Path) -> list[Path]:
    """Write the report into ``out`` (every file atomically); figures of sections that have no
    image any more are removed. Returns the files written."""
    from leanbert.io import atomic_write_bytes, atomic_write_json, atomic_write_text

    figures = out / "figures"
    written = []
    keep = set()
    for sec in report.sections:
        if sec.image:
            path = figures / f"{sec.key}.png"
            atomic_write_bytes(path, sec.image)
            keep.add(path.name)
            written.append(path)
    if figures.is_dir():
        for old in figures.glob("*.png"):
            if old.name not in keep:
                old.unlink()
    for name, text in (("report.md", markdown(report, root)), ("report.html", to_html(report, root))):
        atomic_write_text(out / name, text)
        written.append(out / name)
    atomic_write_json(out / "summary.json", report.summary)
    written.append(out / "summary.json")
    return written

