"""Linear layers on oneDNN's fp32 matrix product (CPU): a speed-up applied to a plain model by
:func:`leanbert.speedups.optimize`, never written into the model files.

PyTorch's ``F.linear`` multiplies fp32 matrices on CPU with MKL. oneDNN, which PyTorch also
ships (``torch.ops.mkldnn._linear_pointwise``, the kernel ``torch.compile`` lowers CPU linear
layers to), is faster at the shapes of BERT training and inference on this machine
(AVX-512, 2 threads; ``benchmarks/bench_pretrain.py`` times the whole step):

==========================  ==========  ==========
product (M x K x N)         MKL GFLOP/s oneDNN
==========================  ==========  ==========
2048 x 768 x 3072 (fwd)     169         212
2048 x 3072 x 768 (fwd)     200         218
2048 x 768 x 3072 (grad x)  187         218
==========================  ==========  ==========

:func:`linear` is ``F.linear`` with that product for fp32 CPU tensors outside autocast
(forward and the input gradient; the weight gradient stays ``mm``, which is as fast there).
Results equal ``F.linear`` up to float rounding (summation order). Elsewhere (CUDA, bf16 or
fp16 autocast, under a dispatch mode such as ``FlopCounterMode``, under ``torch.compile``,
a PyTorch without the kernel) it is ``F.linear`` itself.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from leanbert.models.base import TiedLinear

MIN_ROWS = 64  # below, MKL wins (measured: 32 rows of 128 -> 512 run 15-20% slower on oneDNN)


@functools.cache
def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN's fp32 linear kernel (checked once, on a tiny product)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        x, w = torch.ones(2, 3), torch.ones(4, 3)
        out = onednn_product(x, w, None)
    except RuntimeError:
        return False
    return bool(torch.equal(out, torch.full((2, 4), 3.0)))


def onednn_product(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none"
) -> torch.Tensor:
    """``x @ weight.T + bias`` (then ``activation``: "none" or "relu") on oneDNN; ``weight`` may be
    a plain ``[out, in]`` tensor or one packed by ``torch.ops.mkldnn._reorder_linear_weight``."""
    return torch.ops.mkldnn._linear_pointwise.default(x, weight, bias, activation, _NO_SCALARS, "")


_NO_SCALARS: list = []


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        flat = grad.reshape(-1, grad.shape[-1])
        if ctx.needs_input_grad[0]:
            grad_x = onednn_product(grad, weight.t(), None)
        if ctx.needs_input_grad[1]:
            grad_w = flat.t().mm(x.reshape(-1, x.shape[-1]))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = flat.sum(0)
        return grad_x, grad_w, grad_b


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether :func:`linear` takes oneDNN for these operands."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.dim() >= 2
        and x.numel() >= MIN_ROWS * x.shape[-1]
        and not torch.is_autocast_enabled("cpu")
        and _get_current_dispatch_mode() is None  # FLOP counters, fake tensors: the plain op
        and not torch.compiler.is_compiling()  # torch.compile picks its own kernels
        and onednn_available()
    )


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, on oneDNN for fp32 CPU tensors (see the module docstring)."""
    if not use_onednn(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _OneDNNLinear.apply(x, weight, bias)
    return onednn_product(x, weight, bias)  # no graph to record: skip the autograd.Function overhead


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` through :func:`linear`: same parameters, names and initialisation.
    :func:`leanbert.speedups.optimize` turns a model's ``nn.Linear`` layers into this class
    in place, and :func:`leanbert.speedups.restore` back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)

    def forward_slice(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Output features ``start:stop`` only (see :func:`leanbert.models.base.linear_slice`)."""
        return linear(x, self.weight[start:stop], None if self.bias is None else self.bias[start:stop])


class OneDNNTiedLinear(TiedLinear):
    """:class:`leanbert.models.base.TiedLinear` (a product with a weight passed in, the tied
    MLM decoder) through :func:`linear`."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return linear(x, weight, bias)
