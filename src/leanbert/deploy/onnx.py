"""ONNX export of any leanbert encoder with its heads, ONNX Runtime int8, and running the export.

Method card
-----------
What: ``export_onnx(checkpoint, out)`` writes the model's plain modules (``leanbert.restore`` /
``plain_modules``: no speed-up classes in the graph) in eval mode as one ONNX graph with
inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 ``[batch, sequence]``, both
axes dynamic, sequence up to ``max_position_embeddings``) and one output per head:

===============  ===============================================  ===========================
head             output(s)                                        shape
===============  ===============================================  ===========================
mlm              ``mlm_logits``                                   [batch, sequence, vocab]
nsp              ``nsp_logits``                                   [batch, 2]
classifier       ``logits`` (regression: one column)              [batch, num_labels]
span_qa          ``start_logits``, ``end_logits``                 [batch, sequence]
(no head)        ``last_hidden_state`` (+ ``pooled_output``)      [batch, sequence, hidden]
===============  ===============================================  ===========================

The output names are :class:`~leanbert.models.base.ModelOutput`'s fields, so
:class:`OnnxModel` returns the same object the PyTorch model does and the evaluation code of
:mod:`leanbert.tasks.finetune` runs either unchanged (``leanbert evaluate --onnx``,
:func:`leanbert.deploy.onnx_eval.evaluate_onnx`: a module of its own, since fine-tuning imports
the deploy package and this module must not import fine-tuning).

Exporter: ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter, the
default since torch 2.9; it needs ``onnxscript``). Both exporters give a correct graph with
dynamic axes for these models (fp32 max abs diff ~5e-7 on tiny models); the TorchScript one
(``dynamo=False``) is deprecated (it warns on every call) and its graph is worse for ONNX
Runtime: ~60 ``Constant``/``Identity`` nodes per BERT layer pair, and ORT's optimiser does not
fuse its LayerNorm + residual into ``SkipLayerNormalization`` (it does on the dynamo graph).
The cost is export time (2-4 s for a tiny model instead of <1 s).

MobileBERT (Sun et al., ACL 2020, Sec. 3.3 "Operational Optimizations"): NoNorm and ReLU were
chosen so that inference is a chain of matrix products. Before export every NoNorm is folded
into the linear layer before it with the fast path's math
(:func:`leanbert.speedups.mobilebert_inference.fold_no_norm`, ``g (W h + b) + beta = (gW) h +
(g b + beta)``): the bottleneck norms vanish, a residual norm leaves one ``Mul``
(``x + g * residual``), and the embedding norm is folded into the embedding projection and the
position and token-type tables. A NoNorm after an int8 product then costs nothing, and the
quantised weights are the folded ones (what int8 sees is what runs). Measured on MobileBERT (24
layers, random NoNorm parameters, batch 1 x 128, one thread, loaded machine): the optimised
graph has 193 fewer ``Add`` and 49 fewer ``Mul`` (fp32) and runs 59.5 -> 56.2 ms fp32 and
26.3 -> 24.7 ms int8 (about 6% less), with the same outputs (max abs diff to PyTorch 6e-8 fp32).

The export then goes one step further (``fold_mobilebert_no_norm(propagate=True)``): the ``Mul``
a residual norm leaves is removed by carrying its scale along the residual stream (the stream
holds ``y / s``; the next residual norm's weights and bias absorb ``1 / s`` and the products that
read the stream absorb ``s`` in their columns), so a residual norm becomes a plain ``Add``. The
128-wide stream restarts in every block; the 512-wide one is carried across blocks and
multiplied in at the last block, or earlier where the scale's spread would exceed
:data:`MAX_SCALE_SPREAD` (int8 quantises the stream per tensor). MobileBERT (24 layers): 143 of 144
residual norms become an ``Add``, 120 fewer ``Mul`` after ORT's optimisation, fp32 outputs equal to
PyTorch within 6e-8. int8 on fine-tuned MobileBERT-shaped checkpoints (the token-dropping
experiment's, 8 layers; dev sets; plain fold -> propagated -> the default int8 file with every
rewrite below): SST-2 70.5 -> 70.6 -> 70.3 and 71.7 -> 71.8 -> 71.7 (fp32 70.2, 71.7), MRPC F1 81.6
all three, CoLA MCC 0 all three; mean |int8 - fp32| logit difference 0.0079 -> 0.0091 -> 0.0067
(SST-2) and 0.0010 -> 0.0016 -> 0.0013 (MRPC).

The int8 file is quantised from a graph rewritten for ONNX Runtime by default
(:mod:`leanbert.deploy.ort_graph`, ``int8_graph="ort"``): attention as one
``com.microsoft.MultiHeadAttention`` node per layer (BERT and MobileBERT), and MobileBERT's shared
Q/K bottleneck composed into the Q/K projection and stacked with the other two products of
the block input (input bottleneck, values) into one. That graph is checked against PyTorch in fp32
like ``model.onnx`` (recorded on the card) and makes ``model.int8.onnx`` ORT-only;
``int8_graph="portable"`` quantises ``model.onnx`` itself. Measured on MobileBERT (24 layers,
batch 1 x 128, one thread, 80 interleaved calls, quiet 2-core Xeon, paired median ratio against
optimum's int8 export of the same weights): the plain fold 1.13x, + propagation + fused
attention 1.19x, + Q/K composition and the scale carried across blocks 1.23x, + ORT's flash
attention for batches without padding 1.28x; + one product of the block input 1.25x -> 1.27x
(another run).

What ONNX Runtime fuses (``SessionOptions.optimized_model_filepath`` at ``ORT_ENABLE_ALL``,
onnxruntime 1.32, counted on bert-tiny and mobilebert-tiny-test exports): for BERT,
``SkipLayerNormalization`` (residual add + LayerNorm, 4 of 5) and ``FusedMatMul`` (the
transposed key product with the 1/sqrt(d) scale folded in); GELU stays ``Erf``/``Mul``/``Div``.
For MobileBERT, the same ``FusedMatMul``; the folded NoNorm's ``Mul`` + ``Add`` and the
``MatMul`` + bias ``Add`` stay separate ops (ORT fuses MatMul + Add into ``Gemm`` only for 2-D
inputs). Attention is exported as written-out products with an additive key mask
(:class:`AdditiveMaskAttention`: the SDPA export added a ``Where`` on the scores and an ``IsNaN``
+ ``Where`` guard per layer; MobileBERT's graph after ORT's optimisation lost 25 ``Where``, 48
``Reshape``, 72 ``Slice``, 24 ``Transpose``, 47 ``Concat`` and 24 ``Shape`` nodes with it), but it
is still not fused into ORT's ``Attention`` op for either family (the fused QKV projection and
its split do not match the fusion patterns). ORT's offline
transformer optimiser (``onnxruntime.transformers.optimizer``, model_type ``bert``) adds
``BiasGelu`` and the fifth ``SkipLayerNormalization`` for BERT, and nothing for MobileBERT.
It is correct (fp32 max abs diff 7e-8 on BERT-base) but barely faster here: BERT-base, batch 1 x
128, one thread, 50 interleaved runs on a loaded 2-core machine: fp32 median 429 -> 430 ms (p10
293 -> 270), int8 median 123 -> 127 ms (p10 84 -> 75, paired median ratio 1.06); MiniLM fp32
31.0 -> 31.1 ms, int8 14.6 -> 14.1 ms. And it writes ``com.microsoft`` contrib ops into
``model.onnx``, which then runs on ONNX Runtime only. So it is off by default and offered as
``ort_optimize=True`` (``--ort-optimize``; BERT only, recorded on the card).

int8 (ONNX Runtime quantization; the MobileBERT paper quantises with 8-bit post-training
quantization of the linear layers):

- ``dynamic``: ``quantize_dynamic``: the linear layers' weights (``MatMul`` with a constant
  weight) to int8 per tensor, activations quantised to uint8 at run time per tensor
  (``DynamicQuantizeLinear`` + ``MatMulInteger``); the embedding tables (``Gather``) to int8.
  ORT then fuses each quantise + integer product + rescale (+ bias) into ``DynamicQuantizeMatMul``
  (or ``MatMulIntegerToFloat`` where products share a quantised input): MobileBERT has 266 + 72.
- ``static``: ``quantize_static`` in the QDQ format (what ORT's CPU kernels are built for),
  int8 weights and uint8 activations with ranges calibrated (MinMax) on real task text read
  by :func:`calibration_batches`; the same ops are quantised.
- ``per_channel`` (``--per-channel``, either mode): one weight scale per output column instead
  of one per matrix, the scheme of PyTorch's int8 paths; closer to fp32 where a few columns hold
  the largest weights, about 4% slower on MobileBERT (measured below), so not the default, except
  for checkpoints fine-tuned with quantization-aware training, whose weights learned the
  per-channel rounding (``--no-per-channel`` overrides). Measured in
  ``experiments/deployment/``: on fine-tuned all-MiniLM-L6-v2, per-tensor int8 loses 1.3 SST-2
  dev points, per-channel none.

Tried on MobileBERT's int8 graph and not adopted (24 layers, random init, batch 1 x 128, one
thread, paired medians of 40-100 interleaved calls against optimum's int8 export of the same
weights): one product for the three projections that read the block input (input bottleneck,
shared Q/K bottleneck, values; 72 fewer nodes) no gain over the plain fold (adopted later, after
the Q/K composition, where it adds 1%); ``com.microsoft.MultiHeadAttention`` alone 1.10x against 1.08x
(adopted later together with the scale propagation, above, where it adds 4%); leaving the
embedding tables in fp32 (``MatMul`` only): the same optimised graph but 4 ``DequantizeLinear``,
no difference; static quantization in the QDQ format 0.48x and in the QOperator format 0.81x
(ORT's CPU kernels for QDQ products are slower than its dynamic ones at batch 1); two intra-op
threads: every candidate about twice as slow as at one on this 2-core machine; per-channel weight
scales 4% slower; ``MatMulNBits`` (8-bit blocks of 32 or 128, int8 compute) 2.2x slower; torchao's
int8 under ``torch.compile`` 1.8x slower than ORT int8 at one thread. About 70% of the time is
left in ``DynamicQuantizeMatMul``, the same MLAS kernels optimum's graph runs.

Attention's activation-activation products and softmax stay fp32 in both. ORT's
pre-processing (``quant_pre_process``: symbolic shape inference and basic graph optimisation,
which the quantiser recommends) is not run: on the MiniLM export it gave the same quantised
ops and bit-identical int8 outputs at the same speed, dynamic and static, for 3-4 s more.

Output directory::

    model.onnx          fp32 graph, standard ops (MobileBERT: NoNorm folded, scales propagated)
    model.int8.onnx     int8 graph (with --quantize dynamic|static; by default from the ORT-rewritten
                        graph, ONNX Runtime only; --int8-graph portable: standard ops)
    vocab.txt, tokenizer.json, tokenizer_config.json   the checkpoint's tokenizer
    card.json           family, preset, heads, task, labels, inputs/outputs, opset, quantization,
                        file sizes, versions, and the fp32-vs-PyTorch parity measured at export
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from leanbert import __version__
from leanbert.deploy.fold import (
    MAX_SCALE_SPREAD,
    FoldedNoNorm,
    _fold_mobilebert,
    fold_mobilebert_no_norm,
)
from leanbert.errors import ConfigError, DataError, LeanbertError, MissingDependency
from leanbert.models.attention import Attention

__all__ = [
    "export_onnx", "OnnxModel", "read_card", "calibration_batches", "fold_mobilebert_no_norm",
    "FoldedNoNorm", "MAX_SCALE_SPREAD", "output_names", "require_onnx", "FP32_FILE", "INT8_FILE", "CARD_FILE", "PARITY_ATOL", "PARITY_RTOL",
]

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
CARD_FILE = "card.json"
CARD_FORMAT = 1
DEFAULT_OPSET = 18
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
QuantizeMode = Literal["none", "dynamic", "static"]
QUANTIZE_MODES = ("none", "dynamic", "static")
Int8Graph = Literal["ort", "portable"]
INT8_GRAPHS = ("ort", "portable")
_ORT_SOURCE_FILE = "model.ort-fp32.onnx"  # the rewritten fp32 graph, quantised then removed
# fp32 ONNX vs PyTorch: |onnx - torch| <= PARITY_ATOL + PARITY_RTOL * |torch| everywhere
# (np.allclose), checked at export on padded probe batches; measured values are ~1e-6.
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4
# Quantised ops: the linear layers (MatMul with a constant weight) and the embedding tables.
QUANTIZED_OPS = ("MatMul", "Gather")
CALIBRATION_BATCH = 8
_HEAD_OUTPUTS = {"mlm": ("mlm_logits",), "nsp": ("nsp_logits",), "classifier": ("logits",),
                 "span_qa": ("start_logits", "end_logits")}


class ParityError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes (a bug to report)."""


