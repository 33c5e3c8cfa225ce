"""Analytic FLOP counts of an encoder (SPEC Sec. 5), from the rows each layer really runs on.

Each family declares the forward FLOPs of one of its layers as
``layer_flops(config, n_queries, n_keys)`` (its ``FAMILY`` entry): ``n_queries`` rows go
through the layer (queries, residuals, feed-forward network), ``n_keys`` rows give the keys
and values. The two differ in token dropping's split layer (Hou et al. 2022, Sec. 3) and in
the last layer of MLM pretraining, which runs only at the predicted positions. Whoever changes
the rows says so: a training algorithm (:mod:`leanbert.algorithms.token_dropping`) and the
objective (:mod:`leanbert.train.pretrain`) pass the ``rows`` list here.

Only the matrix products are counted; embeddings, LayerNorm, activations, softmax, dropout and
the pooler are negligible next to them. One multiply-add is 2 FLOPs. BERT's layer on ``n``
tokens, hidden ``h``, FFN width ``f``::

    2*n*(4*h*h + 2*h*f)  +  4*n*n*h           # weights   +   scores and weighted sum

The MLM head on ``m`` predicted positions (dense h x h, then the decoder h x V; MobileBERT's
split decoder, 128 + 384 columns, is also h x V)::

    2*m*(h*h + h*V)

A training step costs 3x the forward pass (the backward pass computes gradients for the
inputs and for the weights, each about as costly as the forward). Counts are of the *padded*
shapes the kernels run on.

Check (SPEC Sec. 2, end): BERT-base, n=512, k=256, default drop layers: the encoder's forward
FLOPs per sequence fall from 96.64 G to 72.07 G (-25.4%).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TRAINING_MULTIPLIER = 3

Rows = Sequence[tuple[int, int]]  # (query rows, key rows) of each layer


def full_rows(config: Any, seq_len: int) -> list[tuple[int, int]]:
    """Every layer on every one of ``seq_len`` tokens."""
    return [(seq_len, seq_len)] * config.num_layers


def encoder_flops(config: Any, rows: Rows) -> int:
    """Forward FLOPs of the encoder layers for one sequence, layer ``i`` running on ``rows[i]``."""
    from leanbert.models.registry import family

    if len(rows) != config.num_layers:
        raise ValueError(f"rows has {len(rows)} entries for a model with {config.num_layers} layers")
    cost = family(config.model_type).layer_flops
    return sum(cost(config, q, k) for q, k in rows)


def mlm_head_flops(m: int, h: int, vocab_size: int) -> int:
    """Forward FLOPs of the MLM head on ``m`` predicted positions."""
    return 2 * m * (h * h + h * vocab_size)


def forward_flops(config: Any, rows: Rows, num_predictions: int = 0) -> int:
    """Forward FLOPs for one sequence: the encoder plus the MLM head on ``num_predictions``
    (padded) slots (0: no MLM head)."""
    return encoder_flops(config, rows) + mlm_head_flops(num_predictions, config.hidden_size, config.vocab_size)


def train_flops(config: Any, batch_size: int, rows: Rows, num_predictions: int = 0) -> int:
    """FLOPs of one training step (forward + backward = 3x forward) on ``batch_size`` sequences."""
    return TRAINING_MULTIPLIER * batch_size * forward_flops(config, rows, num_predictions)
