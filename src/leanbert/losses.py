"""Every training loss of leanbert, in one place.

Each function returns per-example (or per-prediction) losses in fp32, so that a caller picks
the normalisation: the model's ``forward`` averages them (what a user calling
``model(..., labels=...)`` expects), the training objectives sum them and divide by the
*global* count of the step (all micro-batches, all processes), which makes gradient
accumulation and data parallelism exact (:mod:`leanbert.train.engine`).

- :func:`mlm_token_losses`: masked-language-model cross entropy per prediction slot (Devlin
  et al. 2019, Sec. 3.1 Task #1); label -100 marks a padded slot (loss 0, not counted).
- :func:`sentence_pair_losses`: next-sentence / sentence-order prediction (Task #2; ALBERT's
  SOP uses the same two-way classifier).
- :func:`sequence_losses`: GLUE classification (cross entropy) or regression (squared
  error, STS-B) on the [CLS] state (Sec. 4.1).
- :func:`span_losses`: extractive QA, the mean of the start and end cross entropies over the
  tokens (Sec. 4.2); positions outside the sequence are ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def mlm_token_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross entropy of ``logits [..., V]`` against ``labels [...]`` per slot, flattened to
    ``[N]``; 0 where the label is :data:`IGNORE_INDEX`."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    return F.cross_entropy(flat, labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")


def prediction_count(labels: torch.Tensor) -> torch.Tensor:
    """The number of real prediction slots (labels that are not :data:`IGNORE_INDEX`)."""
    return (labels != IGNORE_INDEX).sum()


def sentence_pair_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-sentence (or sentence-order) cross entropy per pair: ``[B, 2]``, ``[B]`` -> ``[B]``."""
    return F.cross_entropy(logits.float(), labels.reshape(-1), reduction="none")


def sequence_losses(logits: torch.Tensor, labels: torch.Tensor, regression: bool) -> torch.Tensor:
    """Per-example classification cross entropy, or squared error for regression (``[B, 1]``)."""
    if regression:
        return F.mse_loss(logits.float().reshape(-1), labels.float().reshape(-1), reduction="none")
    return F.cross_entropy(logits.float(), labels.reshape(-1), reduction="none")


def span_losses(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
                end_positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``((CE(start) + CE(end)) / 2 per example, valid mask)`` over the ``S`` tokens; a
    position outside ``[0, S)`` (an answer cut off by the window) makes its term 0."""
    seq_len = start_logits.shape[1]
    start = start_positions.reshape(-1).clamp(0, seq_len)
    end = end_positions.reshape(-1).clamp(0, seq_len)
    ce_start = F.cross_entropy(start_logits.float(), start, ignore_index=seq_len, reduction="none")
    ce_end = F.cross_entropy(end_logits.float(), end, ignore_index=seq_len, reduction="none")
    return (ce_start + ce_end) / 2, (start < seq_len) & (end < seq_len)


def mean(losses: torch.Tensor, count: torch.Tensor | int | None = None) -> torch.Tensor:
    """``losses.sum() / max(count, 1)`` (count defaults to the number of losses)."""
    if count is None:
        count = losses.numel()
    if isinstance(count, torch.Tensor):
        return losses.sum() / count.clamp(min=1)
    return losses.sum() / max(count, 1)
