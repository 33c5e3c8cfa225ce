"""Fine-tuning and evaluation on GLUE and SQuAD: BERT's recipe (Devlin et al. 2019, Sec. 4).

Recipe: a fresh task head on the pretrained encoder (dropout + linear on the pooled
``[CLS]`` state for GLUE, Sec. 4.1; start/end vectors over the tokens for SQuAD, Sec. 4.2),
all weights trained with AdamW (no weight decay on biases and LayerNorm), linear warm-up
then linear decay to zero, gradient clipping, a few epochs. The model is evaluated on the
dev split(s) after every epoch and the best epoch (by the task's first metric) is kept:
its checkpoint, its dev predictions and, for GLUE, its test predictions in the GLUE
server's format.

Outputs under ``output``::

    model/                 the best checkpoint (leanbert format; metadata names task and labels)
    metrics.json           config, data, per-epoch history and the best epoch's metrics
    metrics.jsonl          training loss, learning rate, examples/s every ``log_every`` steps; dev metrics
    checkpoints/           the last training checkpoint (a rerun resumes from it), tensorboard/
    predictions/<split>.tsv            GLUE dev predictions (submission format)
    submission/<CoLA.tsv|...>          GLUE test predictions for the GLUE server
    predictions/predictions.json       SQuAD: answer text by question id
    predictions/null_odds.json         SQuAD v2.0: no-answer score by question id
    predictions/nbest_predictions.json SQuAD: the n best spans with probabilities

Works with every leanbert encoder and with imported transformers checkpoints, since it
only uses the model's forward contract (``leanbert.models.model``). Token dropping is a
pretraining method: fine-tuning runs the full encoder, as in Hou et al. 2022, Sec. 4.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from leanbert.config import StrictConfig, load_config
from leanbert.errors import ConfigError, DataError
from leanbert.io import atomic_write_json
from leanbert.tasks import datafiles, glue, squad
from leanbert.tasks.metrics import glue_metrics, squad_metrics
from leanbert.tasks.registry import TaskSpec, get_task


class FinetuneConfig(StrictConfig):
    """Hyper-parameters of one fine-tuning run (defaults: BERT's GLUE recipe, Sec. 4.1)."""

    epochs: int = Field(3, ge=1)
    max_steps: int | None = Field(None, ge=1)  # stop early (smoke runs); None: all epochs
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-5, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, lt=1)
    adam_beta1: float = Field(0.9, ge=0, lt=1)
    adam_beta2: float = Field(0.999, ge=0, lt=1)
    adam_eps: float = Field(1e-6, gt=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_seq_length: int = Field(128, ge=8)
    seed: int = 42
    train_limit: int | None = Field(None, ge=1)  # the first N training examples only
    eval_limit: int | None = Field(None, ge=1)  # the first N evaluation examples only
    classifier_dropout: float | None = Field(None, ge=0, lt=1)
    log_every: int = Field(50, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda if available, else cpu
    threads: int | None = Field(None, ge=1)  # CPU threads for torch; None: torch's default
    # The engine's options (leanbert.train.engine): precision, accumulation, resume, loggers.
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    micro_batch_size: int | None = Field(None, ge=1)  # per process; batch_size / it = accumulation steps
    deterministic: bool = False
    # Recompute each encoder layer's activations in the backward pass (less memory, ~1.25x time).
    activation_checkpointing: bool = False
    speedups: bool = True  # leanbert.optimize(model): oneDNN products, cheaper dropout mask (CPU)
    # Quantization-aware training (leanbert.deploy.qat): ReLU6, the linear layers compute in int8 and
    # learn through straight-through fake quantization; metrics.json adds the saved int8 model's metrics.
    qat: bool = False
    checkpoint_every: int | None = Field(None, ge=1)  # steps; None: after every epoch
    keep_checkpoints: int = Field(1, ge=1)
    tensorboard: bool = True
    callbacks: list[Literal["wandb", "mlflow"]] = Field(default_factory=list)
    predict_test: bool = True  # GLUE: write test predictions (if the test file exists)
    # SQuAD (BERT run_squad.py defaults)
    doc_stride: int = Field(128, ge=1)
    max_query_length: int = Field(64, ge=1)
    n_best_size: int = Field(20, ge=1)
    max_answer_length: int = Field(30, ge=1)
    null_score_diff_threshold: float = 0.0
    # One SQuAD file split by article: the first N train, the rest evaluate (default 3/4 when
    # fine-tuning on a single file; set it for `evaluate` too to score the held-out articles).
    train_articles: int | None = Field(None, ge=1)
    progress: bool | None = None  # a progress bar; None: only on a terminal


def finetune_config(task: TaskSpec, config: str | Path | None = None, overrides: Sequence[str] = ()) -> FinetuneConfig:
    """The run config: a preset (default ``glue`` or ``squad`` by task) or a YAML file, plus
    ``key=value`` overrides."""
    if config is None:
        config = "squad" if task.kind == "span_qa" else "glue"
    return load_config(FinetuneConfig, "finetune", config, overrides)


# What fine-tuning records that evaluation must reuse: the encoding and the answer post-processing.
RECORDED_EVAL_KEYS = ("max_seq_length", "doc_stride", "max_query_length", "n_best_size", "max_answer_length",
                      "null_score_diff_threshold")


def evaluation_config(task: TaskSpec, recorded: dict[str, Any] | None, config: str | Path | None = None,
                      overrides: Sequence[str] = ()) -> FinetuneConfig:
    """:func:`finetune_config` with the sequence and answer settings that fine-tuning recorded
    (``recorded``: the checkpoint's ``finetune`` metadata or an ONNX card's) in place of the
    preset's, so a model is evaluated as it was trained (a model fine-tuned at length 64 is not
    fed 128 tokens); explicit ``overrides`` win."""
    recorded = recorded if isinstance(recorded, dict) else {}
    base = [f"{k}={recorded[k]}" for k in RECORDED_EVAL_KEYS if recorded.get(k) is not None]
    return finetune_config(task, config, [*base, *overrides])


# ----------------------------------------------------------------------------------------
# Data: encoded examples and batches
# ----------------------------------------------------------------------------------------


@dataclass
class EncodedGlue:
    split: glue.GlueSplit
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    targets: list[float | int] | None


def _truncating_tokenizer(tokenizer: Any, max_len: int) -> Any:
    tok = squad.plain_tokenizer(tokenizer)
    tok.enable_truncation(max_len, strategy="longest_first")  # BERT's _truncate_seq_pair
    return tok


def encode_glue(task: TaskSpec, split: glue.GlueSplit, tokenizer: Any, max_seq_length: int) -> EncodedGlue:
    """``[CLS] a [SEP] (b [SEP])`` token ids per example, truncated longest-first."""
    tok = _truncating_tokenizer(tokenizer, max_seq_length)
    texts = [ex.texts[0] if len(ex.texts) == 1 else (ex.texts[0], ex.texts[1]) for ex in split.examples]
    enc = tok.encode_batch(texts, add_special_tokens=True)
    targets = None
    if split.has_labels:
        targets = [glue.label_to_target(task, ex.label) for ex in split.examples]  # type: ignore[arg-type]
    return EncodedGlue(split, [e.ids for e in enc], [e.type_ids for e in enc], targets)


def _pad(rows: Sequence[Sequence[int]], value: int = 0):
    import torch

    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def collate(input_ids: Sequence[Sequence[int]], token_type_ids: Sequence[Sequence[int]], pad_id: int = 0) -> dict[str, Any]:
    """Pad to the longest row of the batch; attention mask 1 on real tokens."""
    ids = _pad(input_ids, pad_id)
    mask = _pad([[1] * len(r) for r in input_ids], 0)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": _pad(token_type_ids, 0)}


def _batches(n: int, batch_size: int, rng: random.Random | None) -> list[list[int]]:
    order = list(range(n))
    if rng is not None:
        rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _batches_by_length(rows: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Inference batches of similar lengths (less padding); results are put back in order."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# ----------------------------------------------------------------------------------------
# Model, optimizer, schedule
# ----------------------------------------------------------------------------------------


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"bad device '{name}'; use auto, cpu, cuda or cuda:N") from None


def head_for(task: TaskSpec) -> str:
    return "span_qa" if task.kind == "span_qa" else "classifier"


def load_for_finetuning(model_dir: str | Path, task: TaskSpec, cfg: FinetuneConfig):
    """The pretrained encoder of ``model_dir`` with a freshly initialised head for ``task``."""
    from leanbert.checkpoint import from_pretrained

    head = head_for(task)
    overrides: dict[str, Any] = {}
    if head == "classifier":
        overrides["num_labels"] = task.num_labels
        overrides["problem_type"] = "regression" if task.kind == "regression" else "single_label_classification"
    if cfg.classifier_dropout is not None:
        overrides["classifier_dropout"] = cfg.classifier_dropout
    return from_pretrained(model_dir, heads=[head], new_heads=[head], **overrides)


# ----------------------------------------------------------------------------------------
# Prediction
# ----------------------------------------------------------------------------------------


def glue_logits(model, data: EncodedGlue, batch_size: int, device) -> np.ndarray:
    """The classifier's outputs [N, num_labels] (fp32) in file order."""
    import torch

    model.eval()
    out: np.ndarray | None = None
    with torch.no_grad():
        for idx in _batches_by_length(data.input_ids, batch_size):
            batch = collate([data.input_ids[i] for i in idx], [data.token_type_ids[i] for i in idx])
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((len(data.input_ids), logits.shape[-1]), dtype=np.float32)
            out[idx] = logits
    return out if out is not None else np.zeros((0, 1), dtype=np.float32)


def predict_glue(model, task: TaskSpec, data: EncodedGlue, batch_size: int, device) -> list[float | int]:
    """Predicted targets (class index, or the regression value) in file order."""
    logits = glue_logits(model, data, batch_size, device)
    return logits[:, 0].tolist() if task.kind == "regression" else logits.argmax(-1).tolist()


def predict_squad(model, features: Sequence[squad.QAFeature], batch_size: int, device) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Start and end logits per feature (trimmed to the feature's length)."""
    import torch

    model.eval()
    starts: list[np.ndarray] = [np.empty(0)] * len(features)
    ends: list[np.ndarray] = [np.empty(0)] * len(features)
    with torch.no_grad():
        for idx in _batches_by_length([f.input_ids for f in features], batch_size):
            batch = collate([features[i].input_ids for i in idx], [features[i].token_type_ids for i in idx])
            out = model(**{k: v.to(device) for k, v in batch.items()})
            s, e = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for j, i in enumerate(idx):
                n = len(features[i].input_ids)
                starts[i], ends[i] = s[j, :n], e[j, :n]
    return starts, ends


# ----------------------------------------------------------------------------------------
# Task adapters: what differs between GLUE and SQuAD
# ----------------------------------------------------------------------------------------


@dataclass
class EvalResult:
    metrics: dict[str, dict[str, float]]  # split -> metric -> value
    write: Callable[[Path], list[str]]  # writes the predictions under a directory; returns paths


class GlueRun:
    def __init__(self, task: TaskSpec, data: str | Path | datafiles.DataFiles, tokenizer: Any, cfg: FinetuneConfig, *, train: bool = True,
                 eval_splits: Sequence[str] | None = None) -> None:
        self.task, self.data, self.tokenizer, self.cfg = task, data, tokenizer, cfg
        self.train_data = None
        read = datafiles.read_sequence_split  # GLUE TSV, GLUE in the hub's layout, or own files
        if train:
            self.train_data = encode_glue(task, read(task, data, "train", limit=cfg.train_limit), tokenizer, cfg.max_seq_length)
        self.eval_data = {
            s: encode_glue(task, read(task, data, s, limit=cfg.eval_limit), tokenizer, cfg.max_seq_length)
            for s in (eval_splits or task.eval_splits)
        }

    def describe(self) -> dict[str, Any]:
        out = {s: {"file": str(d.split.path), "examples": len(d.input_ids)} for s, d in self.eval_data.items()}
        if self.train_data is not None:
            out["train"] = {"file": str(self.train_data.split.path), "examples": len(self.train_data.input_ids),
                            "skipped_malformed_lines": len(self.train_data.split.skipped_lines)}
        return out

    def num_train(self) -> int:
        return len(self.train_data.input_ids)  # type: ignore[union-attr]

    def train_batch(self, idx: list[int]) -> dict[str, Any]:
        import torch

        d = self.train_data
        batch = collate([d.input_ids[i] for i in idx], [d.token_type_ids[i] for i in idx])  # type: ignore[union-attr]
        dtype = torch.float32 if self.task.kind == "regression" else torch.long
        batch["task_labels"] = torch.tensor([d.targets[i] for i in idx], dtype=dtype)  # type: ignore[union-attr,index]
        return batch

    def evaluate(self, model, device) -> EvalResult:
        metrics: dict[str, dict[str, float]] = {}
        preds: dict[str, list[float | int]] = {}
        for split, d in self.eval_data.items():
            preds[split] = predict_glue(model, self.task, d, self.cfg.eval_batch_size, device)
            if d.targets is not None:
                metrics[split] = glue_metrics(self.task, d.targets, preds[split])

        def write(directory: Path) -> list[str]:
            paths = []
            for split, d in self.eval_data.items():
                # test splits get the GLUE server's file name (CoLA.tsv, MNLI-m.tsv, AX.tsv, ...)
                path = directory / self.task.test_splits.get(split, f"{split}.tsv")
                glue.write_predictions(path, [ex.guid for ex in d.split.examples],
                                       [glue.format_prediction(self.task, p) for p in preds[split]])
                paths.append(str(path))
            return paths

        return EvalResult(metrics, write)

    def write_test(self, model, device, directory: Path) -> list[str]:
        """GLUE server files (CoLA.tsv, MNLI-m.tsv, AX.tsv, ...) for the test files present."""
        paths = []
        for split, server_name in self.task.test_splits.items():
            try:
                test = datafiles.read_sequence_split(self.task, self.data, split)  # TSV or the hub's layout
            except DataError:
                continue  # no such test file here (e.g. the diagnostic set beside MNLI)
            enc = encode_glue(self.task, test, self.tokenizer, self.cfg.max_seq_length)
            preds = predict_glue(model, self.task, enc, self.cfg.eval_batch_size, device)
            path = directory / server_name
            glue.write_predictions(path, [ex.guid for ex in test.examples], [glue.format_prediction(self.task, p) for p in preds])
            paths.append(str(path))
        return paths


def squad_files(task: TaskSpec, data: Any, cfg: FinetuneConfig, train: bool) -> tuple[squad.SquadData | None, squad.SquadData, str]:
    """(train, eval, how they were chosen) for SQuAD ``data``: a directory holding the
    official ``train-vX.json`` and ``dev-vX.json``, or one file split by article; or the same
    from tables (:func:`~leanbert.tasks.datafiles.squad_tables`: own files, the hub's layout)."""
    v = task.squad_version
    from_tables = datafiles.squad_tables(task, data, train)
    if from_tables is not None:
        tr, ev, how, single = from_tables
        return _split_by_article(ev, cfg, train, how) if single else (tr, ev, how)
    data = Path(data)
    if data.is_dir():
        train_f, dev_f = data / f"train-v{v}.json", data / f"dev-v{v}.json"
        if not dev_f.is_file():
            raise DataError(f"no dev-v{v}.json in {data}; give the SQuAD directory or a SQuAD JSON file")
        if not train or train_f.is_file():
            return (squad.read_squad(train_f, task) if train else None), squad.read_squad(dev_f, task), f"{train_f.name} / {dev_f.name}"
        data = dev_f
    return _split_by_article(squad.read_squad(data, task), cfg, train, data.name)


def _split_by_article(full: squad.SquadData, cfg: FinetuneConfig, train: bool, name: str
                      ) -> tuple[squad.SquadData | None, squad.SquadData, str]:
    """One SQuAD source: all of it evaluates, or (training, or ``train_articles`` set) the first
    articles train and the rest evaluate."""
    if not train and cfg.train_articles is None:
        return None, full, name
    n_train = cfg.train_articles or max(1, round(0.75 * len(full.articles)))
    tr, ev = squad.split_by_article(full, n_train)
    how = (f"{name} split by article: articles 1-{n_train} train ({len(tr)} questions), "
           f"{n_train + 1}-{len(full.articles)} evaluate ({len(ev)} questions)")
    return (tr if train else None), ev, how


class SquadRun:
    def __init__(self, task: TaskSpec, data: str | Path | datafiles.DataFiles, tokenizer: Any, cfg: FinetuneConfig, *, train: bool = True) -> None:
        self.task, self.cfg = task, cfg
        tr, ev, self.how = squad_files(task, data, cfg, train)
        if cfg.eval_limit is not None:
            ev.examples = ev.examples[: cfg.eval_limit]
            keep = {ex.qid for ex in ev.examples}
            ev.articles = _filter_articles(ev.articles, keep)
        self.eval_data = ev
        kw = {"max_seq_length": cfg.max_seq_length, "doc_stride": cfg.doc_stride, "max_query_length": cfg.max_query_length}
        self.eval_features = squad.make_features(ev.examples, tokenizer, **kw)
        self.train_features: list[squad.QAFeature] = []
        self.train_examples = 0
        if tr is not None:
            examples = tr.examples[: cfg.train_limit] if cfg.train_limit else tr.examples
            self.train_examples = len(examples)
            self.train_features = squad.make_features(examples, tokenizer, training=True, **kw)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.how, "dev": {"questions": len(self.eval_data), "features": len(self.eval_features)}}
        if self.train_features:
            out["train"] = {"questions": self.train_examples, "features": len(self.train_features)}
        return out

    def num_train(self) -> int:
        return len(self.train_features)

    def train_batch(self, idx: list[int]) -> dict[str, Any]:
        import torch

        feats = [self.train_features[i] for i in idx]
        batch = collate([f.input_ids for f in feats], [f.token_type_ids for f in feats])
        batch["start_positions"] = torch.tensor([f.start_position for f in feats], dtype=torch.long)
        batch["end_positions"] = torch.tensor([f.end_position for f in feats], dtype=torch.long)
        return batch

    def evaluate(self, model, device) -> EvalResult:
        cfg = self.cfg
        starts, ends = predict_squad(model, self.eval_features, cfg.eval_batch_size, device)
        v2 = self.task.squad_version == "2.0"
        preds, null_odds, nbest = squad.postprocess_predictions(
            self.eval_data.examples, self.eval_features, starts, ends, n_best_size=cfg.n_best_size,
            max_answer_length=cfg.max_answer_length, version_2=v2,
            null_score_diff_threshold=cfg.null_score_diff_threshold,
        )
        metrics = squad_metrics(self.task, self.eval_data.articles, preds, null_odds if v2 else None)

        def write(directory: Path) -> list[str]:
            paths = [directory / "predictions.json", directory / "nbest_predictions.json"]
            atomic_write_json(paths[0], preds)
            atomic_write_json(paths[1], nbest)
            if v2:
                paths.append(directory / "null_odds.json")
                atomic_write_json(paths[-1], null_odds)
            return [str(p) for p in paths]

        return EvalResult({"dev": metrics}, write)

    def write_test(self, model, device, directory: Path) -> list[str]:
        return []  # SQuAD has no public test set


def _filter_articles(articles: list[dict[str, Any]], keep: set[str]) -> list[dict[str, Any]]:
    out = []
    for a in articles:
        paragraphs = []
        for p in a["paragraphs"]:
            qas = [qa for qa in p["qas"] if qa["id"] in keep]
            if qas:
                paragraphs.append({**p, "qas": qas})
        if paragraphs:
            out.append({**a, "paragraphs": paragraphs})
    return out


def make_run(task: TaskSpec, data: Any, tokenizer: Any, cfg: FinetuneConfig, *, train: bool,
             eval_splits: Sequence[str] | None = None) -> GlueRun | SquadRun:
    """The run of ``task`` on ``data`` (a path, or :class:`~leanbert.tasks.datafiles.DataFiles`
    for the tasks on own files); its ``task`` carries the labels read from the training data."""
    if train:
        task = datafiles.resolve_task(task, data)
    if task.kind == "span_qa":
        return SquadRun(task, data, tokenizer, cfg, train=train)
    return GlueRun(task, data, tokenizer, cfg, train=train, eval_splits=eval_splits)


def main_score(task: TaskSpec, metrics: dict[str, dict[str, float]]) -> float:
    """The number that picks the best epoch: the task's first metric on its first split."""
    first = next(iter(metrics.values()))
    value = first[task.main_metric]
    return -math.inf if value is None or math.isnan(value) else float(value)


# ----------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` CPU threads, then restore torch's setting (None: leave it alone)."""
    import torch

    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_seed(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TaskObjective:
    """The fine-tuning loss as an engine objective (:mod:`leanbert.train.engine`): the summed
    per-example loss of the task head (:mod:`leanbert.losses`), normalised by the global
    number of examples of the step. ``kind``: classification, regression or span_qa."""

    kind: str
    terms: tuple[str, ...] = ("task",)

    def counts(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch

        return {"task": torch.tensor(batch["input_ids"].shape[0], device=batch["input_ids"].device)}

    def __call__(self, model, batch: dict[str, Any], router: Any = None) -> dict[str, Any]:
        from leanbert import losses

        # Sequence tasks read only [CLS]: the layers run on the real tokens (Packing), a third of
        # the rows on GLUE batches. Span QA scores every position, so it keeps the padded layout.
        out = model(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"),
                    packed=self.kind != "span_qa")
        if self.kind == "span_qa":
            per_example, _ = losses.span_losses(out.start_logits, out.end_logits, batch["start_positions"],
                                                batch["end_positions"])
            return {"loss.task": per_example.sum()}
        per_example = losses.sequence_losses(out.logits, batch["task_labels"], self.kind == "regression")
        return {"loss.task": per_example.sum(), "logits": out.logits}

    def log_stats(self, batch: dict[str, Any], out: dict[str, Any]) -> dict[str, Any]:
        if self.kind != "classification":
            return {}
        correct = (out["logits"].argmax(-1) == batch["task_labels"]).sum()
        return {"train_accuracy": (correct, "task")}

    def flops(self, model, batch: dict[str, Any], rows: Any) -> int:
        from leanbert.models.flops import full_rows, train_flops

        size, seq_len = batch["input_ids"].shape
        return train_flops(model.config, size, rows or full_rows(model.config, seq_len))


# Keys of a fine-tuning run that must not change when it resumes (the rest is runtime only).
RESUME_KEYS = ("task", "model", "data", *(f"finetune.{k}" for k in (
    "epochs", "max_steps", "batch_size", "lr", "weight_decay", "warmup_ratio", "adam_beta1", "adam_beta2",
    "adam_eps", "max_grad_norm", "max_seq_length", "seed", "train_limit", "classifier_dropout", "precision",
    "doc_stride", "max_query_length", "train_articles", "qat")))


def engine_sections(cfg: FinetuneConfig, total_steps: int, steps_per_epoch: int) -> dict[str, Any]:
    """The engine's config sections for a fine-tuning run (BERT's recipe: AdamW, no decay on
    biases and norms, linear warm-up over ``warmup_ratio`` of the steps, then linear decay)."""
    from leanbert.train.config import CheckpointSection, LogSection, TrainSection
    from leanbert.train.optim import OptimConfig

    return {
        "train": TrainSection(max_steps=total_steps, precision=cfg.precision, seed=cfg.seed,
                              deterministic=cfg.deterministic, device=cfg.device, threads=cfg.threads,
                              speedups=cfg.speedups, activation_checkpointing=cfg.activation_checkpointing),
        "optim": OptimConfig(name="adamw", lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps,
                             weight_decay=cfg.weight_decay, schedule="linear",
                             warmup_steps=int(cfg.warmup_ratio * total_steps), clip_grad_norm=cfg.max_grad_norm),
        "checkpoint": CheckpointSection(every=cfg.checkpoint_every or steps_per_epoch, keep_last=cfg.keep_checkpoints),
        "log": LogSection(every=cfg.log_every, tensorboard=cfg.tensorboard,
                          progress=cfg.progress if cfg.progress is not None else _is_terminal(),
                          callbacks=cfg.callbacks),
    }


def _is_terminal() -> bool:
    import sys

    return sys.stderr.isatty()


def finetune(
    task: str | TaskSpec,
    data: str | Path | datafiles.DataFiles,
    model_dir: str | Path,
    output: str | Path,
    cfg: FinetuneConfig | None = None,
    *,
    stop_after: int | None = None,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Fine-tune ``model_dir`` on ``task`` and write the outputs listed in the module docstring;
    returns the content of ``metrics.json``. Runs on the shared engine: bf16, gradient
    accumulation (``micro_batch_size``), ``torchrun``, TensorBoard and loggers come from it, and
    running the same call again on the same ``output`` resumes after a kill. ``stop_after``
    ends the call after that many steps, as if killed right after a checkpoint (for tests)."""
    spec = get_task(task) if isinstance(task, str) else task
    cfg = cfg or finetune_config(spec)
    return _finetune(spec, data, model_dir, Path(output), cfg, stop_after, callbacks)


def _finetune(spec: TaskSpec, data: str | Path | datafiles.DataFiles, model_dir: str | Path, output: Path, cfg: FinetuneConfig,
              stop_after: int | None, callbacks: Sequence[Any]) -> dict[str, Any]:
    from leanbert.checkpoint import from_pretrained, save_pretrained
    from leanbert.data.tokenizer import load_tokenizer
    from leanbert.io import check_output_dir
    from leanbert.speedups import optimize
    from leanbert.train.engine import Engine

    check_output_dir(output, "finetune output")  # before any work: a file there is a usage error
    start_time = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    run = make_run(spec, data, tokenizer, cfg, train=True)
    spec = run.task  # own files: with the label names (or SQuAD version) of the training data
    n_train = run.num_train()
    if n_train == 0:
        raise DataError(f"no training examples for {spec.name} in {data}")
    set_seed(cfg.seed)
    model = load_for_finetuning(model_dir, spec, cfg)
    if cfg.max_seq_length > model.config.max_position_embeddings:
        raise ConfigError(
            f"max_seq_length {cfg.max_seq_length} exceeds the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}; lower it with --set max_seq_length=..."
        )
    if cfg.qat:  # before the engine builds the optimizer (the parameters stay the same objects)
        from leanbert.deploy.qat import QAT_PRECISIONS, prepare_qat

        if cfg.precision not in QAT_PRECISIONS:
            raise ConfigError(f"qat=true trains through the int8 products, which run in fp32: precision "
                              f"{cfg.precision} is not supported; set --set precision=fp32")
        prepare_qat(model)
    config_dump = {"task": spec.name, "model": str(model_dir), "data": str(data), "finetune": cfg.model_dump(mode="json")}
    # Provisional sections to enter the engine (device, processes); the step counts follow.
    sections = engine_sections(cfg, 1, 1)
    with Engine(job="finetune", output_dir=output, config=config_dump, resume_keys=RESUME_KEYS,
                callbacks=callbacks, **sections) as engine:
        device = engine.device
        micro, accum = engine.micro_batching(cfg.batch_size, cfg.micro_batch_size)
        slots = engine.dist.world_size * accum
        # A last batch with fewer examples than micro-batch slots (all processes) is left out.
        steps_per_epoch = n_train // cfg.batch_size + int(n_train % cfg.batch_size >= slots)
        total_steps = steps_per_epoch * cfg.epochs
        if cfg.max_steps is not None:
            total_steps = min(total_steps, cfg.max_steps)
        sections = engine_sections(cfg, total_steps, steps_per_epoch)
        engine.train_cfg, engine.optim_cfg, engine.ckpt_cfg, engine.log_cfg = (
            sections["train"], sections["optim"], sections["checkpoint"], sections["log"])
        model = model.to(device)
        if cfg.speedups:
            optimize(model, for_training=True)
        metadata = {"task": spec.name, "labels": list(spec.labels), "finetune": cfg.model_dump(mode="json"),
                    "base_model": str(model_dir), **datafiles.task_metadata(spec, data)}
        job_state: dict[str, Any] = {"history": [], "best": None}
        best_result: dict[str, EvalResult] = {}

        def evaluate(m, step: int) -> dict[str, float] | None:
            if step % steps_per_epoch and step != total_steps:
                return None
            result = run.evaluate(m, device)
            epoch = math.ceil(step / steps_per_epoch)
            job_state["history"].append({"epoch": epoch, "step": step, "eval": result.metrics,
                                         "seconds": round(time.perf_counter() - start_time, 1)})
            score = main_score(spec, result.metrics)
            best = job_state["best"]
            if best is None or score > best["score"]:
                job_state["best"] = {"score": score, "epoch": epoch, "step": step, "metrics": result.metrics}
                best_result["result"] = result
                save_pretrained(m, output / "model", tokenizer_dir=model_dir,
                                metadata={**metadata, "epoch": epoch, "metrics": result.metrics})
            return {f"{split}_{name}": float(v) for split, ms in result.metrics.items() for name, v in ms.items()
                    if isinstance(v, (int, float))}

        def batches(start_step: int, micro_size: int, rank: int, world: int) -> Iterator[dict[str, Any]]:
            for step in range(start_step, total_steps):
                epoch, b = divmod(step, steps_per_epoch)
                order = np.random.default_rng([cfg.seed, epoch]).permutation(n_train)
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                parts = np.array_split(idx, world * accum)
                for part in parts[rank * accum:(rank + 1) * accum]:
                    yield run.train_batch(part.tolist())

        fit = engine.fit(model, TaskObjective(spec.kind), batches, total_steps=total_steps,
                         global_batch=cfg.batch_size, micro_batch=cfg.micro_batch_size, evaluate=evaluate,
                         eval_every=steps_per_epoch, job_state=job_state, tokenizer_dir=Path(model_dir),
                         stop_after=stop_after)
        if fit.interrupted or not engine.is_main:  # the main process writes the outputs
            return {"task": spec.name, "steps": fit.state.step, "interrupted": fit.interrupted,
                    "main_process": engine.is_main}
        best = job_state["best"]
        if best is None:
            raise DataError(f"fine-tuning on {spec.name} ran no evaluation; check the data in {data}")
        result = best_result.get("result")
        best_model = None
        if result is None:  # resumed after the best epoch: evaluate the saved best checkpoint again
            best_model = from_pretrained(output / "model", heads=[head_for(spec)]).to(device)
            result = run.evaluate(best_model, device)
        prediction_files = result.write(output / "predictions")
        test_files: list[str] = []
        if cfg.predict_test and spec.is_glue:
            best_model = best_model or from_pretrained(output / "model", heads=[head_for(spec)]).to(device)
            test_files = run.write_test(best_model, device, output / "submission")
        int8 = None
        if cfg.qat:  # the int8 model of the best checkpoint: what QAT's forward passes computed
            from leanbert.deploy.torch_int8 import quantize_int8

            best_model = best_model or from_pretrained(output / "model", heads=[head_for(spec)]).to(device)
            simulated = quantize_int8(best_model, fold_norms=False)  # NoNorm unfolded, as trained
            int8 = {"method": "torchao", "metrics": run.evaluate(simulated, device).metrics}
        report = {
            "task": spec.name,
            "model": str(model_dir),
            "main_metric": spec.main_metric,
            "best_epoch": best["epoch"],
            "metrics": best["metrics"],
            **({"int8": int8} if int8 is not None else {}),
            "history": job_state["history"],
            "data": run.describe(),
            "config": cfg.model_dump(mode="json"),
            "steps": fit.state.step,
            "seconds": round(time.perf_counter() - start_time, 1),
            "train_seconds": round(fit.train_seconds, 3),
            "train_examples_per_s": fit.train_samples / fit.train_seconds if fit.train_seconds else None,
            "device": str(device),
            "processes": engine.dist.world_size,
            "files": {"model": str(output / "model"), "predictions": prediction_files, "submission": test_files},
        }
        atomic_write_json(output / "metrics.json", report)
        return report


def evaluate_checkpoint(
    model_dir: str | Path,
    data: str | Path | datafiles.DataFiles,
    *,
    task: str | None = None,
    split: str | None = None,
    output: str | Path | None = None,
    cfg: FinetuneConfig | None = None,
    int8: str | None = None,
) -> dict[str, Any]:
    """Evaluate a fine-tuned checkpoint on one split (GLUE) or a SQuAD file. The task
    defaults to the one recorded in the checkpoint. Labelled splits give metrics; any split
    gives predictions (GLUE test splits in the GLUE server's format) under ``output``.
    ``int8``: evaluate the checkpoint's PyTorch int8 model instead, quantized with that method
    (``torchao`` or ``dynamic``, :func:`leanbert.deploy.torch_int8.quantize_int8`)."""
    from leanbert.checkpoint import from_pretrained, read_metadata
    from leanbert.data.tokenizer import load_tokenizer

    metadata = read_metadata(model_dir)
    recorded = metadata.get("task")
    if task is None:
        if not recorded:
            raise ConfigError(f"{model_dir} does not record its task; pass --task")
        task = str(recorded)
    spec = get_task(task)
    if spec.from_files:  # own files: labels from the checkpoint, the data file is the validation split
        spec = datafiles.task_from_metadata(metadata, task, source=str(model_dir))
        if not isinstance(data, datafiles.DataFiles):
            data = datafiles.DataFiles(validation=data, columns=datafiles.columns_from_metadata(metadata),
                                       validation_split=split or "validation")
        split = None
    cfg = cfg or evaluation_config(spec, metadata.get("finetune"))
    device = resolve_device(cfg.device)
    model = from_pretrained(model_dir, heads=[head_for(spec)]).to(device)
    if int8 is not None:  # the PyTorch int8 model (leanbert.deploy.torch_int8) instead of the speed-ups
        from leanbert.deploy.torch_int8 import quantize_int8

        # A QAT checkpoint keeps its NoNorms unfolded: the rounding it was trained against.
        model = quantize_int8(model, method=int8, fold_norms=not metadata.get("finetune", {}).get("qat", False))
    elif cfg.speedups:
        from leanbert.speedups import optimize

        optimize(model, for_training=False)
    if spec.kind != "span_qa" and model.config.num_labels != spec.num_labels:
        raise ConfigError(
            f"{model_dir} has a classifier with {model.config.num_labels} outputs but {spec.name} needs "
            f"{spec.num_labels}; is it fine-tuned on {spec.name}?"
        )
    tokenizer = load_tokenizer(model_dir)
    if spec.kind == "span_qa":
        run = make_run(spec, data, tokenizer, cfg, train=False)
        splits = ["dev"]
    else:
        splits = [split] if split else list(spec.eval_splits)
        run = make_run(spec, data, tokenizer, cfg, train=False, eval_splits=splits)
    with torch_threads(cfg.threads):
        result = run.evaluate(model, device)
    files: list[str] = []
    if output is not None:
        out = Path(output)
        files = result.write(out / "predictions")
    report = {"task": spec.name, "model": str(model_dir), "split": splits if spec.kind != "span_qa" else "dev",
              "metrics": result.metrics, "data": run.describe(), "files": files}
    if int8 is not None:
        report["int8"] = int8
    if output is not None:
        atomic_write_json(Path(output) / "metrics.json", report)
    return report
