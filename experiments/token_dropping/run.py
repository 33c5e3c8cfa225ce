"""Token dropping (Hou et al., ACL 2022) replicated at a scale where the model learns more
than word frequencies, on a 2-core CPU.

Variants (same model, data, batch, schedule shape):

- ``none``: plain BERT for ``--steps`` steps;
- ``token``: token dropping with the reference routing (only [MASK] inputs always kept; the
  10% random / 10% unchanged prediction positions compete on score), Sec. 3;
- ``random``: the same routing with random scores (the paper's baseline, Sec. 4.3);
- ``token-keepall``: token dropping that keeps every prediction position
  (``keep_masked_positions: true``, leanbert's former default);
- ``none-matched``: plain BERT whose *own* schedule (warm-up, linear decay to zero) ends at
  the training FLOPs of the ``token`` run of the same seed: the matched-cost baseline.

Per run: held-out MLM loss and accuracy (evaluated without dropping, leanbert's default)
every ``--eval-every`` steps against analytic FLOPs and training wall-clock; for dropping runs
also the final held-out loss *with* dropping (the reference validates that way); for
importance runs a dump of the final score table against token frequency. Then every final
checkpoint is fine-tuned on SST-2, MRPC and CoLA (GLUE dev) for each learning rate of
``--ft-lrs``. The criterion for the scale: no-dropping's held-out loss must end at least 1 nat
below the unigram entropy of the held-out set (measured with the experiment's tokenizer).

    # the whole experiment: one worker per core (they share the work dir and take runs in turn)
    python experiments/token_dropping/run.py --threads 1 & python experiments/token_dropping/run.py --threads 1
    python experiments/token_dropping/run.py --calibrate          # then: interleaved step timing (quiet machine)
    python experiments/token_dropping/run.py --steps 20 --eval-every 10 --books 2 --layers 4 \\
        --seeds 0 --ft-lrs 1e-4 --sst2-train 200 --quick          # smoke run (a few minutes)

Runs live under --work (default experiments/token_dropping/work, git-ignored); results.json
is rewritten after every finished run (so results arrive while the experiment runs). Every
stage skips work already done and pretraining resumes from its last checkpoint, so the
experiment can be stopped (Ctrl-C / SIGTERM save a checkpoint) and continued across sessions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared" / "data"
# name -> token_dropping overrides; none-matched gets its step count from the token run.
VARIANTS: dict[str, dict[str, object]] = {
    "none": {"method": "none"},
    "token": {"method": "token", "keep_masked_positions": False},
    "random": {"method": "random", "keep_masked_positions": False},
    "token-keepall": {"method": "token", "keep_masked_positions": True},
    "none-matched": {"method": "none"},
}
# Settings a finished run's record depends on: records made with others are not reused.
RECORD_KEYS = ("books", "vocab", "length", "layers", "hidden", "heads", "batch", "steps", "lr", "warmup", "keep",
               "eval_every", "eval_batches", "ft_lrs", "ft_epochs", "ft_length", "sst2_train", "no_finetune")
GLUE = {"sst2": ("SST-2", "accuracy"), "mrpc": ("MRPC", "f1"), "cola": ("CoLA", "matthews_correlation")}


# ----------------------------------------------------------------------------------------
# Data and the unigram reference
# ----------------------------------------------------------------------------------------


def prepare_data(args, work: Path) -> Path:
    from leanbert.data.shards import prepare
    from leanbert.data.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer

    books = sorted((SHARED / "pretrain" / "gutenberg" / "clean").glob("*.txt"))[: args.books]
    if not books:
        sys.exit(f"no books found under {SHARED}/pretrain/gutenberg/clean")
    tok_dir = work / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        save_tokenizer(train_tokenizer(books, vocab_size=args.vocab), tok_dir)
    if not (work / "data" / "manifest.json").is_file():
        prepare(books, load_tokenizer(tok_dir), work / "data",
                {"seq_length": args.length, "validation_fraction": 0.02, "seed": 0})
    return work / "data"


def unigram_reference(data: Path, args) -> dict:
    """The held-out set's unigram entropy (nats, over real tokens: no [PAD]/[CLS]/[SEP]) and
    the held-out MLM targets' cross-entropy under the training split's unigram distribution
    (add-one smoothed): what a model that knows only word frequencies scores."""
    import numpy as np

    from leanbert.data.loader import ShardLoader
    from leanbert.train.config import DataSection
    from leanbert.train.data import PretrainData

    pdata = PretrainData(data, DataSection(batch_size=args.batch, max_predictions=round(0.15 * args.length)))
    special = {pdata.special_ids[t] for t in ("[PAD]", "[CLS]", "[SEP]") if t in pdata.special_ids}

    def counts(split: str) -> np.ndarray:
        loader = ShardLoader(data, split, batch_size=1, shuffle=False, loop=False, prefetch=0)
        rows, _ = loader.read(np.arange(loader.num_samples))
        c = np.bincount(rows.ravel(), minlength=pdata.vocab_size).astype(np.float64)
        c[list(special)] = 0
        return c

    held, train = counts("validation"), counts("train")
    p = held[held > 0] / held.sum()
    entropy = float(-(p * np.log(p)).sum())
    q = (train + 1) / (train + 1).sum()
    targets = []
    for batch in pdata.eval_batches(args.eval_batches, 32):
        lab = batch["labels"].numpy().ravel()
        targets.append(lab[lab >= 0])
    t = np.concatenate(targets)
    cross = float(-np.log(q[t]).mean())
    return {"heldout_unigram_entropy": entropy, "train_unigram_ce_on_eval_targets": cross,
            "heldout_tokens": int(held.sum()), "train_tokens": int(train.sum()), "eval_targets": int(t.size),
            "train_counts": train}


# ----------------------------------------------------------------------------------------
# Pretraining
# ----------------------------------------------------------------------------------------


def model_sets(args) -> list[str]:
    """The model: BERT (post-LayerNorm, FFN 4x hidden) or, with ``--family mobilebert``, a
    MobileBERT-shaped one (Sun et al. 2020: inter-block ``--hidden``, bottleneck hidden/4, 4
    stacked FFNs, NoNorm, ReLU, trigram embedding of width 64), the knowledge-transfer
    experiment's student at this depth."""
    common = [f"model.num_layers={args.layers}", f"model.hidden_size={args.hidden}", f"model.num_heads={args.heads}",
              f"model.max_position_embeddings={args.length}"]
    if args.family == "bert":
        return ["model.preset=bert-mini", *common, f"model.intermediate_size={4 * args.hidden}"]
    return ["model.preset=mobilebert-test", *common, "model.embedding_size=64",
            f"model.intra_bottleneck_size={args.hidden // 4}", "model.key_query_shared_bottleneck=true",
            "model.num_feedforward_networks=4", f"model.intermediate_size={args.hidden}", "model.hidden_act=relu",
            "model.normalization_type=no_norm", "model.hidden_dropout=0.0"]


