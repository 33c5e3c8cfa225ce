"""Dropout with a cheaper mask on CPU, a speed-up applied by :func:`leanbert.speedups.optimize` (Srivastava et al. 2014; BERT's 0.1 on hidden states
and attention probabilities, Devlin et al. 2019, Sec. A.2).

On CPU, ``torch.nn.functional.dropout`` draws its mask with ``bernoulli_``: about 6 ns per
element on this machine, 5-7% of a BERT training step. This draws 64 random bits per two
elements instead (``random_`` on int64), keeps 31 of each 32 and compares them with
``p * 2**31``: the same Bernoulli(1 - p) keep mask (resolution 2**-31, finer than a float32
uniform's 2**-24), at about a third of the cost. Kept values are scaled by ``1 / (1 - p)``.
It uses torch's default CPU generator, so ``torch.manual_seed`` and saved RNG states
reproduce it. Elsewhere (CUDA, or under ``torch.compile``, which generates its own mask) it is
``F.dropout``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_LOW_31_BITS = 0x7FFFFFFF7FFFFFFF


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A bool mask of ``shape``, each element True with probability ``1 - p`` (independently)."""
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int64, device=device).random_()
    bits.bitwise_and_(_LOW_31_BITS)  # two uniform 31-bit integers per int64
    threshold = int(round(p * 2**31))
    return bits.view(torch.int32)[:n].ge(threshold).view(shape)


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x.mul(mask).mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (mask,) = ctx.saved_tensors
        return grad.mul(mask).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the cheaper CPU mask (see the module docstring)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training=True)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, x.device), 1.0 / (1.0 - p))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` through :func:`dropout` (same attributes; ``optimize`` swaps a model's
    ``nn.Dropout`` modules to this class in place, ``restore`` back)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
