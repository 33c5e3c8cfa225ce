"""Attention for CPU training with dropout: the written-out attention with the cheaper mask of
:mod:`leanbert.speedups.dropout`.

PyTorch's CPU ``scaled_dot_product_attention`` falls back to its math path when dropout is on,
plus a ``bernoulli_`` mask: ~20% slower forward + backward at BERT-base 16 x 128 than
:func:`leanbert.models.attention.explicit_attention` with :func:`leanbert.speedups.dropout.dropout`.
Without dropout (inference, MobileBERT's student has attention dropout 0.1 but eval has none),
on CUDA and under ``torch.compile`` it is the plain module's fused kernel.
"""

from __future__ import annotations

import torch

from leanbert.models.attention import Attention, explicit_attention
from leanbert.speedups.dropout import dropout


class FastAttention(Attention):
    """:class:`~leanbert.models.attention.Attention` with the cheaper CPU dropout mask."""

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, p: float
    ) -> torch.Tensor:
        if p == 0.0 or q.device.type != "cpu" or torch.compiler.is_compiling():
            return super().attend(q, k, v, key_mask, p)
        return explicit_attention(q, k, v, key_mask, p, dropout=dropout)[0]
