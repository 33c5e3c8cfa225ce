"""``leanbert evaluate --onnx``: an ONNX export scored with the evaluation code of fine-tuning.

The readers, batching, post-processing and official metrics are those of
:func:`leanbert.tasks.finetune.evaluate_checkpoint`; only the forward pass is ONNX Runtime's
(:class:`leanbert.deploy.onnx.OnnxModel`, which returns what the PyTorch model returns). It is
a module of its own because fine-tuning imports the deploy package (PyTorch int8, QAT): the
export module cannot import fine-tuning without an import circle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import torch

from leanbert.deploy.onnx import OnnxModel
from leanbert.errors import ConfigError

__all__ = ["evaluate_onnx"]


def evaluate_onnx(
    onnx_path: str | Path,
    data: str | Path,
    *,
    task: str | None = None,
    split: str | None = None,
    output: str | Path | None = None,
    cfg: Any = None,
    variant: Literal["auto", "fp32", "int8"] = "auto",
) -> dict[str, Any]:
    """:func:`leanbert.tasks.finetune.evaluate_checkpoint` for an ONNX export: the same
    readers, batching, post-processing and official metrics, only the forward pass is ONNX
    Runtime's. The task defaults to the one on the card."""
    from leanbert.data.tokenizer import load_tokenizer
    from leanbert.io import atomic_write_json
    from leanbert.tasks.finetune import evaluation_config, head_for, make_run
    from leanbert.tasks.registry import get_task

    model = OnnxModel(onnx_path, variant=variant, threads=getattr(cfg, "threads", None))
    card = model.card
    task = task or card.get("task")
    if not task:
        raise ConfigError(f"{onnx_path} does not record its task; pass --task")
    spec = get_task(str(task))
    if getattr(spec, "from_files", False):  # own files: as evaluate_checkpoint, from the recorded metadata
        from leanbert.tasks import datafiles

        metadata = card.get("metadata", {})
        spec = datafiles.task_from_metadata(metadata, str(task), source=str(onnx_path))
        if not isinstance(data, datafiles.DataFiles):
            data = datafiles.DataFiles(validation=data, columns=datafiles.columns_from_metadata(metadata),
                                       validation_split=split or "validation")
        split = None
    cfg = cfg or evaluation_config(spec, card.get("finetune"))
    head = head_for(spec)
    if head not in card.get("heads", []):
        raise ConfigError(f"{onnx_path} has no {head} head (it exports: {', '.join(card.get('heads', [])) or 'none'}); "
                          f"export a model fine-tuned on {spec.name}")
    if head == "classifier":
        n_out = card.get("model", {}).get("config", {}).get("num_labels")
        if card.get("problem_type") == "regression":
            n_out = 1
        if n_out != spec.num_labels:
            raise ConfigError(f"{onnx_path} has a classifier with {n_out} outputs but {spec.name} needs "
                              f"{spec.num_labels}; is it fine-tuned on {spec.name}?")
    tokenizer = load_tokenizer(model.directory)
    if spec.kind == "span_qa":
        run, splits = make_run(spec, data, tokenizer, cfg, train=False), ["dev"]
    else:
        splits = [split] if split else list(spec.eval_splits)
        run = make_run(spec, data, tokenizer, cfg, train=False, eval_splits=splits)
    started = time.perf_counter()
    result = run.evaluate(model, torch.device("cpu"))
    seconds = time.perf_counter() - started
    files: list[str] = []
    if output is not None:
        files = result.write(Path(output) / "predictions")
    report = {"task": spec.name, "model": str(model.file), "variant": model.variant,
              "quantization": card.get("quantization", {}).get("mode") if model.variant == "int8" else "none",
              "split": splits if spec.kind != "span_qa" else "dev", "metrics": result.metrics, "data": run.describe(),
              "seconds": round(seconds, 2), "files": files}
    if output is not None:
        atomic_write_json(Path(output) / "metrics.json", report)
    return report
