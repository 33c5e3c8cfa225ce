"""One PNG per report section (matplotlib, Agg backend, imported on first use).

Every figure carries, under its axes, the setting it was measured with (hardware, data, model,
steps, seeds) and the paper's number where there is one, so that a PNG read on its own still
says what it shows. Each function takes the section's records' ``figures`` and returns PNG
bytes, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
import textwrap
from typing import Any

COLORS = {"none": "tab:blue", "token": "tab:red", "random": "tab:green", "token-keepall": "tab:purple",
          "none-matched": "tab:gray", "distilled": "tab:red", "scratch": "tab:blue",
          "distilled + token dropping": "tab:orange"}


def _plt():
    try:
        import matplotlib
    except ImportError:
        from leanbert.errors import MissingDependency

        raise MissingDependency("leanbert report draws its figures with matplotlib: "
                                "pip install 'leanbert[plots]'") from None

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, caption: str) -> bytes:
    """Caption (wrapped to the figure's width) under the axes, then the PNG bytes."""
    fig.tight_layout()
    width = int(fig.get_size_inches()[0] * 19)
    fig.text(0.0, 0.0, "\n".join(textwrap.wrap(caption, width)), fontsize=6.5, va="top", ha="left", color="0.25",
             transform=fig.transFigure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def pretraining(fig_data: dict[str, Any], caption: str) -> bytes | None:
    """Tokens/s per candidate and shape (bars), MFU written on each bar."""
    shapes = fig_data["shapes"]
    if not shapes:
        return None
    plt = _plt()
    names = list(shapes[0]["candidates"])
    fig, axes = plt.subplots(1, len(shapes), figsize=(4.2 * len(shapes) + 1, 4.0), squeeze=False)
    for ax, s in zip(axes[0], shapes, strict=True):
        vals = [s["candidates"][n]["tokens_per_s"] for n in names]
        bars = ax.bar(range(len(names)), vals, color=["tab:gray", "tab:blue", "0.6", "tab:red"][: len(names)])
        for b, n in zip(bars, names, strict=True):
            ax.annotate(f"MFU {s['candidates'][n]['mfu']:.0%}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=7, ha="right")
        ax.set_ylabel("training tokens/s (higher is better)")
        ax.set_title(f"{s['shape']}, batch {s['batch']} x {s['seq_len']}: leanbert train / transformers train "
                     f"{s['full_path_bf16_fused']:.2f}x", fontsize=8)
    return _finish(fig, caption)


def token_dropping_saving(bench: dict[str, Any] | None, experiment: dict[str, Any] | None, caption: str) -> bytes | None:
    """Measured time saving against the analytic FLOP saving, per benchmark shape and per
    experiment variant, with the paper's 25% as a line."""
    labels, measured, ideal = [], [], []
    for r in (bench or {}).get("rows", []):
        labels.append(f"bench {r['shape']}")
        measured.append(r["measured_saving"])
        ideal.append(r["flop_saving"])
    for v, row in ((experiment or {}).get("variants") or {}).items():
        if row.get("flop_saving") is not None and row.get("time_saving") is not None and v in ("token", "random"):
            labels.append(f"experiment {v}")
            measured.append(row["time_saving"])
            ideal.append(row["flop_saving"])
    if not labels:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], [100 * v for v in ideal], 0.4, label="FLOP saving (analytic ideal)", color="0.65")
    ax.bar([i + 0.2 for i in x], [100 * v for v in measured], 0.4, label="measured time saving", color="tab:red")
    ax.axhline(25, color="tab:blue", ls="--", lw=1, label="paper: 25% less pretraining cost")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("saving against no dropping (%)")
    ax.legend(fontsize=7)
    ax.set_title("Token dropping: time saved against the FLOP ideal", fontsize=9)
    return _finish(fig, caption)


def loss_curves(curves: list[dict[str, Any]], caption: str, title: str) -> bytes | None:
    """Held-out MLM loss against training FLOPs and wall-clock, one line per variant (median over
    seeds) with a min-max band over seeds."""
    if not curves:
        return None
    import numpy as np

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    variants = list(dict.fromkeys(c["variant"] for c in curves))
    for ax, key, label in ((axes[0], "flops", "training FLOPs (analytic)"), (axes[1], "seconds", "training wall-clock (s)")):
        for v in variants:
            rs = [c for c in curves if c["variant"] == v]
            n = min(len(c["points"]) for c in rs)
            if n == 0:
                continue
            ys = np.array([[p["mlm_loss"] for p in c["points"][:n]] for c in rs])
            xs = np.array([[p[key] for p in c["points"][:n]] for c in rs]).mean(0)
            color = COLORS.get(v)
            ax.plot(xs, np.median(ys, 0), color=color, marker="o", ms=2.5, label=f"{v} ({len(rs)} seed(s))")
            if len(rs) > 1:
                ax.fill_between(xs, ys.min(0), ys.max(0), color=color, alpha=0.2)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out MLM loss (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title + " (median over seeds; band: min-max)", fontsize=9)
    return _finish(fig, caption)


def finetune_scores(groups: list[tuple[str, list[float]]], caption: str) -> bytes | None:
    """Each (label, per-seed scores) as dots with its mean as a bar."""
    groups = [(label, vals) for label, vals in groups if vals]
    if not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(groups) + 2), 4.4))
    for i, (_, vals) in enumerate(groups):
        ax.scatter([i] * len(vals), [100 * v for v in vals], color="tab:blue", s=14, zorder=3)
        mean = 100 * sum(vals) / len(vals)
        ax.hlines(mean, i - 0.3, i + 0.3, color="tab:red")
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], rotation=35, ha="right", fontsize=6.5)
    ax.set_ylabel("dev score x100")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Fine-tuning scores over seeds (dots: runs; bar: mean)", fontsize=9)
    return _finish(fig, caption)


