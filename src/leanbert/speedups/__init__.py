"""CPU speed-ups, applied *to* a plain model by one explicit call and removed by another.

leanbert's model files are plain PyTorch (``nn.Linear``, ``nn.Dropout``, ``nn.LayerNorm`` /
NoNorm, ``F.scaled_dot_product_attention``), so that ``torch.ao`` / torchao quantization,
``torch.onnx.export``, ``torch.compile`` and other people's training loops see ordinary
modules. The speed-ups measured on CPUs live here and change a model in place::

    leanbert.optimize(model)                       # training: oneDNN products, cheaper dropout mask
    leanbert.optimize(model, for_training=False)   # + MobileBERT's packed inference plan
    leanbert.restore(model)                        # plain modules again
    with leanbert.plain_modules(model): ...        # plain inside the block (export, quantization)

What :func:`optimize` does (each swaps a module's class for a subclass with the same
parameters, buffers and state-dict keys; nothing is copied, optimisers keep working):

=========================================  ==================================================
module                                     becomes
=========================================  ==================================================
``nn.Linear``                              :class:`~leanbert.speedups.linear.OneDNNLinear`
                                           (oneDNN's fp32 product on CPU: 6-25% faster than
                                           MKL at BERT's training shapes)
``models.base.TiedLinear`` (MLM decoder)   :class:`~leanbert.speedups.linear.OneDNNTiedLinear`
``nn.Dropout``                             :class:`~leanbert.speedups.dropout.FastDropout`
                                           (64 random bits per two elements: 2x cheaper mask)
``models.attention.Attention``             :class:`~leanbert.speedups.attention.FastAttention`
                                           (written-out attention with that mask when
                                           training on CPU with attention dropout)
``MobileBertEncoder`` (inference only)     :class:`~leanbert.speedups.mobilebert_inference.FastMobileBertEncoder`
                                           (NoNorm folded, fused and pre-packed products)
=========================================  ==================================================

Each one falls back to the plain computation where it does not help (CUDA, autocast for the
products, ``torch.compile``, FLOP counters), so an optimised model computes the same values
everywhere, up to float summation order. The trainer and the inference paths of leanbert call
:func:`optimize` by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["optimize", "restore", "plain_modules", "is_optimized"]


def _swaps(for_training: bool) -> dict[type, type]:
    from leanbert.models.attention import Attention
    from leanbert.models.base import TiedLinear
    from leanbert.speedups.attention import FastAttention
    from leanbert.speedups.dropout import FastDropout
    from leanbert.speedups.linear import OneDNNLinear, OneDNNTiedLinear

    swaps: dict[type, type] = {
        nn.Linear: OneDNNLinear,
        TiedLinear: OneDNNTiedLinear,
        nn.Dropout: FastDropout,
        Attention: FastAttention,
    }
    if not for_training:
        from leanbert.models.mobilebert import MobileBertEncoder
        from leanbert.speedups.mobilebert_inference import FastMobileBertEncoder

        swaps[MobileBertEncoder] = FastMobileBertEncoder
    return swaps


def optimize(model: nn.Module, *, for_training: bool = True) -> nn.Module:
    """Apply the CPU speed-ups to ``model`` in place (see the module docstring); returns it.
    Only modules of exactly the plain classes are changed, so calling it twice is harmless and
    a user's own subclasses are left alone. ``for_training=False`` adds the inference-only
    MobileBERT plan; calling ``optimize(model)`` later removes it again."""
    swaps = _swaps(for_training)
    inference_only = {fast: plain for plain, fast in _swaps(False).items() if plain not in swaps}
    for module in model.modules():
        cls = type(module)
        if cls in swaps:
            module.__class__ = swaps[cls]
        elif cls in inference_only:
            _restore_one(module, inference_only[cls])
    return model


def _restore_one(module: nn.Module, plain: type) -> None:
    from leanbert.speedups.mobilebert_inference import FastMobileBertEncoder, drop_plan

    if isinstance(module, FastMobileBertEncoder):
        drop_plan(module)
    module.__class__ = plain


def restore(model: nn.Module) -> nn.Module:
    """Undo :func:`optimize`: every swapped module gets its plain class back (in place)."""
    plain_of = {fast: plain for plain, fast in _swaps(False).items()}
    for module in model.modules():
        plain = plain_of.get(type(module))
        if plain is not None:
            _restore_one(module, plain)
    return model


def is_optimized(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries a speed-up."""
    fast = set(_swaps(False).values())
    return any(type(m) in fast for m in model.modules())


@contextlib.contextmanager
def plain_modules(model: nn.Module) -> Iterator[nn.Module]:
    """Plain modules inside the block (ONNX export, quantization), the speed-ups back after."""
    before = {id(m): type(m) for m in model.modules()}
    restore(model)
    try:
        yield model
    finally:
        for module in model.modules():
            cls = before.get(id(module))
            if cls is not None and cls is not type(module):
                module.__class__ = cls
