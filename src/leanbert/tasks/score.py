"""Official metrics from a predictions file alone (what ``leanbert score`` runs), like the
official SQuAD evaluation scripts: ``evaluate-v1.1.py data.json predictions.json`` and
``evaluate-v2.0.py data.json predictions.json --na-prob-file na_probs.json``.

GLUE predictions are files in the GLUE server's submission format (``index<TAB>prediction``);
for dev files without an index column (CoLA, SST-2, MRPC) the index is the 0-based example
number, which is what ``leanbert finetune`` and ``leanbert evaluate`` write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from leanbert.errors import DataError
from leanbert.tasks import glue, squad
from leanbert.tasks.metrics import glue_metrics, squad_metrics
from leanbert.tasks.registry import TaskSpec, get_task


def score_file(
    task: str | TaskSpec,
    data: str | Path,
    predictions: str | Path,
    *,
    split: str | None = None,
    na_probs: str | Path | None = None,
    na_prob_thresh: float = 1.0,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Metrics of a predictions file against the gold labels of ``data``.

    ``data``: a SQuAD JSON file, or a GLUE TSV file / task directory (then ``split``,
    default the task's first evaluation split, picks the file).
    """
    spec = get_task(task) if isinstance(task, str) else task
    if spec.kind == "span_qa":
        gold = squad.read_squad(data, spec)
        preds = squad.read_predictions(predictions)
        probs = squad.read_na_probs(na_probs) if na_probs is not None else None
        return squad_metrics(
            spec, gold.articles, preds, probs, na_prob_thresh=na_prob_thresh,
            allow_missing=allow_missing, source=str(predictions),
        )
    if Path(data).is_file() and Path(data).name.startswith("test"):
        raise DataError(f"{data} is a GLUE test file without labels; score against a dev file")
    split_data = glue.read_glue(spec, data, split or spec.eval_splits[0])
    if not split_data.has_labels:
        raise DataError(f"{split_data.path} has no labels; score a dev file, not a test file")
    preds = glue.read_predictions(predictions)
    gold_t, pred_t = glue.align_predictions(spec, split_data, preds, str(predictions))
    return glue_metrics(spec, gold_t, pred_t)