def require_onnx(*, exporter: bool = False) -> None:
    """Raise a one-line error naming the pip command when onnx / onnxruntime (and, for the
    exporter, onnxscript) cannot be imported."""
    modules = ["onnx", "onnxruntime", *(["onnxscript"] if exporter else [])]
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        what = "ONNX export" if exporter else "running an ONNX export"
        raise MissingDependency(
            f"{what} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed; "
            "pip install 'leanbert[export]'"
        )


# --------------------------------------------------------------------------------------
# The graph: plain modules, NoNorm folded, one output per head
# --------------------------------------------------------------------------------------


class AdditiveMaskAttention(Attention):
    """Attention as the exported graph computes it: ``softmax(q k^T / sqrt(d) + mask) v`` with
    the boolean key mask turned into an additive one (0 / the dtype's lowest value) once per
    layer. The same values as ``F.scaled_dot_product_attention`` with the boolean mask (rows
    always have a real key: [CLS]), but the exporter's decomposition of SDPA with a boolean
    mask adds a ``Where`` on the scores and an ``IsNaN`` + ``Where`` guard for fully masked
    rows per layer, and slices the fused tensor around them: 24 + 24 + 24 nodes and three
    passes over every score matrix in MobileBERT. Swapped in by class on the export copy."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None,
               p: float) -> torch.Tensor:
        scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
        if key_mask is not None:
            low = torch.finfo(scores.dtype).min
            scores = scores + torch.zeros(key_mask.shape, dtype=scores.dtype).masked_fill(~key_mask, low)
        return scores.softmax(dim=-1) @ v


def _export_attention(model: nn.Module) -> int:
    """Give every :class:`~leanbert.models.attention.Attention` of ``model`` (a private copy)
    the export formula (:class:`AdditiveMaskAttention`); returns how many."""
    n = 0
    for module in model.modules():
        if type(module) is Attention:
            module.__class__ = AdditiveMaskAttention
            n += 1
    return n


def _ort_rewrite(graph_model: nn.Module) -> dict[str, Any] | None:
    """A copy of the export model rewritten for ONNX Runtime (:mod:`leanbert.deploy.ort_graph`),
    its translation table and what was rewritten; None when nothing applies."""
    from leanbert.deploy import ort_graph

    rewritten = copy.deepcopy(graph_model)
    composed = ort_graph.compose_shared_qk(rewritten)
    attention = ort_graph.use_ort_attention(rewritten)
    stacked = ort_graph.fuse_block_input_products(rewritten)
    if not (composed or attention):
        return None
    rewrites = []
    if attention:
        unpadded = sum(isinstance(m, ort_graph.OrtMobileBertAttention) for m in rewritten.modules())
        rewrites.append(f"attention as com.microsoft.MultiHeadAttention ({attention} layers"
                        + (f"; {unpadded} without the padding mask when no key is padded: ORT's flash-attention "
                           "kernel" if unpadded else "") + ")")
    if composed:
        rewrites.append(f"shared Q/K bottleneck composed into the Q/K projection ({composed} layers)")
    if stacked:
        rewrites.append(f"the block input's three products (input bottleneck, Q/K, values) as one ({stacked} layers)")
    return {"model": rewritten, "translation": ort_graph.translation_table() if attention else None,
            "rewrites": rewrites}


def output_names(model: nn.Module) -> list[str]:
    """The graph outputs of ``model``'s export: one per head output (the table in the module
    docstring), or the hidden states when it has no head."""
    names = [name for head in model.heads for name in _HEAD_OUTPUTS.get(head, ())]
    if names:
        return names
    return ["last_hidden_state", *(["pooled_output"] if model.encoder.pooler is not None else [])]


class _Graph(nn.Module):
    """``(input_ids, attention_mask, token_type_ids) -> tuple(outputs)``: what is exported."""

    def __init__(self, model: nn.Module, outputs: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(input_ids, attention_mask, token_type_ids)
        return tuple(getattr(out, name) for name in self.outputs)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter logs progress and missing-torchvision warnings; keep the CLI clean."""
    # (the root logger too: onnxruntime.quantization logs its advice there)
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", None)]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with contextlib.redirect_stdout(io.StringIO()):  # its progress lines
                yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _example_inputs(cfg: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.full((2, 16), min(1000, cfg.vocab_size - 1), dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0
    return ids.masked_fill(mask == 0, cfg.pad_token_id), mask, torch.zeros_like(ids)


def _export_graph(model: nn.Module, path: Path, outputs: Sequence[str], opset: int,
                  translation: dict[Any, Any] | None = None) -> None:
    """``torch.onnx.export(dynamo=True)`` with dynamic batch and sequence axes (``translation``:
    its ``custom_translation_table``, for :mod:`leanbert.deploy.ort_graph`'s custom op)."""
    graph = _Graph(model, outputs).eval()
    batch = torch.export.Dim("batch")
    seq = torch.export.Dim("sequence", max=model.config.max_position_embeddings)
    dynamic = {name: {0: batch, 1: seq} for name in INPUT_NAMES}
    external = _parameter_bytes(model) > 1.8 * 2**30  # protobuf's 2 GiB limit
    with _quiet_exporter():
        program = torch.onnx.export(
            graph, _example_inputs(model.config), None, dynamo=True, dynamic_shapes=dynamic,
            input_names=list(INPUT_NAMES), output_names=list(outputs), opset_version=opset, verbose=False,
            custom_translation_table=translation,
        )
        program.save(str(path), external_data=external)


def _parameter_bytes(model: nn.Module) -> int:
    seen = {id(p): p for p in [*model.parameters(), *model.buffers()]}
    return sum(p.numel() * p.element_size() for p in seen.values())


def _transformer_optimize(path: Path, cfg: Any) -> list[str]:
    """ORT's offline transformer fusions (model_type ``bert``) in place; returns what fused."""
    from onnxruntime.transformers.optimizer import optimize_model

    heads = cfg.num_heads
    hidden = cfg.hidden_size if cfg.model_type == "bert" else cfg.intra_bottleneck_size
    with _quiet_exporter():
        opt = optimize_model(str(path), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
        opt.save_model_to_file(str(path))
    return [f"{k} x{v}" for k, v in opt.get_fused_operator_statistics().items() if v]


# --------------------------------------------------------------------------------------
# Parity probes
# --------------------------------------------------------------------------------------


def probe_batches(cfg: Any, max_length: int) -> list[dict[str, np.ndarray]]:
    """Deterministic padded batches for the parity check: (1, 8), (2, 33) and
    (4, max_length), rows padded to different lengths, two segments."""
    g = torch.Generator().manual_seed(0)
    low = min(1000, cfg.vocab_size // 2)
    out = []
    for batch, length in ((1, 8), (2, min(33, max_length)), (4, max_length)):
        ids = torch.randint(low, cfg.vocab_size, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        for row in range(1, batch):
            mask[row, max(2, length * (batch - row) // batch):] = 0
        types = torch.zeros_like(ids)
        types[:, length // 2:] = 1
        out.append({"input_ids": ids.masked_fill(mask == 0, cfg.pad_token_id).numpy(),
                    "attention_mask": mask.numpy(), "token_type_ids": (types * mask).numpy()})
    return out


@torch.no_grad()
def _torch_outputs(model: nn.Module, feed: dict[str, np.ndarray], outputs: Sequence[str]) -> list[np.ndarray]:
    out = model(*(torch.from_numpy(feed[n]) for n in INPUT_NAMES))
    return [getattr(out, name).float().numpy() for name in outputs]


def _session(path: Path, threads: int | None = None, optimized_path: Path | None = None):
    """A CPU InferenceSession (``threads``: intra-op threads, default ORT's: one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if threads == 1:  # nothing to wait for: no spinning worker threads
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if optimized_path is not None:
        opts.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _checked_parity(path: Path, reference: list[list[np.ndarray]], probes: list[dict[str, np.ndarray]],
                    outputs: Sequence[str], what: str, fix: str = "") -> tuple[list[list[np.ndarray]], dict[str, Any]]:
    """The graph at ``path`` run on the probe batches (one thread: they are small) and its
    differences from the PyTorch ``reference``; :class:`ParityError` beyond the tolerance."""
    session = _session(path, threads=1)
    got = [session.run(outputs, p) for p in probes]
    parity = _differences(reference, got)
    if not parity["within_tolerance"]:
        raise ParityError(
            f"{what} differs from PyTorch by up to {parity['max_abs_diff']:.3g} (tolerance atol {PARITY_ATOL} + "
            f"rtol {PARITY_RTOL}); {fix}please report this with the checkpoint's config.json")
    return got, parity


def _differences(reference: list[list[np.ndarray]], got: list[list[np.ndarray]]) -> dict[str, float]:
    diff = max(float(np.abs(r - g).max()) for rs, gs in zip(reference, got, strict=True)
               for r, g in zip(rs, gs, strict=True))
    mean = float(np.mean([np.abs(r - g).mean() for rs, gs in zip(reference, got, strict=True)
                          for r, g in zip(rs, gs, strict=True)]))
    scale = max(float(np.abs(r).max()) for rs in reference for r in rs)
    close = all(np.allclose(g, r, atol=PARITY_ATOL, rtol=PARITY_RTOL) for rs, gs in zip(reference, got, strict=True)
                for r, g in zip(rs, gs, strict=True))
    return {"max_abs_diff": diff, "mean_abs_diff": mean, "max_abs_reference": scale, "within_tolerance": close}


# --------------------------------------------------------------------------------------
# Calibration data (static quantization)
# --------------------------------------------------------------------------------------

CALIBRATION_FORMATS = (
    "a GLUE task directory (its train.tsv, else dev.tsv), a GLUE .tsv file of the model's task, "
    "a SQuAD .json file, or a text file with one example per line (a tab separates a sentence pair)"
)


def _glue_task_for(path: Path, task: str | None):
    """The GLUE task of ``path``: the checkpoint's task, else the directory's GLUE name."""
    from leanbert.tasks.registry import TASKS, get_task

    if task is not None and get_task(task).is_glue:
        return get_task(task)
    names = {path.name.lower(), path.parent.name.lower()}
    for spec in TASKS.values():
        if spec.is_glue and spec.glue_dir.lower() in names:
            return spec
    return None


def encode_texts(tokenizer: Any, texts: Sequence[tuple[str, ...]], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(token ids, token types) of ``[CLS] a [SEP] (b [SEP])`` per text or pair, truncated
    longest-first to ``max_length``: fine-tuning's encoding (``tasks.finetune.encode_glue``, which
    this module cannot import: fine-tuning imports the deploy package; a test keeps them equal)."""
    from leanbert.tasks.squad import plain_tokenizer

    tok = plain_tokenizer(tokenizer)
    tok.enable_truncation(max_length, strategy="longest_first")
    encoded = tok.encode_batch([t[0] if len(t) == 1 else (t[0], t[1]) for t in texts], add_special_tokens=True)
    return [(e.ids, e.type_ids) for e in encoded]


def pad_batch(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int = 0) -> dict[str, np.ndarray]:
    """int64 model inputs for (ids, types) rows, padded to the longest (mask 1 on real tokens)."""
    width = max(len(ids) for ids, _ in rows)
    out = {"input_ids": np.full((len(rows), width), pad_id, dtype=np.int64),
           "attention_mask": np.zeros((len(rows), width), dtype=np.int64),
           "token_type_ids": np.zeros((len(rows), width), dtype=np.int64)}
    for i, (ids, types) in enumerate(rows):
        out["input_ids"][i, :len(ids)] = ids
        out["attention_mask"][i, :len(ids)] = 1
        out["token_type_ids"][i, :len(types)] = types
    return out


def check_calibration_source(source: str | Path) -> Path:
    """``source`` as a path that exists and is not empty (before any work is done)."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"calibration data not found: {path}; give {CALIBRATION_FORMATS}")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"calibration data {path} is empty; give {CALIBRATION_FORMATS}")
    if path.is_dir() and not any(path.iterdir()):
        raise DataError(f"calibration directory {path} is empty; give {CALIBRATION_FORMATS}")
    return path


def calibration_batches(
    source: str | Path, tokenizer: Any, *, task: str | None = None, max_length: int = 128,
    limit: int = 128, batch_size: int = CALIBRATION_BATCH, doc_stride: int = 128, max_query_length: int = 64,
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Tokenised calibration batches from real task text, and a description for the card.

    ``source`` is one of :data:`CALIBRATION_FORMATS`; texts are tokenised exactly as for
    fine-tuning (``[CLS] a [SEP] (b [SEP])``, truncated longest-first to ``max_length``; SQuAD:
    question + context windows). The first ``limit`` examples are used (a training split where
    there is one, so that the dev set stays unseen), batched by length.
    """
    from leanbert.tasks import glue

    path = check_calibration_source(source)
    rows: list[tuple[list[int], list[int]]]
    if path.is_dir() or path.suffix.lower() == ".tsv":
        spec = _glue_task_for(path, task)
        if spec is None:
            raise DataError(
                f"cannot tell which GLUE task {path} holds (the checkpoint records none and the name is not "
                f"a GLUE task's); give a GLUE task directory such as glue/SST-2, or a text file"
            )
        if path.is_dir():
            split = "train" if (path / spec.split("train").file).is_file() else next(iter(spec.eval_splits))
        else:
            split = path.stem if path.stem in spec.splits else "train"
        data = glue.read_glue(spec, path, split, limit=limit)
        rows = encode_texts(tokenizer, [ex.texts for ex in data.examples], max_length)
        what = f"{spec.name} {split} ({data.path.name})"
    elif path.suffix.lower() == ".json":
        from leanbert.tasks import squad
        from leanbert.tasks.registry import get_task

        spec = get_task(task) if task is not None and get_task(task).kind == "span_qa" else get_task("squad1")
        examples = squad.read_squad(path, spec).examples[:limit]
        if not examples:
            raise DataError(f"calibration data {path} holds no SQuAD questions; give {CALIBRATION_FORMATS}")
        feats = squad.make_features(examples, tokenizer, max_seq_length=max_length, doc_stride=doc_stride,
                                    max_query_length=max_query_length)[:limit]
        rows = [(f.input_ids, f.token_type_ids) for f in feats]
        what = f"SQuAD questions ({path.name})"
    else:
        try:
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()][:limit]
        except UnicodeDecodeError as e:
            raise DataError(f"calibration data {path} is not UTF-8 text (byte {e.start})") from None
        if not lines:
            raise DataError(f"calibration data {path} holds no text (only blank lines); give {CALIBRATION_FORMATS}")
        rows = encode_texts(tokenizer, [tuple(ln.split("\t", 1)) for ln in lines], max_length)
        what = f"text lines ({path.name})"
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches = [pad_batch([rows[i] for i in order[start:start + batch_size]])
               for start in range(0, len(order), batch_size)]
    return batches, {"source": str(path), "what": what, "examples": len(rows), "max_length": max_length,
                     "method": "MinMax"}


def _reader(batches: list[dict[str, np.ndarray]]):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = iter(batches)

    return Reader()


# --------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------


def _quantize(fp32: Path, out: Path, mode: str, batches: list[dict[str, np.ndarray]] | None,
              external: bool, per_channel: bool = False) -> dict[str, Any]:
    """int8 ``out`` from ``fp32`` with ORT's quantiser (see the module docstring)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    # No quant_pre_process: measured on the MiniLM export it quantises the same 26 MatMuls to
    # bit-identical outputs at the same speed (dynamic and static), and costs seconds.
    common = {"op_types_to_quantize": list(QUANTIZED_OPS), "per_channel": per_channel, "reduce_range": False,
              "weight_type": QuantType.QInt8, "use_external_data_format": external,
              "extra_options": {"MatMulConstBOnly": True}}
    with _quiet_exporter():
        if mode == "dynamic":
            quantize_dynamic(str(fp32), str(out), **common)
            activations = "uint8, per tensor, range measured at run time (DynamicQuantizeLinear)"
        else:
            # MinMax keeps only per-batch minima and maxima (ReduceMin/ReduceMax outputs), so
            # memory stays small without CalibMaxIntermediateOutputs, which in onnxruntime 1.32
            # drops the batches it flushes.
            quantize_static(str(fp32), str(out), _reader(batches or []), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, **common)
            activations = "uint8, per tensor, range calibrated (MinMax) on the calibration data (QDQ)"
    weights = "int8, per output channel, symmetric" if per_channel else "int8, per tensor, symmetric"
    return {"weights": weights, "per_channel": per_channel, "activations": activations,
            "ops": "linear layers (MatMul with a constant weight) and embedding tables (Gather)",
            "stays_fp32": "attention products, softmax, norms, GELU"}


# --------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------


def _owned(name: str) -> bool:
    from leanbert.data.tokenizer import TOKENIZER_FILES

    return name in {FP32_FILE, INT8_FILE, f"{FP32_FILE}.data", f"{INT8_FILE}.data", CARD_FILE, *TOKENIZER_FILES}


def _preset_of(cfg: Any) -> str | None:
    """The model preset whose architecture ``cfg`` has (heads and task outputs aside)."""
    from leanbert.models import list_model_presets, model_preset

    skip = {"heads", "num_labels", "problem_type", "classifier_dropout"}
    mine = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in skip}
    for name in list_model_presets():
        try:
            other = model_preset(name).model_dump(mode="json")
        except LeanbertError:
            continue
        if {k: v for k, v in other.items() if k not in skip} == mine:
            return name
    return None


def _load(model_or_dir: Any, heads: Sequence[str] | None):
    from leanbert.checkpoint import from_pretrained, read_metadata, source_dir

    if isinstance(model_or_dir, (str, Path)):
        model = from_pretrained(model_or_dir, heads=None if heads is None else list(heads))
        return model, Path(model_or_dir), read_metadata(model_or_dir)
    model = model_or_dir
    if heads is not None and list(heads) != model.heads:
        raise ConfigError("heads= selects heads when loading a checkpoint directory; pass the directory, "
                          "or build the model with the heads to export")
    src = source_dir(model)
    return model, src, (read_metadata(src) if src is not None else {})


def _file_info(directory: Path, name: str) -> dict[str, Any]:
    size = (directory / name).stat().st_size
    data = directory / f"{name}.data"
    if data.is_file():
        size += data.stat().st_size
    return {"file": name, "bytes": size, "megabytes": round(size / 2**20, 2)}


def export_onnx(
    model_or_checkpoint_dir: Any,
    output_dir: str | Path,
    *,
    quantize: QuantizeMode = "none",
    calibration: str | Path | None = None,
    opset: int = DEFAULT_OPSET,
    max_length: int | None = None,
    heads: Sequence[str] | None = None,
    calibration_size: int = 128,
    ort_optimize: bool = False,
    per_channel: bool | None = None,
    int8_graph: Int8Graph = "ort",
    overwrite: bool = False,
) -> Path:
    """Export a leanbert model (or a checkpoint directory, leanbert or transformers) to
    ``output_dir`` as described in the module docstring; returns ``output_dir``.

    quantize: ``none`` (fp32 only), ``dynamic`` or ``static`` (needs ``calibration``, one of
        :data:`CALIBRATION_FORMATS`; ``calibration_size`` examples are used).
    max_length: the longest probe / calibration sequence and the sequence length recorded for
        evaluation (default: the fine-tuning ``max_seq_length`` recorded in the checkpoint, else
        128); the graph accepts any length up to ``max_position_embeddings``.
    heads: the heads to export (checkpoint directories only; default all it has, [] for none).
    ort_optimize: run ORT's offline transformer optimizer on the fp32 graph (BERT only; adds
        ORT-only contrib ops, see the module docstring).
    int8_graph: ``ort`` (default): the int8 file is quantised from a graph rewritten for ONNX
        Runtime (:mod:`leanbert.deploy.ort_graph`: fused ``com.microsoft.MultiHeadAttention``,
        MobileBERT's Q/K bottleneck composed, one product of the block input), checked against PyTorch like the fp32 one; it then
        runs on ONNX Runtime only. ``portable``: quantise ``model.onnx`` itself (standard ops).
        ``model.onnx`` is standard ONNX either way.
    per_channel: int8 weights with one scale per output column instead of one per matrix
        (closer to fp32; see the module docstring for its cost). Default (None): per channel for
        a checkpoint fine-tuned with quantization-aware training (its weights learned per-channel
        rounding, :mod:`leanbert.deploy.qat`), per tensor otherwise.
    The fp32 graph is checked against PyTorch on padded probe batches before anything is
    written (:data:`PARITY_ATOL`, :data:`PARITY_RTOL`); the output directory is written
    atomically and replaces only a previous export unless ``overwrite``.
    """
    if quantize not in QUANTIZE_MODES:
        raise ConfigError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, not '{quantize}'")
    if int8_graph not in INT8_GRAPHS:
        raise ConfigError(f"int8_graph must be one of {', '.join(INT8_GRAPHS)}, not '{int8_graph}'")
    if calibration is not None and quantize != "static":
        raise ConfigError("calibration data is only used by static quantization; add --quantize static "
                          "or leave out --calibration")
    if per_channel is True and quantize == "none":
        raise ConfigError("per-channel weights are an int8 option; add --quantize dynamic (or static) "
                          "or leave out --per-channel")
    if quantize == "static" and calibration is None:
        raise ConfigError(f"--quantize static needs --calibration DATA: {CALIBRATION_FORMATS}")
    if calibration is not None:
        check_calibration_source(calibration)
    require_onnx(exporter=True)

    from leanbert.checkpoint import copy_tokenizer_files
    from leanbert.io import atomic_directory, check_output_dir
    from leanbert.speedups import plain_modules

    check_output_dir(output_dir, "ONNX export output")
    model, src, metadata = _load(model_or_checkpoint_dir, heads)
    cfg = model.config
    recorded = metadata.get("finetune", {}) if isinstance(metadata.get("finetune"), dict) else {}
    max_length = int(max_length or recorded.get("max_seq_length") or min(128, cfg.max_position_embeddings))
    if not 2 <= max_length <= cfg.max_position_embeddings:
        raise ConfigError(f"max_length {max_length} must be between 2 and the model's max_position_embeddings "
                          f"{cfg.max_position_embeddings}")
    opset_max = _max_opset()
    if not 18 <= opset <= opset_max:
        raise ConfigError(f"opset {opset} is not supported by this export; choose 18 to {opset_max}")
    batches, calib_info = None, None
    if quantize == "static":
        from leanbert.data.tokenizer import has_tokenizer, load_tokenizer

        if src is None or not has_tokenizer(src):
            raise DataError("static quantization tokenises the calibration text with the checkpoint's tokenizer, "
                            "but this model has none; export from a checkpoint directory that holds one")
        batches, calib_info = calibration_batches(
            calibration, load_tokenizer(src), task=metadata.get("task"), max_length=max_length,
            limit=calibration_size, doc_stride=int(recorded.get("doc_stride", 128)),
            max_query_length=int(recorded.get("max_query_length", 64)))
    outputs = output_names(model)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    try:
        with plain_modules(model):
            reference_model = copy.deepcopy(model).float().cpu()  # the export runs on the CPU in fp32
        # A quantization-aware-trained checkpoint keeps its NoNorms: the weights it learned to round.
        fold = not recorded.get("qat", False)
        if per_channel is None:
            per_channel = bool(recorded.get("qat", False))
        graph_model, fold_counts = (_fold_mobilebert(reference_model, propagate=True) if fold
                                    else (reference_model, None))
        folded = graph_model is not reference_model
        external = _parameter_bytes(graph_model) > 1.8 * 2**30
        probes = probe_batches(cfg, max_length)
        reference = [_torch_outputs(reference_model, p, outputs) for p in probes]
        _export_attention(graph_model)  # after the reference outputs: it may be the same copy
        output_dir = Path(output_dir)
        with atomic_directory(output_dir, owned=_owned, overwrite=overwrite) as tmp:
            _export_graph(graph_model, tmp / FP32_FILE, outputs, opset)
            fused = _transformer_optimize(tmp / FP32_FILE, cfg) if ort_optimize and cfg.model_type == "bert" else []
            got, parity = _checked_parity(tmp / FP32_FILE, reference, probes, outputs, "the ONNX graph")
            files = {"fp32": _file_info(tmp, FP32_FILE)}
            quant: dict[str, Any] = {"mode": quantize}
            if quantize != "none":
                source = tmp / FP32_FILE
                rewrite = _ort_rewrite(graph_model) if int8_graph == "ort" and not fused else None
                if rewrite is not None:
                    source = tmp / _ORT_SOURCE_FILE
                    _export_graph(rewrite["model"], source, outputs, opset, translation=rewrite["translation"])
                    _, ort_parity = _checked_parity(source, reference, probes, outputs,
                                                    "the ONNX Runtime graph for int8",
                                                    "export with --int8-graph portable, and ")
                    quant["graph"] = {"kind": "ort", "runs_on": "ONNX Runtime only (com.microsoft contrib ops)",
                                      "rewrites": rewrite["rewrites"],
                                      "fp32_parity_before_quantization": {
                                          k: v for k, v in ort_parity.items() if k != "within_tolerance"}}
                else:
                    quant["graph"] = {"kind": "portable", "runs_on": "any ONNX runtime with opset "
                                      f"{opset} (standard ops)", "rewrites": [],
                                      "note": ("the fp32 graph was optimised by onnxruntime.transformers (--ort-optimize)"
                                               if fused else "model.onnx quantised as it is")}
                quant.update(_quantize(source, tmp / INT8_FILE, quantize, batches, external,
                                       per_channel=per_channel))
                for leftover in (tmp / _ORT_SOURCE_FILE, tmp / f"{_ORT_SOURCE_FILE}.data"):
                    leftover.unlink(missing_ok=True)
                if calib_info is not None:
                    quant["calibration"] = calib_info
                int8 = _session(tmp / INT8_FILE, threads=1)
                quant["difference_from_fp32"] = {
                    k: v for k, v in _differences(got, [int8.run(outputs, p) for p in probes]).items()
                    if k != "within_tolerance"}
                files["int8"] = _file_info(tmp, INT8_FILE)
            tokenizer_files = copy_tokenizer_files(src, tmp)
            card = _card(model, src, metadata, outputs, opset, max_length, files, quant, parity, fused,
                         tokenizer_files, time.perf_counter() - started, folded=folded, fold_counts=fold_counts)
            (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    finally:
        model.train(was_training)
    return output_dir


def _max_opset() -> int:
    import onnx

    return int(onnx.defs.onnx_opset_version())


def _card(model: nn.Module, src: Path | None, metadata: dict[str, Any], outputs: list[str], opset: int,
          max_length: int, files: dict[str, Any], quant: dict[str, Any], parity: dict[str, Any],
          fused: list[str], tokenizer_files: list[str], seconds: float, folded: bool,
          fold_counts: dict[str, int] | None = None) -> dict[str, Any]:
    import onnx
    import onnxruntime

    cfg = model.config
    labels = metadata.get("labels") if isinstance(metadata.get("labels"), list) else None
    transforms = []
    if folded:
        transforms.append("NoNorm folded into the preceding linear layers (MobileBERT Sec. 3.3)")
    if fold_counts and fold_counts["residual_norms_propagated"]:
        transforms.append(f"residual-norm scales propagated to the next layers: "
                          f"{fold_counts['residual_norms_propagated']} norms left only an Add, "
                          f"{fold_counts['residual_norms_multiplied']} a Mul + Add")
    if fused:
        transforms.append("onnxruntime.transformers.optimizer (bert): " + ", ".join(fused))
    recorded = metadata.get("finetune", {}) if isinstance(metadata.get("finetune"), dict) else {}
    keep = ("max_seq_length", "doc_stride", "max_query_length", "n_best_size", "max_answer_length",
            "null_score_diff_threshold", "eval_batch_size")
    return {
        "format": "leanbert-onnx",
        "card_version": CARD_FORMAT,
        "model": {"family": cfg.model_type, "preset": _preset_of(cfg), "parameters": model.num_parameters(),
                  "config": cfg.model_dump(mode="json")},
        "source": None if src is None else str(src),
        "heads": model.heads,
        "task": metadata.get("task"),
        "problem_type": cfg.problem_type if "classifier" in model.heads else None,
        "labels": labels,
        "id2label": None if labels is None else {str(i): label for i, label in enumerate(labels)},
        "finetune": {k: recorded[k] for k in keep if k in recorded} | {"max_seq_length": max_length},
        "metadata": metadata,  # the checkpoint's, as fine-tuning recorded it (own-files tasks need it)
        "inputs": {name: {"dtype": "int64", "shape": ["batch", "sequence"]} for name in INPUT_NAMES},
        "outputs": outputs,
        "max_sequence": cfg.max_position_embeddings,
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=True)",
        "graph_transforms": transforms,
        "quantization": quant,
        "files": files,
        "default": files["int8"]["file"] if "int8" in files else files["fp32"]["file"],
        "tokenizer_files": tokenizer_files,
        "parity": {"reference": "PyTorch fp32, plain modules, eval mode",
                   "probes": "batches (1, 8), (2, 33), (4, max_length), padded rows, two segments",
                   "atol": PARITY_ATOL, "rtol": PARITY_RTOL, **parity},
        "versions": {"leanbert": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "export_seconds": round(seconds, 2),
    }


# --------------------------------------------------------------------------------------
# Running an export
# --------------------------------------------------------------------------------------


def read_card(path: str | Path) -> dict[str, Any]:
    """The ``card.json`` of an ONNX export directory (one line naming the fix if it is not one)."""
    p = Path(path)
    card_path = p / CARD_FILE
    if not p.exists():
        raise DataError(f"ONNX export not found: {p}; give a directory written by 'leanbert export --format onnx'")
    if not card_path.is_file():
        raise DataError(f"{p} is not an ONNX export (no {CARD_FILE}); give a directory written by "
                        "'leanbert export --format onnx', or a .onnx file inside one")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{card_path} is not valid JSON; export the model again") from None
    if not isinstance(card, dict) or card.get("format") != "leanbert-onnx":
        raise DataError(f"{card_path} is not a leanbert ONNX card; export the model again")
    return card


class OnnxModel:
    """An exported model in an ONNX Runtime session, called like a leanbert model.

    ``OnnxModel(dir)`` runs the card's default file (int8 when the export has one, else fp32);
    ``variant="fp32"`` / ``"int8"`` picks one, and a ``.onnx`` file path runs that file.
    ``model(input_ids, attention_mask, token_type_ids)`` (or ``model(**batch)`` with the batch
    dicts of :func:`leanbert.tasks.finetune.collate`; torch tensors or numpy arrays) returns a
    :class:`~leanbert.models.base.ModelOutput` whose fields are the graph's outputs as CPU
    torch tensors; :meth:`run` is the numpy-level call without conversions (benchmarks).
    """

    def __init__(self, path: str | Path, *, variant: Literal["auto", "fp32", "int8"] = "auto",
                 threads: int | None = None) -> None:
        require_onnx()
        p = Path(path)
        if p.suffix == ".onnx":
            if not p.is_file():
                raise DataError(f"ONNX file not found: {p}")
            directory, file = p.parent, p.name
            self.card = read_card(directory) if (directory / CARD_FILE).is_file() else {}
        else:
            self.card = read_card(p)
            directory = p
            files = self.card.get("files", {})
            if variant == "auto":
                file = self.card.get("default", FP32_FILE)
            elif variant in files:
                file = files[variant]["file"]
            else:
                have = ", ".join(files) or "none"
                raise ConfigError(f"{p} has no {variant} model (it has: {have}); export it with "
                                  f"--quantize dynamic or static, or choose another variant")
            if not (directory / file).is_file():
                raise DataError(f"{directory / file} is missing; the export is incomplete: export it again")
        self.directory, self.file = directory, directory / file
        self.variant = "int8" if ".int8." in file else "fp32"
        self.session = _session(self.file, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def file_bytes(self) -> int:
        data = self.file.with_name(self.file.name + ".data")
        return self.file.stat().st_size + (data.stat().st_size if data.is_file() else 0)

    def eval(self) -> OnnxModel:  # the evaluation loops call model.eval()
        return self

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Graph outputs by name for int64 numpy inputs (``token_type_ids`` / ``attention_mask``
        default to zeros / ones)."""
        ids = feed["input_ids"]
        full = {"input_ids": ids,
                "attention_mask": feed.get("attention_mask", np.ones_like(ids)),
                "token_type_ids": feed.get("token_type_ids", np.zeros_like(ids))}
        values = self.session.run(self.output_names, {n: np.ascontiguousarray(full[n], dtype=np.int64)
                                                      for n in self.input_names})
        return dict(zip(self.output_names, values, strict=True))

    def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
        from leanbert.models.base import ModelOutput

        def as_numpy(x: Any) -> np.ndarray | None:
            if x is None:
                return None
            return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)

        feed = {"input_ids": as_numpy(input_ids)}
        if attention_mask is not None:
            feed["attention_mask"] = as_numpy(attention_mask)
        if token_type_ids is not None:
            feed["token_type_ids"] = as_numpy(token_type_ids)
        values = {k: torch.from_numpy(v) for k, v in self.run(feed).items()}
        return ModelOutput(last_hidden_state=values.pop("last_hidden_state", None), **values)

    __call__ = forward

    def __repr__(self) -> str:
        return f"OnnxModel({self.file}, {self.variant}, outputs={self.output_names})"
