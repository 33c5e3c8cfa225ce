"""Downstream tasks: GLUE and SQuAD readers, official metrics, fine-tuning and evaluation.

- :mod:`~leanbert.tasks.registry`: one spec per task (files, columns, labels, metrics).
- :mod:`~leanbert.tasks.glue`: GLUE TSV files with their quirks; GLUE submission files.
- :mod:`~leanbert.tasks.squad`: SQuAD JSON, sliding-window features, n-best span search.
- :mod:`~leanbert.tasks.metrics`: the official metrics, implemented once.
- :mod:`~leanbert.tasks.score`: metrics from a predictions file alone.
- :mod:`~leanbert.tasks.finetune`: the fine-tuning loop and evaluation of a checkpoint.
- :mod:`~leanbert.tasks.sweep`: learning-rate x seed sweeps with median and best.
"""

from leanbert.tasks.registry import TASKS, TaskSpec, get_task, task_names

__all__ = ["TASKS", "TaskSpec", "get_task", "task_names"]
