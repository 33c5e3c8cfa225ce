"""NoNorm folding for export (MobileBERT Sec. 3.3): every NoNorm into the linear layer before
it, and optionally its scale carried along the residual streams.

Used by the ONNX export (:mod:`leanbert.deploy.onnx`, whose module docstring has the math and
the measurements), its ONNX Runtime rewrite (:mod:`leanbert.deploy.ort_graph`) and the PyTorch
int8 path (:mod:`leanbert.deploy.torch_int8`); a module of its own so that none of them imports
another for it, and so that PyTorch int8 does not load the ONNX code.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["FoldedNoNorm", "fold_mobilebert_no_norm", "MAX_SCALE_SPREAD"]


class FoldedNoNorm(nn.Module):
    """What is left of a NoNorm folded into the linear layer before it: nothing without a
    residual; with one (the residual was added before the norm) ``x + gamma * residual``, or
    ``x + residual`` when ``gamma`` is None (the scale was propagated to the layers that read
    the output, :func:`fold_mobilebert_no_norm`)."""

    def __init__(self, gamma: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("gamma", None if gamma is None else gamma.detach().clone())

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is None:
            return x
        if self.gamma is None:
            return x + residual
        return torch.addcmul(x, residual, self.gamma)


# Scale propagation: the largest spread max|s| / min|s| of a carried per-feature scale (see
# fold_mobilebert_no_norm). Beyond it the scale is multiplied in (one Mul) and restarts at 1: the
# tensor that flows is x / s, and per-tensor int8 quantization of it would give the features
# with the largest s too few levels. Trained checkpoints measured: spreads up to 3.7 within 8
# layers, int8 agreement with fp32 as without propagation.
MAX_SCALE_SPREAD = 4.0


class _Scale:
    """A per-feature scale ``s`` carried along a residual stream: the tensor that flows is
    ``y / s`` (see :func:`fold_mobilebert_no_norm`)."""

    def __init__(self, size: int, enabled: bool, max_spread: float) -> None:
        self.s = torch.ones(size, dtype=torch.float64)
        self.enabled, self.max_spread = enabled, max_spread
        self.propagated = self.materialised = 0

    def read_by(self, linear: nn.Linear) -> None:
        """``linear`` reads the stream: ``W y = (W diag(s)) (y / s)``."""
        linear.weight.copy_((linear.weight.double() * self.s[None, :]).to(linear.weight.dtype))

    @torch.no_grad()
    def through(self, linear: nn.Linear, parent: nn.Module, attr: str, last: bool = False) -> None:
        """The residual norm ``parent.attr``: ``y' = g (W z + b + y) + beta`` with ``y`` the
        stream. Propagate (``s' = g s``, nothing left of the norm but the add) while the spread
        of ``s'`` stays within bounds, else multiply ``g s`` in and restart at 1."""
        norm = getattr(parent, attr)
        g, beta = norm.weight.double(), norm.bias.double()
        new = g * self.s
        spread = float(new.abs().max() / new.abs().min()) if bool((new != 0).all()) else math.inf
        if self.enabled and not last and spread <= self.max_spread:
            # g (W z + b + s r) + beta = (g s) (r + (W z + b + beta / g) / s)
            w, b = linear.weight.double(), linear.bias.double()
            linear.weight.copy_((w / self.s[:, None]).to(linear.weight.dtype))
            linear.bias.copy_(((b + beta / g) / self.s).to(linear.bias.dtype))
            setattr(parent, attr, FoldedNoNorm(None))
            self.s = new
            self.propagated += 1
        else:
            # g (W z + b + s r) + beta = (g W) z + (g b + beta) + (g s) r: the plain fold, its
            # residual gamma times the scale carried so far
            _fold(linear, parent, attr, residual=True)
            getattr(parent, attr).gamma.copy_(new)
            self.s = torch.ones_like(self.s)
            self.materialised += 1


@torch.no_grad()
def _fold(linear: nn.Linear, parent: nn.Module, attr: str, residual: bool) -> None:
    from leanbert.speedups.mobilebert_inference import fold_no_norm

    norm = getattr(parent, attr)
    weight, bias = fold_no_norm(linear, norm)
    linear.weight.copy_(weight)
    linear.bias.copy_(bias)
    setattr(parent, attr, FoldedNoNorm(norm.weight if residual else None))


@torch.no_grad()
def fold_mobilebert_no_norm(model: nn.Module, *, propagate: bool = False,
                            max_scale_spread: float = MAX_SCALE_SPREAD) -> nn.Module:
    """A copy of a NoNorm MobileBERT ``model`` (plain modules) with every NoNorm folded into
    the linear layer before it (see the module docstring); the same function values up to
    float rounding. Other models are returned unchanged (not copied).

    ``propagate``: also remove the ``Mul`` that each residual norm leaves (``x + g * residual``)
    by carrying the norm's scale along the residual stream instead: with ``y = s * y~`` the
    stream, a residual norm becomes ``y~' = y~ + (W z + b + beta / g) / s`` with ``s' = g s``
    (the weights and bias rescaled, a plain ``Add``), and every layer that reads the stream gets
    its weight columns multiplied by ``s``. The 128-wide stream inside a block restarts at each
    block's input bottleneck; the 512-wide stream between blocks is carried across blocks and
    multiplied in at the last one, or earlier wherever the spread of ``s`` would exceed
    ``max_scale_spread`` (:data:`MAX_SCALE_SPREAD`) or a ``g`` is zero. Exact in real arithmetic
    for the last hidden state and the heads (the intermediate layers' outputs are then ``y / s``:
    ask for ``output_hidden_states`` from the unpropagated fold); the export records how many
    norms were propagated (``card["graph_transforms"]``).
    """
    folded, _ = _fold_mobilebert(model, propagate=propagate, max_scale_spread=max_scale_spread)
    return folded


@torch.no_grad()
def _fold_mobilebert(model: nn.Module, *, propagate: bool,
                     max_scale_spread: float = MAX_SCALE_SPREAD) -> tuple[nn.Module, dict[str, int] | None]:
    """:func:`fold_mobilebert_no_norm` and its counts (None when there was nothing to fold)."""
    cfg = model.config
    if cfg.model_type != "mobilebert" or cfg.normalization_type != "no_norm":
        return model, None
    from leanbert.models.mobilebert import NoNorm

    folded = copy.deepcopy(model)
    emb = folded.encoder.embeddings
    if emb.projection is not None and isinstance(emb.norm, NoNorm):
        # g (P e + b + t + p) + beta = (gP) e + (g b + beta) + g t + g p
        gamma = emb.norm.weight
        emb.token_type.weight.mul_(gamma)
        emb.position.weight.mul_(gamma)
        _fold(emb.projection, emb, "norm", residual=False)
    outer = _Scale(cfg.hidden_size, propagate, max_scale_spread)  # between blocks
    inner_counts = [0, 0]
    layers = list(folded.encoder.layers)
    for i, layer in enumerate(layers):
        readers = [layer.input_bottleneck.dense]
        if layer.qk_bottleneck is not None:
            readers.append(layer.qk_bottleneck.dense)
        elif layer.source == "block_input":
            readers.append(layer.attention.query_key)
        if layer.source != "bottleneck":
            readers.append(layer.attention.value)
        for linear in readers:
            outer.read_by(linear)
        _fold(layer.input_bottleneck.dense, layer.input_bottleneck, "norm", residual=False)
        if layer.qk_bottleneck is not None:
            _fold(layer.qk_bottleneck.dense, layer.qk_bottleneck, "norm", residual=False)
        inner = _Scale(cfg.intra_bottleneck_size, propagate, max_scale_spread)  # inside the block
        inner.through(layer.attention.out, layer.attention, "norm")
        for ffn in layer.ffns:
            inner.read_by(ffn.up)
            inner.through(ffn.down, ffn, "norm")
        inner.read_by(layer.output_bottleneck.dense)
        inner_counts[0] += inner.propagated
        inner_counts[1] += inner.materialised
        outer.through(layer.output_bottleneck.dense, layer.output_bottleneck, "norm", last=i == len(layers) - 1)
    counts = {"residual_norms_propagated": inner_counts[0] + outer.propagated,
              "residual_norms_multiplied": inner_counts[1] + outer.materialised}
    return folded.eval(), counts
