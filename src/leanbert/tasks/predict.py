"""Predictions for new text with a fine-tuned checkpoint (``leanbert predict``).

The checkpoint's metadata says its task, label names, columns and sequence settings (written by
:func:`leanbert.tasks.finetune.finetune`), so that the same encoding, batching and model path
as ``leanbert evaluate`` run on any file :mod:`leanbert.tasks.tables` reads. One JSON object per
input row, in the input's order:

- classification: ``{"label": name, "score": p, "probabilities": {name: p, ...}}`` (softmax of
  the classifier's logits; ``label`` is the arg max);
- regression: ``{"value": x}`` (the raw output, not clipped);
- span QA: ``{"answer": text, "start": i, "end": j, "score": p}``: the best span of BERT's
  n-best search (Devlin et al. 2019, Sec. 4.2) with its character offsets in the context (end
  exclusive) and its probability among the n best; SQuAD v2.0-style models answer ``""`` with
  ``start`` and ``end`` null when the null score wins (Sec. 4.3).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leanbert.errors import ConfigError
from leanbert.tasks import datafiles, squad, tables
from leanbert.tasks.finetune import (
    FinetuneConfig,
    encode_glue,
    finetune_config,
    glue_logits,
    head_for,
    predict_squad,
    resolve_device,
    torch_threads,
)
from leanbert.tasks.registry import TaskSpec

# Fine-tuning settings that prediction takes from the checkpoint (the encoding must match).
RECORDED_KEYS = ("max_seq_length", "doc_stride", "max_query_length", "n_best_size", "max_answer_length",
                 "null_score_diff_threshold")


def predict_config(task: TaskSpec, metadata: dict[str, Any], overrides: Sequence[str] = ()) -> FinetuneConfig:
    """The fine-tuning settings recorded in the checkpoint, then ``key=value`` overrides."""
    recorded = metadata.get("finetune", {})
    base = [f"{k}={recorded[k]}" for k in RECORDED_KEYS if k in recorded]
    return finetune_config(task, None, [*base, *overrides])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def predict(
    model_dir: str | Path,
    data: str | Path,
    *,
    output: str | Path | None = None,
    split: str | None = None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    overrides: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """One prediction per row of ``data`` (see the module docstring); written to ``output`` as
    JSON lines (atomically) when given. ``split`` picks the split of a DatasetDict or of a
    directory of split files (default: test). Text columns default to those the model was
    fine-tuned on (GLUE checkpoints: the hub's column names)."""
    from leanbert.checkpoint import from_pretrained, read_metadata
    from leanbert.data.tokenizer import load_tokenizer
    from leanbert.io import atomic_open

    metadata = read_metadata(model_dir)
    task = datafiles.task_from_metadata(metadata, source=str(model_dir))
    cfg = predict_config(task, metadata, overrides)
    recorded = datafiles.columns_from_metadata(metadata) if task.from_files else datafiles.default_columns(task)
    columns = datafiles.Columns(**{**recorded.__dict__, "text": text_column or recorded.text,
                                   "text_pair": text_pair_column or recorded.text_pair})
    table = tables.read_table(data, split or "test")
    device = resolve_device(cfg.device)
    model = from_pretrained(model_dir, heads=[head_for(task)]).to(device)
    if task.kind != "span_qa" and model.config.num_labels != task.num_labels:
        raise ConfigError(f"{model_dir} has a classifier with {model.config.num_labels} outputs but records "
                          f"{task.num_labels} labels for {task.name}; the checkpoint is inconsistent")
    if cfg.speedups:  # the same model path as `leanbert evaluate`
        from leanbert.speedups import optimize

        optimize(model, for_training=False)
    tokenizer = load_tokenizer(model_dir)
    with torch_threads(cfg.threads):
        if task.kind == "span_qa":
            records = _predict_spans(model, task, table, columns, tokenizer, cfg, device)
        else:
            records = _predict_sequences(model, task, table, columns, tokenizer, cfg, device)
    if output is not None:
        with atomic_open(output, "w") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return records


def _predict_sequences(model, task: TaskSpec, table: tables.Table, columns: datafiles.Columns, tokenizer: Any,
                       cfg: FinetuneConfig, device) -> list[dict[str, Any]]:
    examples = datafiles.sequence_split(task, table, columns, "predict", table.source, labels=False)
    logits = glue_logits(model, encode_glue(task, examples, tokenizer, cfg.max_seq_length), cfg.eval_batch_size, device)
    if task.kind == "regression":
        return [{"value": float(row[0])} for row in logits]
    probs = _softmax(logits)
    out = []
    for p in probs:
        best = int(p.argmax())
        out.append({"label": task.labels[best], "score": float(p[best]),
                    "probabilities": {name: float(v) for name, v in zip(task.labels, p, strict=True)}})
    return out


def _predict_spans(model, task: TaskSpec, table: tables.Table, columns: datafiles.Columns, tokenizer: Any,
                   cfg: FinetuneConfig, device) -> list[dict[str, Any]]:
    q_col, c_col = datafiles.text_columns(task, table, columns)
    examples = [squad.SquadExample(str(i), "", datafiles.text_value(table, c_col, i), datafiles.text_value(table, q_col, i), (), ())
                for i in range(len(table))]
    features = squad.make_features(examples, tokenizer, max_seq_length=cfg.max_seq_length,
                                   doc_stride=cfg.doc_stride, max_query_length=cfg.max_query_length)
    starts, ends = predict_squad(model, features, cfg.eval_batch_size, device)
    answers, _, nbest = squad.postprocess_predictions(
        examples, features, starts, ends, n_best_size=cfg.n_best_size, max_answer_length=cfg.max_answer_length,
        version_2=task.squad_version == "2.0", null_score_diff_threshold=cfg.null_score_diff_threshold)
    out = []
    for ex in examples:
        answer = answers[ex.qid]
        best = next(c for c in nbest[ex.qid] if c["text"] == answer)
        out.append({"answer": answer, "start": best["start"], "end": best["end"], "score": best["probability"]})
    return out