def deployment(rows: dict[str, dict[str, Any]], caption: str, paper_speed: float, paper_size: float) -> bytes | None:
    """Model file size against batch-1 x 128 latency (log-log), fp32 blue, int8 orange."""
    rows = {n: r for n, r in rows.items() if r.get("p50_ms") and r.get("file_mb")}
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for i, (n, r) in enumerate(sorted(rows.items(), key=lambda kv: kv[1]["p50_ms"])):
        ax.scatter(r["file_mb"], r["p50_ms"], marker="o" if r["model"] == "mobilebert" else "s",
                   color="tab:orange" if r["precision"] == "int8" else "tab:blue", zorder=3)
        # alternate the labels above and below their points: close points (fp32 twins) stay legible
        ax.annotate(n, (r["file_mb"], r["p50_ms"]), fontsize=6.5, xytext=(4, 3 if i % 2 else -9),
                    textcoords="offset points")
    base = rows.get("bert-base-fp32")
    if base:  # where the paper's MobileBERT would sit relative to this BERT-base
        ax.scatter(base["file_mb"] / paper_size, base["p50_ms"] / paper_speed, marker="*", s=90, color="tab:green",
                   zorder=3)
        ax.annotate(f"paper's ratios ({paper_size}x smaller, {paper_speed}x faster)",
                    (base["file_mb"] / paper_size, base["p50_ms"] / paper_speed), fontsize=6.5, xytext=(3, -9),
                    textcoords="offset points", color="tab:green")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for axis, scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
        scale("log")
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("model size (MB, log)")
    ax.set_ylabel("batch 1 x 128 latency p50 (ms, log)")
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Size and latency (circles MobileBERT, squares BERT-base; blue fp32, orange int8)", fontsize=8.5)
    return _finish(fig, caption)


def ratios(bars: list[tuple[str, float, float | None]], caption: str) -> bytes | None:
    """(label, ratio against the reference, target) bars; 1.0 = the reference's speed."""
    if not bars:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(bars) + 1.8))
    y = range(len(bars))
    ax.barh(list(y), [b[1] for b in bars], color="tab:blue")
    for i, (_, value, target) in enumerate(bars):
        ax.annotate(f"{value:.2f}x", (value, i), xytext=(3, -3), textcoords="offset points", fontsize=7)
        if target is not None:
            ax.plot([target, target], [i - 0.4, i + 0.4], color="tab:red", lw=1.5)
    ax.axvline(1.0, color="0.4", lw=0.8)
    ax.set_yticks(list(y), [b[0] for b in bars], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("against the reference (x; red: target)")
    ax.set_title("Against the reference of each benchmark", fontsize=9)
    return _finish(fig, caption)
