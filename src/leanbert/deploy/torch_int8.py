"""PyTorch int8 for leanbert encoders: int8 weights and dynamic int8 activations in the linear
layers, for users who stay in PyTorch (the ONNX Runtime path is :mod:`leanbert.deploy.onnx`).

Method card
-----------
What it does. ``quantize_int8(model)`` returns an inference copy of a fine-tuned (or
pretrained) model whose linear layers compute in int8: each weight is quantized once,
symmetric per output channel; each input is quantized on the fly, per token (one scale per
row), the int8 product accumulates in int32 and is rescaled to fp32. This is
8-bit post-training quantization of the linear layers, the deployment step of MobileBERT
(Sun et al., ACL 2020: NoNorm and ReLU, Sec. 3.3, were chosen to make it cheap).

What is quantized. Every ``nn.Linear`` of the encoder (MobileBERT's embedding projection,
every layer's products, the pooler) and the MLM head's dense transform: :func:`int8_targets`
names them. The output layers stay fp32: the classifier, span-QA, NSP layers have 1 to
``num_labels`` outputs (an int8 product saves nothing there and costs accuracy where every
logit counts) and the MLM decoder is the tied word-embedding matrix, not a linear layer.

MobileBERT first. Before quantizing, every NoNorm is folded into the linear layer before it
(``g (W h + b) + beta = (gW) h + (g b + beta)``, exact; the residual keeps ``g``), with the
ONNX export's :func:`~leanbert.deploy.fold.fold_mobilebert_no_norm`, which uses the same
:func:`~leanbert.speedups.mobilebert_inference.fold_no_norm` as the fp32 fast path. Folding
(nearly) commutes with the quantization: the inputs of every linear layer are unchanged, and
per output channel ``gW`` gets the scale ``|g| s`` and the same int8 values, except that the
row's largest weight sits on a rounding tie (``+-127.5`` steps) and may move by one step
(measured on a 2-layer MobileBERT with random NoNorm parameters: the folded and unfolded int8
models differ by 1.4e-3 of the largest hidden value, half the int8 error itself, 2.9e-3 folded
and 3.2e-3 unfolded). It
removes the NoNorm products from the int8 graph. A model fine-tuned with QAT is converted
unfolded instead (:func:`leanbert.deploy.qat.convert_qat`), to keep the rounding it learned.

Two methods (``method=``), measured on this machine's Xeon (AVX-512 VNNI, AMX), torch 2.13,
torchao 0.18, MobileBERT (24 layers) batch 1 x 128, one thread, medians of interleaved runs,
fp32 eager 61 ms:

- ``"torchao"`` (default, the maintained API): ``torchao.quantization.quantize_`` with
  ``Int8DynamicActivationInt8WeightConfig()`` (symmetric per-token activations; the asymmetric
  variant compiles to code about 2x slower here). Eager, it is SLOWER than fp32 on CPU (about
  2.5x: per-product Python and quantization overhead around ``torch._int_mm``); under
  ``torch.compile`` 34 ms, 1.8x faster than fp32 eager, after about 75 s of compilation and a
  recompilation per new input shape. Use it as ``torch.compile(quantize_int8(model))``.
- ``"dynamic"``: ``torch.ao.quantization.quantize_dynamic`` (per-channel int8 weights, per-tensor
  dynamic activations, fbgemm/oneDNN kernels): 42 ms, 1.46x faster than fp32, in eager mode.
  ``torch.ao.quantization`` is deprecated by PyTorch and scheduled for removal; choosing it
  warns (FutureWarning).

(These 24-layer figures were taken with NoNorm unfolded; on 4 MobileBERT layers folding took
``dynamic`` from 1.42x to 1.50x and compiled torchao from 1.80x to 1.83x.)

The result is for inference: it is in eval mode, and ``state_dict()`` (so
``leanbert.save_pretrained``) raises a one-line :class:`~leanbert.errors.CheckpointError`
instead of writing a checkpoint that nothing can load; save the fp32 model, and quantize it
again after loading. ``leanbert.optimize`` leaves the int8 layers alone (they are not plain
``nn.Linear`` any more), and an int8 MobileBERT encoder does not take the packed fp32
inference plan.

Accuracy is measured with the same code as fp32: ``leanbert evaluate --model CKPT --data DIR
--int8 [torchao|dynamic]``. If post-training int8 loses more than about a point, fine-tune
with quantization-aware training (``--set qat=true``, :mod:`leanbert.deploy.qat`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from leanbert.errors import CheckpointError, ConfigError
from leanbert.models.mobilebert import MobileBertEncoder

__all__ = [
    "INT8_METHODS", "Int8Method", "Int8Linear", "Int8MobileBertEncoder", "quantize_int8", "int8_targets", "quantized_linears",
    "is_int8", "weight_bytes", "require_torchao",
]

Int8Method = Literal["torchao", "dynamic"]
INT8_METHODS: tuple[str, ...] = ("torchao", "dynamic")


class Int8Linear(nn.Linear):
    """An ``nn.Linear`` whose weight torchao replaced by an int8 tensor that also quantizes the
    input per token (``torchao.quantization.Int8Tensor``). Same state as ``nn.Linear``; the
    class marks the layer as quantized, so that :func:`quantized_linears` finds it and
    ``leanbert.optimize`` (which swaps plain ``nn.Linear`` only) leaves it alone."""


class Int8MobileBertEncoder(MobileBertEncoder):
    """A MobileBERT encoder with int8 linear layers (and folded NoNorms). A class of its own so that
    ``leanbert.optimize(..., for_training=False)``, which swaps exactly ``MobileBertEncoder``,
    does not give it the packed fp32 plan (which reads fp32 weights and NoNorm parameters)."""


def require_torchao() -> None:
    """Import torchao (its CPU-build import noise filtered: :mod:`leanbert._logs`), or raise a
    one-line error naming the pip command when it cannot be imported."""
    from leanbert._logs import quiet_third_party_logs

    quiet_third_party_logs()
    try:
        import torchao  # noqa: F401
    except ImportError:
        from leanbert.errors import MissingDependency

        raise MissingDependency(
            "PyTorch int8 with torchao (and quantization-aware training) needs torchao, which is not "
            "installed; pip install 'leanbert[int8]' (or use method='dynamic')"
        ) from None


def int8_targets(model: nn.Module) -> list[str]:
    """Names of the linear layers :func:`quantize_int8` quantizes: every ``nn.Linear`` under
    ``model.encoder`` and the MLM head's ``mlm.dense`` (see the module docstring)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and (name.startswith("encoder.") or name == "mlm.dense")]