def pretrain_sets(args, variant: str, seed: int, steps: int) -> list[str]:
    sets = [
        *model_sets(args),
        f"data.batch_size={args.batch}", f"data.max_predictions={round(0.15 * args.length)}",
        f"train.max_steps={steps}", f"optim.lr={args.lr}", f"optim.warmup_steps={max(1, round(steps * args.warmup))}",
        "optim.schedule=linear", "train.precision=bf16", f"train.seed={seed}",
        f"eval.every={args.eval_every}", f"eval.batches={args.eval_batches}", "eval.batch_size=32",
        f"checkpoint.every={args.eval_every}", "checkpoint.keep_last=1", "log.every=1", "log.progress=false",
    ]
    for key, value in VARIANTS[variant].items():
        sets.append(f"token_dropping.{key}={str(value).lower()}")
    if VARIANTS[variant]["method"] != "none":
        sets.append(f"token_dropping.keep={args.keep}")
    return sets


def read_metrics(out: Path, batch_tokens: int) -> tuple[list[dict], list[dict]]:
    """Train and eval records, the last one per step (a resumed run logs the steps after its
    checkpoint again)."""
    train, evals = {}, {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train":
            train[rec["step"]] = rec
        elif rec.get("kind") == "eval":
            evals[rec["step"]] = rec
    return [train[k] for k in sorted(train)], [evals[k] for k in sorted(evals)]


def pretrain_run(args, data: Path, out: Path, variant: str, seed: int, steps: int) -> dict:
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    cfg = load_pretrain_config("demo", pretrain_sets(args, variant, seed, steps))
    if not (out / "model" / "config.json").is_file():
        from leanbert.train.pretrain import Interrupted

        t0 = time.perf_counter()
        try:
            result = pretrain(cfg, data, out)
        except Interrupted as e:  # SIGINT / SIGTERM: a checkpoint was saved
            sys.exit(f"{out.name}: {e}")
        if result.interrupted:
            sys.exit(f"{out.name}: interrupted at step {result.steps}; rerun to resume")
        print(f"  pretrained {out.name} in {time.perf_counter() - t0:.0f}s", flush=True)
    batch_tokens = args.batch * args.length
    train, evals = read_metrics(out, batch_tokens)
    seconds, flops, t_cum, f_cum = {0: 0.0}, {0: 0.0}, 0.0, 0.0
    for rec in train:  # training steps only: held-out evaluation costs every variant the same
        t_cum += batch_tokens / rec["tokens_per_s"] if rec.get("tokens_per_s") else 0.0
        f_cum += rec["flops_per_step"]
        seconds[rec["step"]], flops[rec["step"]] = t_cum, f_cum
    curve = [{"step": e["step"], "mlm_loss": e["mlm_loss"], "mlm_accuracy": e.get("mlm_accuracy"),
              "seconds": seconds.get(e["step"], 0.0), "flops": flops.get(e["step"], 0.0)} for e in evals]
    return {"variant": variant, "seed": seed, "steps": steps, "curve": curve, "train_seconds": t_cum,
            "train_flops": f_cum, "flops_per_step": f_cum / max(len(train), 1),
            "final_mlm_loss": evals[-1]["mlm_loss"], "final_mlm_accuracy": evals[-1].get("mlm_accuracy"),
            "model_dir": str(out / "model"), "run_dir": str(out)}


def final_state(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    from leanbert.train.state import list_checkpoints

    last = list_checkpoints(run_dir)[-1]
    return load_file(str(last / "extra.safetensors"))


def evaluate_with_dropping(args, data: Path, run: dict) -> dict:
    """The final model's held-out loss when the middle layers drop tokens as in training (the
    final score table; random scores for random dropping): the reference's validation."""
    import torch

    from leanbert.algorithms.token_dropping import TokenDropping
    from leanbert.checkpoint import from_pretrained
    from leanbert.train.config import load_pretrain_config
    from leanbert.train.data import PretrainData
    from leanbert.train.pretrain import MLMObjective, evaluate_mlm

    cfg = load_pretrain_config("demo", pretrain_sets(args, run["variant"], run["seed"], run["steps"]))
    pdata = PretrainData(data, cfg.data, seed=cfg.train.seed)
    model = from_pretrained(run["model_dir"])
    td_cfg = cfg.token_dropping.model_copy(update={"evaluate_with_dropping": True}).with_special_ids(pdata.special_ids)
    td = TokenDropping(td_cfg, model.config, total_steps=run["steps"])
    td.load_state_dict(final_state(Path(run["run_dir"])), strict=False)
    torch.manual_seed(run["seed"])
    ev = evaluate_mlm(model, pdata.eval_batches(cfg.eval.batches, cfg.eval.batch_size), torch.device("cpu"),
                      "bf16", MLMObjective(with_pairs=pdata.has_pairs), td)
    return {"mlm_loss": ev["mlm_loss"], "mlm_accuracy": ev["mlm_accuracy"]}


def score_table_dump(run: dict, train_counts, tokenizer_dir: Path, top: int = 25) -> dict:
    """The final importance scores against token frequency: do frequent (function) words get
    low scores, as the paper's intuition says (Sec. 3.2)?"""
    import numpy as np

    from leanbert.data.tokenizer import load_tokenizer

    scores = final_state(Path(run["run_dir"]))["token_dropping.scores"].float().numpy()
    tok = load_tokenizer(tokenizer_dir)
    counts = np.asarray(train_counts)
    seen = np.flatnonzero(counts >= 20)  # ids seen often enough for their scores to have moved

    def rank(x: np.ndarray) -> np.ndarray:
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(len(x))
        return r

    rho = float(np.corrcoef(rank(scores[seen]), rank(np.log(counts[seen])))[0, 1])
    by_freq = seen[np.argsort(-counts[seen])]
    by_score = seen[np.argsort(scores[seen])]

    def rows(ids) -> list[dict]:
        return [{"token": tok.id_to_token(int(i)), "id": int(i), "score": round(float(scores[i]), 4),
                 "train_count": int(counts[i])} for i in ids]

    deciles = np.array_split(by_freq, 10)
    return {
        "ids_with_20_or_more_occurrences": int(seen.size),
        "spearman_score_vs_log_frequency": rho,
        "mean_score_by_frequency_decile": [round(float(scores[d].mean()), 4) for d in deciles],
        "most_frequent": rows(by_freq[:top]),
        "lowest_scores": rows(by_score[:top]),
        "highest_scores": rows(by_score[::-1][:top]),
    }


# ----------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------


def finetune_run(args, model_dir: str, task: str, lr: float, out: Path, seed: int) -> dict:
    from leanbert.tasks.finetune import finetune, finetune_config
    from leanbert.tasks.registry import get_task

    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    spec = get_task(task)
    sets = [f"seed={seed}", f"lr={lr}", f"epochs={args.ft_epochs}", f"max_seq_length={args.ft_length}",
            "predict_test=false", "progress=false", "precision=bf16", "batch_size=32"]
    if task == "sst2":
        sets.append(f"train_limit={args.sst2_train}")
    return finetune(spec, SHARED / "glue" / GLUE[task][0], model_dir, out, finetune_config(spec, None, sets))


def finetune_all(args, run: dict, work: Path) -> dict:
    scores: dict[str, dict[str, float]] = {}
    for task, (_, metric) in GLUE.items():
        scores[task] = {}
        for lr in args.ft_lrs:
            name = f"ft-{task}-lr{lr:g}-{run['variant']}-seed{run['seed']}"
            m = finetune_run(args, run["model_dir"], task, lr, work / name, run["seed"])
            scores[task][f"{lr:g}"] = m["metrics"]["dev"][metric]
        best = max(scores[task], key=scores[task].get)
        print(f"  {task} {metric}: {scores[task]} (best lr {best})", flush=True)
    return scores


# ----------------------------------------------------------------------------------------
# Timing on a quiet machine
# ----------------------------------------------------------------------------------------


def calibrate(args, data: Path, work: Path, variants: list[str], rounds: int = 3, steps: int = 30) -> dict:
    """Seconds per training step of each variant, measured interleaved (``rounds`` x each
    variant for ``steps`` steps, the first 5 of each left out; medians), so that the time axis
    does not depend on what else shared the CPU during the long runs."""
    import shutil

    from leanbert.train.config import load_pretrain_config
    from leanbert.train.pretrain import pretrain

    per: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(rounds):
        for v in variants:
            out = work / f"calibrate-{v}-{r}"
            shutil.rmtree(out, ignore_errors=True)
            sets = pretrain_sets(args, v, 0, steps) + ["eval.at_start=false", f"eval.every={steps}",
                                                       f"checkpoint.every={steps}"]
            pretrain(load_pretrain_config("demo", sets), data, out)
            train, _ = read_metrics(out, args.batch * args.length)
            per[v] += [args.batch * args.length / rec["tokens_per_s"] for rec in train[5:]]
            shutil.rmtree(out, ignore_errors=True)
    return {v: statistics.median(xs) for v, xs in per.items()}


# ----------------------------------------------------------------------------------------
# Summary and plots
# ----------------------------------------------------------------------------------------


def interpolate(curve: list[dict], key: str, x: float) -> float:
    """The held-out loss of ``curve`` at ``x`` (seconds or FLOPs), linearly interpolated."""
    pts = [(p[key], p["mlm_loss"]) for p in curve]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / max(x1 - x0, 1e-12)
    return pts[-1][1]


def spread(values: list[float]) -> dict:
    if not values:
        return {}
    out = {"n": len(values), "median": statistics.median(values), "mean": statistics.mean(values),
           "min": min(values), "max": max(values)}
    if len(values) > 1:
        out["stdev"] = statistics.stdev(values)
    return out


def summarise(runs: list[dict], unigram: dict, step_seconds: dict | None) -> dict:
    summary: dict[str, dict] = {}
    for variant in VARIANTS:
        rs = [r for r in runs if r["variant"] == variant]
        if not rs:
            continue
        row: dict = {
            "seeds": [r["seed"] for r in rs],
            "steps": rs[0]["steps"],
            "final_mlm_loss": spread([r["final_mlm_loss"] for r in rs]),
            "final_mlm_accuracy": spread([r["final_mlm_accuracy"] for r in rs if r["final_mlm_accuracy"] is not None]),
            "train_flops": spread([r["train_flops"] for r in rs]),
            "train_seconds_measured": spread([r["train_seconds"] for r in rs]),
        }
        if step_seconds and variant in step_seconds:
            row["train_seconds_calibrated"] = step_seconds[variant] * rs[0]["steps"]
        wd = [r["with_dropping"]["mlm_loss"] for r in rs if "with_dropping" in r]
        if wd:
            row["final_mlm_loss_with_dropping"] = spread(wd)
        for task, (_, metric) in GLUE.items():
            best = [max(r["glue"][task].values()) for r in rs if task in r.get("glue", {})]
            if best:
                row[f"{task}_{metric}_best_lr"] = spread(best)
                for lr in rs[0]["glue"][task]:
                    row.setdefault(f"{task}_{metric}_by_lr", {})[lr] = spread(
                        [r["glue"][task][lr] for r in rs if lr in r.get("glue", {}).get(task, {})])
        summary[variant] = row
    base = summary.get("none")
    for variant, row in summary.items():
        if base is None or variant == "none":
            continue
        row["flop_saving_vs_none"] = 1 - row["train_flops"]["mean"] / base["train_flops"]["mean"]
        row["measured_time_saving_vs_none"] = 1 - row["train_seconds_measured"]["mean"] / base["train_seconds_measured"]["mean"]
        if "train_seconds_calibrated" in row and "train_seconds_calibrated" in base:
            row["calibrated_time_saving_vs_none"] = 1 - row["train_seconds_calibrated"] / base["train_seconds_calibrated"]
        paired = [(r, next((b for b in runs if b["variant"] == "none" and b["seed"] == r["seed"]), None))
                  for r in runs if r["variant"] == variant]
        diffs = [r["final_mlm_loss"] - b["final_mlm_loss"] for r, b in paired if b is not None]
        if diffs:
            row["final_loss_minus_none_same_seed"] = spread(diffs)
    criterion = None
    if base is not None:
        criterion = {
            "heldout_unigram_entropy": unigram["heldout_unigram_entropy"],
            "none_final_mlm_loss_median": base["final_mlm_loss"]["median"],
            "nats_below_unigram_entropy": unigram["heldout_unigram_entropy"] - base["final_mlm_loss"]["median"],
        }
        criterion["met"] = criterion["nats_below_unigram_entropy"] >= 1.0
    return {"variants": summary, "scale_criterion": criterion}


def _fmt(stat: dict | None, scale: float = 1.0, digits: int = 3) -> str:
    """``median [min, max] (n)`` of a :func:`spread` record."""
    if not stat:
        return "–"
    med = stat["median"] * scale
    if stat["n"] == 1:
        return f"{med:.{digits}f} (1 seed)"
    return f"{med:.{digits}f} [{stat['min'] * scale:.{digits}f}, {stat['max'] * scale:.{digits}f}] ({stat['n']})"


def _claims(rows: dict, paired: dict, noise: float | None, crit: dict | None) -> list[str]:
    """The report's conclusions, each read off the verdicts above (nothing here is typed in)."""
    out: list[str] = []
    none, tok = rows.get("none"), rows.get("token")
    if not (none and tok):
        return ["Not enough finished runs to say anything yet."]
    same = tok.get("final_loss_minus_none_same_seed")
    v = _verdict(same, noise)
    out.append(f"- Same steps: token dropping ends {same['median']:+.3f} nats from no dropping (same seed; {v}), "
               f"for {tok['flop_saving_vs_none']:.1%} fewer FLOPs"
               + (" -- consistent with the paper's claim of the same quality for less compute." if v != "beyond seed noise"
                  else "."))
    matched = paired.get(("token", "none-matched"))
    if matched:
        v = _verdict(matched, noise)
        better = matched["median"] < 0
        out.append(f"- Same FLOPs: token dropping ends {matched['median']:+.3f} nats from no dropping trained on its "
                   f"own schedule to the same cost ({v}): "
                   + ("at equal compute, dropping gives the better model here." if better and v == "beyond seed noise"
                      else "at equal compute the two cannot be told apart here." if v != "beyond seed noise"
                      else "at equal compute, no dropping is better here."))
    rnd = paired.get(("token", "random"))
    if rnd:
        v = _verdict(rnd, noise)
        side = (": every seed on the same side, but less than the no-dropping seeds' spread"
                if v == "within seed noise" and (rnd["min"] > 0 or rnd["max"] < 0) else "")
        out.append(f"- Importance against random scores: token - random {rnd['median']:+.3f} nats ({v}{side}): "
                   + ("this scale cannot tell importance-based dropping from random dropping of the same tokens, "
                      "so the paper's choice of scores is neither supported nor contradicted here."
                      if v != "beyond seed noise" else
                      ("importance-based dropping is better." if rnd["median"] < 0 else "random dropping is better.")))
    keep = paired.get(("token", "token-keepall"))
    if keep:
        v = _verdict(keep, noise)
        out.append(f"- Reference routing against keeping every prediction position: {keep['median']:+.3f} nats ({v}).")
    overlap = []
    for t, (name, metric) in GLUE.items():
        a, b = none.get(f"{t}_{metric}_best_lr"), tok.get(f"{t}_{metric}_best_lr")
        if a and b and a["min"] <= b["max"] and b["min"] <= a["max"]:
            overlap.append(name)
    if overlap:
        out.append(f"- Fine-tuning: the seed ranges of no dropping and token dropping overlap on {', '.join(overlap)}; "
                   "models this small do not separate the variants downstream (CoLA's MCC is 0 where they predict the "
                   "majority class).")
    if crit and crit["met"]:
        out.append(f"- Scale: {crit['nats_below_unigram_entropy']:.2f} nats below the unigram entropy, so the models "
                   "learn more than word frequencies; they are still far smaller and shorter-trained than the paper's "
                   "(below), where the differences may be larger or smaller.")
    elif crit:
        out.append(f"- Scale: only {crit['nats_below_unigram_entropy']:.2f} nats below the unigram entropy (the "
                   "criterion is 1): these models have learned little beyond word frequencies, so none of the above "
                   "need carry over to a trained model.")
    return out


def _verdict(diff: dict | None, noise: float | None) -> str:
    """Whether a same-seed difference is beyond the seed-to-seed noise of no dropping: every
    seed's difference on the same side of zero, and the median larger than the spread of the
    no-dropping seeds. With one seed, nothing can be said."""
    if not diff:
        return "no paired seed"
    if diff["n"] < 2 or noise is None:
        return "one seed: cannot be told from noise"
    same_side = diff["min"] > 0 or diff["max"] < 0
    if same_side and abs(diff["median"]) > noise:
        return "beyond seed noise"
    return "within seed noise"


def write_report(report: dict, dest: Path) -> None:
    """``report.md`` from ``results.json``'s content: only statements computed from it."""
    from leanbert.io import atomic_write_text

    st, uni, summ = report["settings"], report["unigram"], report["summary"]
    rows, crit = summ["variants"], summ["scale_criterion"]
    runs, prov = report["runs"], report.get("provenance", {})
    done = sorted(f"{r['variant']}-seed{r['seed']}" for r in runs)
    # The machines and commits the runs themselves were trained on (not the one writing the report)
    run_machines = sorted({f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores"
                           for r in runs for m in [r.get("provenance", {}).get("machine", {})]})
    run_commits = sorted({str(r.get("provenance", {}).get("commit", "?"))[:10] for r in runs})
    out = ["# Token dropping (Hou et al., ACL 2022) on a 2-core CPU", "",
           "Generated by `run.py` from `results.json` (do not edit; rerun the script). "
           + ("All planned runs are finished." if report["complete"] else
              f"**Partial: {len(runs)} of the planned runs are finished** ({', '.join(done) or 'none'}); "
              "the others are missing, not left out."), "",
           "## Setup", "", "| | |", "|---|---|",
           f"| data | the first {st['books']} Gutenberg books of `../shared/data/pretrain/gutenberg/clean`, "
           f"{st['vocab']:,}-id WordPiece tokenizer trained on them, packed {st['length']}-token examples, "
           f"2% of documents held out ({uni['heldout_tokens']:,} held-out tokens, {uni['train_tokens']:,} training tokens) |",
           (f"| model | BERT, {st['layers']} layers, hidden {st['hidden']}, {st['heads']} heads, FFN {4 * st['hidden']} |"
            if st.get("family", "bert") == "bert" else
            f"| model | MobileBERT-shaped, {st['layers']} layers, inter-block {st['hidden']}, bottleneck "
            f"{st['hidden'] // 4}, {st['heads']} heads, 4 stacked FFNs of {st['hidden']}, NoNorm, ReLU, trigram "
            "embedding 64 |"),
           f"| pretraining | {st['steps']:,} steps x {st['batch']} x {st['length']} tokens, 15% masking, AdamW lr "
           f"{st['lr']}, {st['warmup']:.0%} warm-up then linear decay, bf16 autocast, one CPU thread per run |",
           f"| dropping | keep {st['keep']:.0%} of the tokens in the middle layers (the reference layout); `token`: "
           "only [MASK] inputs always kept (reference routing); `token-keepall`: every prediction position kept; "
           "`random`: the same routing, random scores |",
           f"| held-out metric | MLM loss on {st['eval_batches']} fixed validation batches every {st['eval_every']} "
           "steps, without dropping (dropping runs also with it at the end) |",
           f"| fine-tuning | SST-2 (first {st['sst2_train']:,} training sentences), MRPC, CoLA; {st['ft_epochs']} epochs, "
           f"length {st['ft_length']}, lr in {st['ft_lrs']}; the best lr per run, then median over seeds |",
           f"| machine | runs trained on: {'; '.join(run_machines) or '?'} (commits {', '.join(run_commits) or '?'}); "
           f"report written at commit {str(prov.get('commit', '?'))[:10]}{' (dirty tree)' if prov.get('dirty') else ''} |",
           ""]
    out += ["## Is the scale large enough?", ""]
    if crit:
        out.append(f"Held-out unigram entropy (this tokenizer): {crit['heldout_unigram_entropy']:.3f} nats. "
                   f"No dropping ends at {crit['none_final_mlm_loss_median']:.3f} (median over seeds): "
                   f"{crit['nats_below_unigram_entropy']:.2f} nats below it. The issue's criterion (at least 1 nat "
                   f"below) is **{'met' if crit['met'] else 'not met'}**"
                   + ("." if crit["met"] else ": these models are far from trained, so differences between the "
                      "variants here may not carry over to the paper's scale (BERT-base, 1M steps of 512 x 512 tokens)."))
    else:
        out.append("No no-dropping run has finished yet: the criterion cannot be checked.")
    out += ["", "## Results", "",
            "Median [min, max] (number of seeds). Loss in nats, FLOPs analytic (training steps only).", "",
            "| variant | seeds | held-out loss | with dropping | MLM accuracy | TFLOPs | FLOPs saved | "
            "training time saved (calibrated) | wall-clock saved (as run) | SST-2 acc | MRPC F1 | CoLA MCC |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        row = rows.get(variant)
        if not row:
            out.append(f"| {variant} | missing | | | | | | | | | | |")
            continue
        out.append(
            f"| {variant} | {','.join(map(str, row['seeds']))} | {_fmt(row['final_mlm_loss'])} | "
            f"{_fmt(row.get('final_mlm_loss_with_dropping'))} | {_fmt(row['final_mlm_accuracy'])} | "
            f"{row['train_flops']['median'] / 1e12:.1f} | "
            + (f"{row['flop_saving_vs_none']:.1%}" if "flop_saving_vs_none" in row else "–") + " | "
            + (f"{row['calibrated_time_saving_vs_none']:.1%}" if "calibrated_time_saving_vs_none" in row else "–")
            + " | "
            + (f"{row['measured_time_saving_vs_none']:.1%}" if "measured_time_saving_vs_none" in row else "–") + " | "
            + " | ".join(_fmt(row.get(f"{t}_{m}_best_lr"), 100, 1) for t, (_, m) in GLUE.items()) + " |")
    out += ["", "Training time saved (calibrated): seconds per training step of each variant measured interleaved on "
            "a quiet machine (`--calibrate`, one thread), times the run's steps; wall-clock saved (as run): the "
            "runs' own training time, which depends on what shared the two cores with them (two runs at a time, "
            "pauses for benchmarks)."]
    base = rows.get("none")
    noise = base["final_mlm_loss"]["max"] - base["final_mlm_loss"]["min"] if base and base["final_mlm_loss"]["n"] > 1 else None
    out += ["", "Held-out loss differences between variants, same seed and number of steps (negative: the "
            "first is better). 'Beyond seed noise' means every seed's difference has the same sign and the median "
            "exceeds the spread of the no-dropping seeds"
            + (f" ({noise:.3f} nats)." if noise is not None else " (needs at least two no-dropping seeds)."), "",
            "| comparison | held-out loss difference (same seed) | verdict |", "|---|---|---|"]
    for variant, row in rows.items():
        if variant != "none":
            d = row.get("final_loss_minus_none_same_seed")
            out.append(f"| {variant} - none | {_fmt(d)} | {_verdict(d, noise)} |")
    by = {(r["variant"], r["seed"]): r["final_mlm_loss"] for r in runs}
    paired: dict[tuple[str, str], dict | None] = {}
    for a, b in (("token", "random"), ("token", "token-keepall"), ("token", "none-matched")):
        d = spread([by[(a, seed)] - by[(b, seed)] for (v, seed) in by if v == a and (b, seed) in by])
        paired[(a, b)] = d
        if d:
            out.append(f"| {a} - {b} | {_fmt(d)} | {_verdict(d, noise)} |")
    tok, matched = rows.get("token"), rows.get("none-matched")
    if tok and matched:
        d = tok["final_mlm_loss"]["median"] - matched["final_mlm_loss"]["median"]
        out += ["", f"At matched cost (no dropping with its own schedule ending at the token run's FLOPs): token "
                f"dropping {tok['final_mlm_loss']['median']:.3f} against {matched['final_mlm_loss']['median']:.3f} "
                f"({d:+.3f} nats; seeds {tok['seeds']} / {matched['seeds']})."]
    tables = [r for r in runs if "score_table" in r]
    if tables:
        t = tables[0]["score_table"]
        rhos = ", ".join(f"{r['variant']} seed {r['seed']}: {r['score_table']['spearman_score_vs_log_frequency']:+.2f}"
                         for r in tables)
        out += ["", "## The score table at the end", "",
                f"Spearman correlation between a token's final score (its running MLM loss) and its log training "
                f"frequency, over ids seen at least 20 times: {rhos}. Mean score by frequency decile (most frequent "
                f"first; {tables[0]['variant']} seed {tables[0]['seed']}): "
                + ", ".join(f"{x:.2f}" for x in t["mean_score_by_frequency_decile"]) + ".",
                "", "Lowest-scored (dropped first): " + ", ".join(f"`{r['token']}`" for r in t["lowest_scores"][:15]),
                "", "Most frequent: " + ", ".join(f"`{r['token']}` ({r['score']:.2f})" for r in t["most_frequent"][:15])]
    out += ["", "## What this scale can and cannot show", ""] + _claims(rows, paired, noise, crit)
    out += ["", "## The paper's numbers beside ours", "",
            "Hou et al. (ACL 2022): BERT-base, 1M steps of 512 sequences x 512 tokens, keep 256 of 512 tokens in "
            "layers 6-11: pretraining time -25% at similar GLUE and SQuAD scores (SPEC Sec. 1). Here: "
            + (f"FLOPs -{tok['flop_saving_vs_none']:.1%}, "
               + (f"step time -{tok['calibrated_time_saving_vs_none']:.1%} (calibrated) "
                  if "calibrated_time_saving_vs_none" in tok else
                  f"measured time -{tok['measured_time_saving_vs_none']:.1%} ")
               + f"at {tok['final_mlm_loss']['median'] - base['final_mlm_loss']['median']:+.3f} nats of held-out loss "
               "(same steps)" if tok and base and "flop_saving_vs_none" in tok else "not measured yet")
            + f", at about 1/{round(512 * 512 * 1_000_000 / (st['batch'] * st['length'] * st['steps'])):,} "
            "of the paper's training tokens.", "",
            "![held-out loss against FLOPs](loss_vs_flops.png)", "", "![held-out loss against time](loss_vs_time.png)", ""]
    atomic_write_text(dest / "report.md", "\n".join(out))


COLORS = {"none": "tab:blue", "token": "tab:red", "random": "tab:green", "token-keepall": "tab:purple",
          "none-matched": "tab:gray"}


def plot(runs: list[dict], dest: Path, step_seconds: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    axes = [("flops", "training FLOPs (analytic)", "loss_vs_flops.png")]
    axes.append(("seconds", "training wall-clock (s; 2 CPU cores, bf16" +
                 (", per-step time calibrated interleaved)" if step_seconds else ", as measured)"), "loss_vs_time.png"))
    for key, label, name in axes:
        fig, ax = plt.subplots(figsize=(7.0, 4.5))
        for variant, color in COLORS.items():
            rs = [r for r in runs if r["variant"] == variant]
            if not rs:
                continue
            steps = [p["step"] for p in rs[0]["curve"]]
            rs = [r for r in rs if [p["step"] for p in r["curve"]] == steps]
            ys = np.array([[p["mlm_loss"] for p in r["curve"]] for r in rs])
            if key == "seconds" and step_seconds and variant in step_seconds:
                xs = np.array(steps) * step_seconds[variant]
            else:
                xs = np.array([[p[key] for p in r["curve"]] for r in rs]).mean(0)
            ax.plot(xs, np.median(ys, 0), color=color, label=f"{variant} ({len(rs)} seeds)")
            if len(rs) > 1:
                ax.fill_between(xs, ys.min(0), ys.max(0), color=color, alpha=0.2)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out MLM loss (nats; no dropping at evaluation)")
        ax.set_ylim(top=min(ax.get_ylim()[1], 8.0))
        ax.set_title("Token dropping: median over seeds, band = min-max")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(dest / name, dpi=120)
        plt.close(fig)


# ----------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------


def plan(args) -> list[tuple[str, int]]:
    """Runs in the order they are taken: seed-major, so partial results stay balanced."""
    order = []
    for seed in args.seeds:
        for variant in ("none", "token", "random", "none-matched", "token-keepall"):
            if variant == "token-keepall" and seed not in args.keepall_seeds:
                continue
            if variant in args.variants:
                order.append((variant, seed))
    return order


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(work: Path, name: str) -> bool:
    """Take run ``name`` for this process (several workers share one work dir): an exclusive
    claim file holding our pid; a claim whose process is gone is taken over."""
    import os

    claims = work / "claims"
    claims.mkdir(exist_ok=True)
    path = claims / name
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(path.read_text() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner == os.getpid():
                return True
            if owner and _alive(owner):
                return False
            path.unlink(missing_ok=True)  # stale: its worker died
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", choices=["bert", "mobilebert"], default="bert",
                   help="model family; mobilebert writes its records, results and report under mobilebert/ "
                        "(and runs under work/mobilebert/), apart from the BERT experiment")
    p.add_argument("--work", default=None, help="runs (default: work/, work/mobilebert/ for --family mobilebert)")
    p.add_argument("--books", type=int, default=64)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--length", type=int, default=64)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--heads", type=int, default=None, help="attention heads (default: 2 for bert, 4 for mobilebert)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--lr", type=float, default=1.5e-3)
    p.add_argument("--warmup", type=float, default=0.06, help="warm-up steps as a fraction of the run's steps")
    p.add_argument("--keep", type=float, default=0.5)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-batches", type=int, default=20)
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--keepall-seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1])
    p.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS))
    p.add_argument("--ft-lrs", type=lambda s: [float(x) for x in s.split(",")], default=[1e-4, 3e-4])
    p.add_argument("--ft-epochs", type=int, default=2)
    p.add_argument("--ft-length", type=int, default=64)
    p.add_argument("--sst2-train", type=int, default=6000)
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (start one worker per core with --threads 1: faster in all)")
    p.add_argument("--no-finetune", action="store_true")
    p.add_argument("--calibrate", action="store_true", help="measure per-step times interleaved (run on a quiet machine)")
    p.add_argument("--quick", action="store_true", help="write results to the work dir, not next to this file")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite results.json, report.md and the plots from the finished runs' records, run nothing")
    args = p.parse_args(argv)
    if args.heads is None:
        args.heads = 2 if args.family == "bert" else 4
    if args.work is None:
        args.work = str(HERE / "work" / ("mobilebert" if args.family == "mobilebert" else ""))
    if not SHARED.is_dir():
        sys.exit(f"real data not found at {SHARED}")
    import fcntl

    from leanbert.io import atomic_write_json
    from leanbert.provenance import provenance, with_provenance

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dest = work if args.quick else (HERE / "mobilebert" if args.family == "mobilebert" else HERE)
    dest.mkdir(parents=True, exist_ok=True)
    with open(work / "prepare.lock", "w") as lock:  # one worker prepares, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = prepare_data(args, work)
        unigram_path = work / "unigram.json"
        if unigram_path.is_file():
            unigram = json.loads(unigram_path.read_text())
        else:
            unigram = unigram_reference(data, args)
            unigram["train_counts"] = unigram["train_counts"].tolist()
            atomic_write_json(unigram_path, unigram)
    train_counts = unigram.pop("train_counts")
    print(f"held-out unigram entropy {unigram['heldout_unigram_entropy']:.3f} nats; a frequency-only model "
          f"scores {unigram['train_unigram_ce_on_eval_targets']:.3f} on the held-out MLM targets", flush=True)
    # Finished runs' records (curves, scores, GLUE) and the calibrated step times: small, committed
    # next to this file, so that a run finished in one session counts in the next (the work dir
    # with checkpoints is not kept).
    records = dest / "records"
    records.mkdir(exist_ok=True)
    calib_path = records / "step_seconds.json"  # {"setup": the settings measured at, "seconds": ...}

    # What a record must have been made with to count (a changed setting makes it stale).
    setup = {k: v for k, v in vars(args).items() if k in RECORD_KEYS}

    def finished() -> list[dict]:
        runs = []
        for variant, seed in plan(args):
            path = records / f"{variant}-seed{seed}.json"
            if path.is_file():
                run = json.loads(path.read_text())
                if run.get("setup") == setup:
                    runs.append(run)
        return runs

    def calibrated() -> dict | None:
        saved = json.loads(calib_path.read_text()) if calib_path.is_file() else {}
        return saved.get("seconds") if saved.get("setup") == setup else None

    def write() -> None:
        runs = finished()
        step_seconds = calibrated()
        report = {"settings": {k: v for k, v in vars(args).items() if k not in ("work", "threads")},
                  "unigram": unigram, "step_seconds_calibrated": step_seconds,
                  "summary": summarise(runs, unigram, step_seconds), "runs": runs,
                  "complete": len(runs) == len(plan(args))}
        report = with_provenance(report, HERE.parents[1])
        atomic_write_json(dest / "results.json", report)
        if runs:
            plot(runs, dest, step_seconds)
            write_report(report, dest)

    if args.report_only:
        write()
        print(f"wrote {dest / 'results.json'} and report.md from {len(finished())} finished runs")
        return 0
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    while True:
        done = {(r["variant"], r["seed"]) for r in finished()}
        todo = [(v, s) for v, s in plan(args) if (v, s) not in done]
        if not todo:
            break
        progressed = False
        for variant, seed in todo:
            name = f"{variant}-seed{seed}"
            steps = args.steps
            if variant == "none-matched":
                runs = {(r["variant"], r["seed"]): r for r in finished()}
                ref, none = runs.get(("token", seed)), runs.get(("none", seed))
                if ref is None or none is None:
                    continue  # waits for its token and none runs
                steps = round(ref["train_flops"] / none["flops_per_step"])
            if not claim(work, name):
                continue
            print(f"pretraining: {variant}, seed {seed}, {steps} steps", flush=True)
            run = pretrain_run(args, data, work / f"pretrain-{name}", variant, seed, steps)
            if VARIANTS[variant]["method"] != "none":
                run["with_dropping"] = evaluate_with_dropping(args, data, run)
            if VARIANTS[variant]["method"] == "token":
                run["score_table"] = score_table_dump(run, train_counts, work / "tokenizer")
            print(f"  held-out loss {run['final_mlm_loss']:.3f} (accuracy {run['final_mlm_accuracy']:.3f})"
                  + (f", with dropping {run['with_dropping']['mlm_loss']:.3f}" if "with_dropping" in run else ""),
                  flush=True)
            if not args.no_finetune:
                run["glue"] = finetune_all(args, run, work)
            run["setup"] = setup
            run["provenance"] = provenance(HERE.parents[1])
            atomic_write_json(records / f"{name}.json", run)
            write()
            progressed = True
            break
        if not progressed:
            time.sleep(30)  # the rest is claimed by other workers, or waits for their results
    if args.calibrate:
        step_seconds = calibrate(args, data, work, [v for v in ("none", "token", "random", "token-keepall")
                                                    if v in args.variants])
        step_seconds["none-matched"] = step_seconds["none"]
        atomic_write_json(calib_path, {"setup": setup, "seconds": step_seconds})
    write()
    print(json.dumps(summarise(finished(), unigram, calibrated()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
