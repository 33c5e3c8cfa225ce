"""Analytic FLOP counts (SPEC Sec. 5), with and without token dropping.

The formulas below are BERT's; another family supplies its own per-layer count as
``layer_flops(config, n_queries, n_keys)`` in its model module (MobileBERT does).

Only the matrix products are counted; embeddings, LayerNorm, activations, softmax,
dropout and the pooler are negligible next to them. One multiply-add is 2 FLOPs.

Forward FLOPs of one encoder layer on ``n`` tokens, hidden ``h``, FFN width ``f``::

    2*n*(4*h*h + 2*h*f)  +  4*n*n*h           # weights   +   scores and weighted sum

The split layer of token dropping (queries from ``k`` kept tokens, keys and values from all
``n``; Hou et al. 2022, Sec. 3)::

    2*(2*k*h*h + 2*n*h*h + 2*k*h*f)  +  4*k*n*h

The MLM head on ``m`` predicted positions (dense h x h, then the decoder h x V)::

    2*m*(h*h + h*V)

A training step costs 3x the forward pass (the backward pass computes gradients for the
inputs and for the weights, each about as costly as the forward). ``k`` and ``m`` are the
*padded* counts the kernels really run on (fixed ``k`` per batch, padded prediction slots).

Check (SPEC Sec. 2, end): BERT-base, n=512, k=256, default drop layers: the encoder's forward
FLOPs per sequence fall from 96.64 G to 72.07 G (-25.4%).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TRAINING_MULTIPLIER = 3


@dataclass(frozen=True)
class DropPlan:
    """Which layers drop tokens and how many tokens stay.

    ``start`` is the split layer (its queries are the kept tokens, its keys all tokens);
    layers ``start+1 .. end-1`` run on the ``keep`` kept tokens only; layer ``end`` (if
    ``end < num_layers``) runs on all tokens again, the dropped ones restored.
    The reference (Hou et al. 2022) uses ``start = L/2 - 1``, ``end = L - 1``.
    """

    start: int
    end: int
    keep: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"drop plan needs 0 <= start < end, got start={self.start}, end={self.end}")
        if self.keep < 1:
            raise ValueError(f"drop plan needs keep >= 1, got {self.keep}")


def encoder_layer_flops(n: int, h: int, f: int) -> int:
    """Forward FLOPs of a standard layer on ``n`` tokens."""
    return 2 * n * (4 * h * h + 2 * h * f) + 4 * n * n * h


def split_layer_flops(n: int, k: int, h: int, f: int) -> int:
    """Forward FLOPs of the split layer: ``k`` queries, ``n`` keys and values."""
    return 2 * (2 * k * h * h + 2 * n * h * h + 2 * k * h * f) + 4 * k * n * h


def mlm_head_flops(m: int, h: int, vocab_size: int) -> int:
    """Forward FLOPs of the BERT MLM head on ``m`` predicted positions."""
    return 2 * m * (h * h + h * vocab_size)


def bert_layer_flops(config: Any, n_queries: int, n_keys: int) -> int:
    """One BERT layer with ``n_queries`` query rows and ``n_keys`` key/value rows (equal
    except in the split layer, where this is the split-layer formula)."""
    h, f = config.hidden_size, config.intermediate_size
    if n_queries == n_keys:
        return encoder_layer_flops(n_keys, h, f)
    return split_layer_flops(n_keys, n_queries, h, f)


def _layer_cost(config: Any) -> Callable[[Any, int, int], int]:
    """``layer_flops(config, n_queries, n_keys)`` of the config's family: BERT here, other
    families in their own module (e.g. :func:`leanbert.models.mobilebert.layer_flops`)."""
    model_type = getattr(config, "model_type", "bert")
    if model_type == "bert":
        return bert_layer_flops
    from leanbert.models import family

    module = importlib.import_module(family(model_type).encoder_cls.__module__)
    cost = getattr(module, "layer_flops", None)
    if cost is None:
        raise NotImplementedError(f"model_type '{model_type}' does not define layer_flops for FLOP counting")
    return cost


def encoder_forward_flops(
    config: Any, seq_len: int, plan: DropPlan | None = None, last_layer_rows: int | None = None
) -> int:
    """Forward FLOPs of the encoder layers for one sequence of ``seq_len`` (padded) tokens.

    ``last_layer_rows``: the last layer's queries run on that many rows only (MLM pretraining,
    :class:`leanbert.models.base.LastLayerQueries`) when it sees every token, i.e. unless
    a drop plan keeps it on the kept tokens (``plan.end == num_layers`` or ``plan.start`` last).
    """
    num_layers, n = config.num_layers, seq_len
    cost = _layer_cost(config)
    if plan is not None and plan.end > num_layers:
        raise ValueError(f"drop plan end {plan.end} is beyond the model's {num_layers} layers")
    k = n if plan is None else min(plan.keep, n)
    total = 0
    for i in range(num_layers):
        if plan is not None and i == plan.start:
            total += cost(config, k, n)  # the split layer
        elif plan is not None and plan.start < i < plan.end:
            total += cost(config, k, k)
        elif i == num_layers - 1 and last_layer_rows is not None:
            total += cost(config, min(last_layer_rows, n), n)
        else:
            total += cost(config, n, n)
    return total


def forward_flops(
    config: Any, seq_len: int, num_predictions: int, plan: DropPlan | None = None,
    last_layer_rows: int | None = None,
) -> int:
    """Forward FLOPs for one sequence: encoder plus the MLM head on ``num_predictions``
    (padded) prediction slots. Pass ``num_predictions=0`` for an encoder without MLM head."""
    # The MLM head of every family: dense h x h, then a decoder from h wide to V
    # (MobileBERT's split decoder, 128 + 384 columns, is also h x V).
    head = mlm_head_flops(num_predictions, config.hidden_size, config.vocab_size)
    return encoder_forward_flops(config, seq_len, plan, last_layer_rows) + head


def train_step_flops(
    config: Any, batch_size: int, seq_len: int, num_predictions: int, plan: DropPlan | None = None,
    last_layer_rows: int | None = None,
) -> int:
    """FLOPs of one training step (forward + backward = 3x forward) on a batch of
    ``batch_size`` sequences padded to ``seq_len`` with ``num_predictions`` MLM slots each."""
    return TRAINING_MULTIPLIER * batch_size * forward_flops(config, seq_len, num_predictions, plan, last_layer_rows)
