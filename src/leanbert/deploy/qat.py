"""Quantization-aware fine-tuning (QAT) for the int8 model of :mod:`leanbert.deploy.torch_int8`,
after the MobileBERT authors' code (google-research ``mobilebert/``: ``--use_quantized_training``
with the ``*_OPT_QAT.json`` config).

Method card
-----------
What it does. :func:`prepare_qat` makes a model train against its own int8 rounding: every
linear layer that :func:`~leanbert.deploy.torch_int8.quantize_int8` will quantize becomes a
:class:`QATLinear`, whose forward pass IS the int8 layer (torchao's int8 weight, symmetric per
output channel, and its per-token int8 input, through the same kernel), and whose backward pass
is that of 8-bit fake quantization with a straight-through estimator (Jacob et al. 2018): the
product of the fake-quantized input and weight, the rounding passed through unchanged. ReLU
becomes ReLU6 (``hidden_act: relu6``), as in the authors' QAT config. Fine-tuning then adapts the
weights to the rounding, and :func:`convert_qat` gives the int8 model whose outputs the
fine-tuning saw, exactly (same numbers, tested).

Why not torchao's ``FakeQuantizedLinear`` (``torchao.quantization.qat``): in torchao 0.18 it
simulates per-token activations only asymmetrically, and asymmetric int8 layers compile to code
about 2x slower on CPU than the symmetric ones (measured: 2 MobileBERT layers, batch 1 x 128,
18.9 vs 9.8 ms). A float simulation of the symmetric scheme (dequantized products) is not
enough either: the largest value of every token sits on a rounding tie (torchao's scale maps it
to +-127.5 steps), so float-rounding differences between simulation and int8 kernel flip ties
and the two models drift apart by as much as the int8 error itself. Running the int8 kernel in
the forward pass removes both problems.

When it helps. When post-training int8 (``leanbert evaluate --int8``) loses more than about one
point of the task metric against fp32: fine-tune again from the pretrained checkpoint with
``leanbert finetune ... --set qat=true``; the dev metrics it reports are the int8 model's
(``metrics.json`` repeats them under ``int8``, computed from the saved checkpoint). Where
post-training int8 is within a point, QAT costs training time for nothing (measured on CPU:
2.1x the time of an fp32 step, MobileBERT widths, 6 layers, batch 8 x 128, one thread).

Knobs. ``relu6`` (default on; only ReLU layers change: BERT's GELU stays GELU).

Deviations from the authors' code, written down. Their TF1 ``quantize()`` fake-quantizes for
TFLite's static int8: activations per tensor with moving-average ranges initialised at
[-6, 6] (EMA decay 0.999), weights symmetric per tensor, and NoNorm's inputs and parameters
too. leanbert's int8 model quantizes activations dynamically per token and weights per output
channel, so QAT trains against that: there is no activation range to initialise or to learn
(each token's range is measured), and nothing is rounded outside the linear layers. The int8
model keeps MobileBERT's NoNorms unfolded (``quantize_int8(..., fold_norms=False)``): folding
them changes the rounding of the weights that sit on ties, which the fine-tuning saw; ``leanbert
evaluate --int8`` does the same for checkpoints fine-tuned with QAT.

What is saved. :class:`QATLinear` holds no state of its own: a checkpoint written during QAT is
an ordinary fp32 leanbert checkpoint (same keys) whose config says ``hidden_act: relu6``;
loading it gives the trained fp32 model, and ``quantize_int8`` the int8 one. QAT runs in fp32
(the int8 forward of the products is fp32 in and out; under bf16 or fp16 autocast, MobileBERT's
products would bypass the module or change its inputs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leanbert.deploy.torch_int8 import (
    Int8Method,
    _remove_fake_quant,
    int8_targets,
    is_int8,
    quantize_int8,
    require_torchao,
)
from leanbert.errors import ConfigError

__all__ = ["QATLinear", "prepare_qat", "convert_qat", "remove_qat", "fake_quantized_linears", "is_qat",
           "QAT_PRECISIONS"]

QAT_PRECISIONS = ("fp32",)
_INT8_CONFIG: list = []  # torchao's Int8DynamicActivationInt8WeightConfig(), made once


def _int8_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` as the int8 tensor that ``quantize_int8(method="torchao")`` gives the layer:
    torchao's own function for its ``Int8DynamicActivationInt8WeightConfig``."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from torchao.quantization.quant_api import _int8_dynamic_activation_int8_weight_quantize_tensor

    if not _INT8_CONFIG:
        _INT8_CONFIG.append(Int8DynamicActivationInt8WeightConfig())
    return _int8_dynamic_activation_int8_weight_quantize_tensor(weight, _INT8_CONFIG[0])


class QATLinear(nn.Linear):
    """An ``nn.Linear`` that computes like its int8 version and learns like fake quantization
    (see the module docstring). Same state as ``nn.Linear``: :func:`prepare_qat` swaps the class
    of a layer in place, :func:`remove_qat` swaps it back."""

    fake_quantized = True  # what deploy.torch_int8 looks for to swap it back before quantizing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchao.quantization import Int8Tensor, MappingType, PerRow

        weight, bias = self.weight, self.bias
        int8_weight = _int8_weight(weight.detach())
        with torch.autocast(x.device.type, enabled=False):
            exact = F.linear(x.detach().float(), int8_weight, None if bias is None else bias.detach().float())
        if not torch.is_grad_enabled():
            return exact
        # Straight-through: d/dx and d/dW of F.linear(q(x), q(W)) with the rounding q passed through.
        x_q = Int8Tensor.from_hp(x.detach(), PerRow(), mapping_type=MappingType.SYMMETRIC).dequantize()
        surrogate = F.linear(x + (x_q.to(x.dtype) - x).detach(),
                             weight + (int8_weight.dequantize().to(weight.dtype) - weight).detach(), bias)
        return surrogate + (exact.to(surrogate.dtype) - surrogate).detach()


def fake_quantized_linears(model: nn.Module) -> list[str]:
    """Names of the QAT linear layers of ``model`` (empty without QAT)."""
    return [name for name, module in model.named_modules() if isinstance(module, QATLinear)]


def is_qat(model: nn.Module) -> bool:
    """Whether ``model`` is prepared for quantization-aware training (:func:`prepare_qat`)."""
    return bool(fake_quantized_linears(model))


def prepare_qat(model: nn.Module, *, relu6: bool = True) -> nn.Module:
    """Prepare ``model`` (a leanbert model) for quantization-aware fine-tuning, in place; returns
    it. The parameters stay the same objects (an optimizer built before keeps working) and the
    state dict keeps its keys. See the module docstring."""
    require_torchao()
    if not hasattr(model, "encoder") or not hasattr(model, "config"):
        raise ConfigError(f"prepare_qat needs a leanbert model, got {type(model).__name__}")
    if is_int8(model):
        raise ConfigError("this model is already int8; prepare the fp32 model for QAT, then convert_qat")
    if is_qat(model):
        raise ConfigError("this model is already prepared for QAT; call prepare_qat once")
    layers = dict(model.named_modules())
    targets = int8_targets(model)
    other = [name for name in targets if type(layers[name]) is not nn.Linear]
    if other:  # a speed-up's OneDNNLinear (leanbert.optimize after prepare_qat is fine)
        raise ConfigError(f"{len(other)} linear layer(s) are not plain nn.Linear (e.g. {other[0]}): call "
                          "leanbert.restore(model) before prepare_qat")
    if relu6 and getattr(model.config, "hidden_act", None) == "relu":
        model.config.hidden_act = "relu6"  # the checkpoint then rebuilds the same function
        for module in model.modules():
            if getattr(module, "act", None) is F.relu:
                module.act = F.relu6
    for name in targets:
        layers[name].__class__ = QATLinear
    return model


def remove_qat(model: nn.Module) -> nn.Module:
    """Turn every :class:`QATLinear` of ``model`` back into ``nn.Linear``, in place (the
    activation stays ReLU6: the weights were trained with it)."""
    return _remove_fake_quant(model)


def convert_qat(model: nn.Module, *, method: Int8Method = "torchao") -> nn.Module:
    """The int8 model of a QAT-fine-tuned ``model`` (which is left as it is): linear layers int8,
    NoNorm not folded (:func:`~leanbert.deploy.torch_int8.quantize_int8`). With
    ``method="torchao"`` it computes exactly what the fine-tuning's forward passes computed."""
    if not is_qat(model):
        raise ConfigError("this model is not prepared for QAT (prepare_qat); use quantize_int8 directly")
    return quantize_int8(model, method=method, fold_norms=False)
