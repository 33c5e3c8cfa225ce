"""Scaled dot-product attention as a plain module (Vaswani et al. 2017, Sec. 3.2.1), shared by
every encoder family.

``Attention(q, k, v, key_mask)`` is ``softmax(q k^T / sqrt(d) + mask) v`` with dropout on the
probabilities (BERT's 0.1, Devlin et al. 2019, Appendix A.2), through
``F.scaled_dot_product_attention`` (fused kernels on CPU and CUDA; ONNX export and
quantization see an ordinary op). With ``output_attentions`` the scores and probabilities are
materialised (:func:`explicit_attention`), which knowledge transfer needs (MobileBERT Sec. 3.5,
attention transfer).

CPU training with attention dropout is faster through :func:`explicit_attention` with a
cheaper dropout mask: :class:`leanbert.speedups.attention.FastAttention`, applied by
``leanbert.optimize`` (the model files stay plain).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, dropout_p: float,
    dropout: Callable[[torch.Tensor, float], torch.Tensor] | None = None,
    masked_score: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention with the scores and probabilities materialised: ``(ctx, scores, probs)``,
    scores scaled by 1/sqrt(d) and masked (the scaling is applied to the queries, the smaller
    tensor). ``dropout(probs, p)`` defaults to ``F.dropout``. Masked keys' scores become the
    dtype's lowest value (transformers), or exactly ``masked_score`` when given (MobileBERT's
    TF code uses -6, so padded keys keep a weight of ``exp(-6)`` relative to a zero score)."""
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
    if key_mask is not None:
        fill = torch.finfo(scores.dtype).min if masked_score is None else masked_score
        scores = scores.masked_fill_(~key_mask, fill)
    probs = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        attended = F.dropout(probs, dropout_p) if dropout is None else dropout(probs, dropout_p)
    else:
        attended = probs
    return attended @ v, scores, probs


def fp16_autocast(x: torch.Tensor) -> bool:
    """Whether ``x``'s device runs under fp16 autocast."""
    device = x.device.type
    return torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device) == torch.float16


class Attention(nn.Module):
    """Multi-head attention on per-head ``q [B, heads, Q, d]``, ``k, v [B, heads, S, d]``, a
    boolean ``key_mask [B, 1, 1, S]`` (True = attend) or None.

    Returns ``(ctx, scores, probs)``; scores and probabilities only with ``output_attentions``.
    ``fp32_under_fp16``: run in fp32 under fp16 autocast (MobileBERT, whose NoNorm activations
    can exceed fp16's range; see ``models/mobilebert.py``). ``masked_score``: masked keys'
    scores are set to exactly this value after scaling instead of the dtype's lowest value
    (MobileBERT's reference code: -6; SPEC Sec. 2). It runs the written-out attention.
    """

    def __init__(self, dropout: float, fp32_under_fp16: bool = False, masked_score: float | None = None) -> None:
        super().__init__()
        self.dropout_p = dropout
        self.fp32_under_fp16 = fp32_under_fp16
        self.masked_score = masked_score

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.fp32_under_fp16 and fp16_autocast(q):
            with torch.autocast(q.device.type, enabled=False):
                return self.forward(q.float(), k.float(), v.float(), key_mask, output_attentions)
        p = self.dropout_p if self.training else 0.0
        if output_attentions or (self.masked_score is not None and key_mask is not None):
            ctx, scores, probs = explicit_attention(q, k, v, key_mask, p, masked_score=self.masked_score)
            return (ctx, scores, probs) if output_attentions else (ctx, None, None)
        return self.attend(q, k, v, key_mask, p), None, None

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, p: float
    ) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=p)

    def extra_repr(self) -> str:
        extra = "" if self.masked_score is None else f", masked_score={self.masked_score}"
        return f"dropout={self.dropout_p}{extra}"