def _dynamic_linear_class() -> type:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return DynamicLinear


def quantized_linears(model: nn.Module) -> list[str]:
    """Names of the int8 linear layers of ``model`` (either method)."""
    dynamic = _dynamic_linear_class()
    return [name for name, module in model.named_modules() if isinstance(module, (Int8Linear, dynamic))]


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` went through :func:`quantize_int8`."""
    return bool(getattr(model, "leanbert_int8", None))


def _refuse_state_dict(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    raise CheckpointError(
        "this model is quantized to int8 for inference and cannot be saved as a leanbert checkpoint; "
        "save the fp32 model and run quantize_int8 (or 'leanbert evaluate --int8') after loading it, "
        "or export int8 with 'leanbert export --format onnx --quantize dynamic'"
    )


def _check_model(model: nn.Module) -> None:
    if not isinstance(model, nn.Module) or not hasattr(model, "encoder") or not hasattr(model, "config"):
        raise ConfigError(
            f"quantize_int8 needs a leanbert model (leanbert.from_pretrained / build_model), got "
            f"{type(model).__name__}"
        )
    if is_int8(model) or quantized_linears(model):
        raise ConfigError("this model is already quantized to int8; quantize the fp32 model once")


def _remove_fake_quant(model: nn.Module) -> nn.Module:
    """A model fine-tuned with QAT: its fake-quantized linear layers (classes that set
    ``fake_quantized = True``, :class:`leanbert.deploy.qat.QATLinear`) become ``nn.Linear``
    again, in place, with the same weights. (Marked by a class flag so that this module does
    not import :mod:`leanbert.deploy.qat`, which builds on it.)"""
    for module in model.modules():
        if isinstance(module, nn.Linear) and getattr(type(module), "fake_quantized", False):
            module.__class__ = nn.Linear
    return model


def _quantize_torchao(model: nn.Module, targets: Sequence[str]) -> None:
    require_torchao()
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    wanted = set(targets)
    config = Int8DynamicActivationInt8WeightConfig()  # symmetric per-token inputs, per-channel weights
    quantize_(model, config, filter_fn=lambda module, fqn: fqn in wanted and isinstance(module, nn.Linear))
    modules = dict(model.named_modules())
    for name in targets:
        modules[name].__class__ = Int8Linear


def _quantize_dynamic(model: nn.Module, targets: Sequence[str]) -> None:
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ConfigError("method='dynamic' (torch.ao quantize_dynamic) runs on the CPU only; move the model "
                          "there first (model.cpu()) or use method='torchao'")
    warnings.warn(
        "method='dynamic' uses torch.ao.quantization.quantize_dynamic, which PyTorch has deprecated and will "
        "remove; it is offered because its kernels are fast in eager mode on CPU. The maintained path is "
        "method='torchao' (fast under torch.compile).",
        FutureWarning, stacklevel=3,
    )
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in targets}, dtype=torch.qint8,
                     inplace=True)


def quantize_int8(model: nn.Module, *, method: Int8Method = "torchao", fold_norms: bool = True) -> nn.Module:
    """An int8 inference copy of ``model`` (a leanbert model; ``model`` itself is not changed):
    NoNorm folded (MobileBERT, ``fold_norms``), then the linear layers of :func:`int8_targets`
    quantized with ``method`` (see the module docstring). A model fine-tuned with
    quantization-aware training (:mod:`leanbert.deploy.qat`) loses its fake quantization here
    and becomes the int8 model it simulated. Works on speed-up modules too: it quantizes the
    plain modules (``leanbert.plain_modules``)."""
    if method not in INT8_METHODS:
        raise ConfigError(f"unknown int8 method '{method}'; use one of: {', '.join(INT8_METHODS)}")
    _check_model(model)
    from leanbert.deploy.fold import fold_mobilebert_no_norm
    from leanbert.speedups import plain_modules

    with plain_modules(model):
        quantized = fold_mobilebert_no_norm(model) if fold_norms else model
        if quantized is model:  # BERT (or no folding): nothing was copied yet
            quantized = copy.deepcopy(model)
    quantized.eval()
    _remove_fake_quant(quantized)
    targets = int8_targets(quantized)
    if method == "torchao":
        _quantize_torchao(quantized, targets)
    else:
        _quantize_dynamic(quantized, targets)
    if type(quantized.encoder) is MobileBertEncoder:
        quantized.encoder.__class__ = Int8MobileBertEncoder
    quantized.leanbert_int8 = method
    quantized.register_state_dict_pre_hook(_refuse_state_dict)
    return quantized


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers as their tensors hold them: for the int8
    layers the int8 values plus their per-channel scales and zero points, for the rest the fp32
    (or other) tensors. Shared tensors count once. A proxy for the size of a saved int8 model
    (this one is not saved), for benchmarks beside the fp32 ``model.safetensors``."""
    seen: set[int] = set()
    alive: list[torch.Tensor] = []  # ids are only unique while the tensors live (_weight_bias makes new ones)
    total = 0

    def add(t: torch.Tensor) -> None:
        nonlocal total
        if id(t) in seen:
            return
        seen.add(id(t))
        alive.append(t)
        if hasattr(t, "__tensor_flatten__"):  # a torchao tensor subclass: count its inner tensors
            for name in t.__tensor_flatten__()[0]:
                add(getattr(t, name))
        elif t.is_quantized:  # torch.ao: int8 values plus per-channel (or one) scale and zero point
            total += t.numel() * t.element_size()
            if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                for q in (t.q_per_channel_scales(), t.q_per_channel_zero_points()):
                    total += q.numel() * q.element_size()
            else:
                total += 16  # one float64 scale and one int64 zero point
        else:
            total += t.numel() * t.element_size()

    dynamic = _dynamic_linear_class()
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if isinstance(module, dynamic):
            tensors += [t for t in module._weight_bias() if t is not None]
        for t in tensors:
            add(t)
    return total
