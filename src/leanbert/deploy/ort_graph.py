"""The int8 graph for ONNX Runtime: fused attention and fewer products (an export-time rewrite).

Method card
-----------
What: the module rewrites that make ``model.int8.onnx`` faster on ONNX Runtime than a
standard-ops graph, applied to the private export copy of the model (plain modules, NoNorm
folded, :func:`leanbert.deploy.fold.fold_mobilebert_no_norm`) and never to the user's model:

- :func:`use_ort_attention`: each attention core (BERT's and MobileBERT's self-attention in
  eval mode, no token dropping, padded keys masked the transformers way) becomes one
  ``com.microsoft.MultiHeadAttention`` node (ORT's CPU kernel: scaled scores, additive key
  padding mask of -10000, softmax, the value product, per head) instead of ~10 written-out
  nodes per layer (reshapes, transposes, two products, the mask add, softmax). Traced through a
  :func:`torch.library.custom_op` (``leanbert::ort_multi_head_attention``) that
  ``torch.onnx.export(custom_translation_table=...)`` writes as that contrib op. In MobileBERT
  an ONNX ``If`` per layer passes no padding mask when no key of the batch is padded (every
  batch-1 call without padding): ORT's CPU ``MultiHeadAttention`` runs its flash-attention kernel
  only without a mask (onnxruntime 1.32, ``contrib_ops/cpu/bert/multihead_attention.cc``), 4%
  faster end to end here (1.23x -> 1.28x against optimum, same run); a padded batch takes the
  masked branch. (Not for BERT: torch.onnx 2.13 fails to translate ``torch.cond`` in its graph,
  "no ONNX function for aten.sym_stride".) A model with
  the MobileBERT authors' mask (padded keys' scores set to exactly -6, ``padded_key_score``)
  keeps the standard attention: ORT's mask is additive, not a replacement.
- :func:`compose_shared_qk`: MobileBERT's shared query/key bottleneck (Sec. 3.1,
  ``key_query_shared_bottleneck``: ``[q; k] = W_qk (W_b x + b_b) + b_qk`` after its NoNorm is
  folded away) becomes one product ``(W_qk W_b) x + (W_qk b_b + b_qk)`` of the block input, so the
  block input is quantised once for the input bottleneck, Q/K and values (ORT shares one
  ``DynamicQuantizeLinear`` among them) and the 128-wide Q/K bottleneck output is never
  quantised. +4% multiply-adds per layer (512 x 256 instead of 512 x 128 + 128 x 256), one
  fewer quantise + product per layer. Exact in real arithmetic; the composed weight is
  quantised as one matrix.
- :func:`fuse_block_input_products`: the three products that then read the block input (the
  input bottleneck, the composed Q/K projection, the values) become one ``512 -> 4 x 128``
  product (:class:`OrtMobileBertLayer`; output columns ``[bottleneck | q | k | v]``), sliced
  after it: one int8 product instead of a shared quantise and three products per layer (the
  same multiply-adds). The three weights then share one int8 scale: on the fine-tuned
  MobileBERT-shaped checkpoints of :mod:`leanbert.deploy.onnx` the int8 dev scores are the same
  with and without it (SST-2 70.3 and 71.7, MRPC F1 81.6).

Why: at batch 1 the int8 products are small (128 tokens x 128-512 features), so per-node work
(quantising each product's input, reading and writing activations) is a large share of the
time. Measured on MobileBERT (24 layers, batch 1 x 128, one thread, 80 interleaved calls,
paired median ratio against optimum's int8 export of the same weights, quiet 2-core Xeon; two
runs): NoNorm fold only 1.09-1.13x; + scale propagation within blocks
(:func:`~leanbert.deploy.fold.fold_mobilebert_no_norm`) and fused attention 1.18-1.19x; + Q/K
composition 1.21x, or + the scale carried across blocks 1.21x; all of it 1.22-1.23x; + the
unpadded flash-attention branch 1.28x; one run later, with one product of the block input,
1.251x -> 1.267x (same run; a loaded host gives about 1.19x for both).

Tried and not adopted (same measurement): ORT's CPU ``MultiHeadAttention`` runs flash attention
neither with an ``attention_bias`` input nor with a head size other than 32 (a padding feature
appended to each head, to drop the ``If``: 1.4-1.9x slower attention), and has no CPU kernel
for packed Q/K/V; the ``If`` itself costs about 3% (its branches inlined for timing: 1.224x
against 1.195x); standard ``MatMul`` + ``Softmax`` attention is 12% slower than the flash
kernel and 15% faster than the masked one.

Cost: ``model.int8.onnx`` then holds ``com.microsoft`` contrib ops and runs on ONNX Runtime
only (the int8 file's ``DynamicQuantizeLinear`` + ``MatMulInteger`` are standard ONNX, but
fused and fast only on ORT anyway). ``model.onnx`` (fp32) keeps standard ops; export with
``int8_graph="portable"`` (``--int8-graph portable``) for an int8 file of standard ops.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from leanbert.deploy.fold import FoldedNoNorm
from leanbert.models.attention import explicit_attention
from leanbert.models.base import LayerOutput
from leanbert.models.bert import BertSelfAttention
from leanbert.models.mobilebert import MobileBertAttention, MobileBertLayer

__all__ = ["ort_multi_head_attention", "use_ort_attention", "compose_shared_qk", "fuse_block_input_products",
           "translation_table", "MASK_FILTER_VALUE"]

MASK_FILTER_VALUE = -10000.0  # ORT MultiHeadAttention's default: added to padded keys' scores


@torch.library.custom_op("leanbert::ort_multi_head_attention", mutates_args=())
def ort_multi_head_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor,
                             num_heads: int) -> torch.Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` per head on ``q, k, v [B, S, A]`` with a boolean
    ``key_mask [B, 1, 1, S]`` (True = attend): what ORT's ``MultiHeadAttention`` computes
    (its -10000 on padded keys and the dtype's lowest value give the same softmax)."""
    b, s, width = q.shape

    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(b, x.shape[1], num_heads, width // num_heads).transpose(1, 2)

    ctx, _, _ = explicit_attention(heads(q), heads(k), heads(v), key_mask, 0.0)
    return ctx.transpose(1, 2).reshape(b, s, width)


@ort_multi_head_attention.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor, num_heads: int) -> torch.Tensor:
    return torch.empty_like(q)


@torch.library.custom_op("leanbert::ort_multi_head_attention_unmasked", mutates_args=())
def ort_multi_head_attention_unmasked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    """:func:`ort_multi_head_attention` when no key is padded (ORT's flash-attention kernel)."""
    mask = torch.ones(q.shape[0], 1, 1, k.shape[1], dtype=torch.bool, device=q.device)
    return ort_multi_head_attention(q, k, v, mask, num_heads)


@ort_multi_head_attention_unmasked.register_fake
def _(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int) -> torch.Tensor:
    return torch.empty_like(q)


Split = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _mha(module: Any, products: tuple[torch.Tensor, ...], split: Split, key_mask: torch.Tensor,
         unpadded_branch: bool = True) -> torch.Tensor:
    """Attention through ORT's ``MultiHeadAttention`` on ``split(*products) = (q, k, v)``:
    without the padding mask when the batch has no padded key (an ONNX ``If``: ORT then runs its
    flash-attention kernel, which it skips whenever a mask is given), with it otherwise. (The
    split happens inside the branches: ``torch.cond``'s operands must not alias each other.)
    ``unpadded_branch=False``: always with the mask."""
    heads = module.num_heads
    if not unpadded_branch:
        return torch.ops.leanbert.ort_multi_head_attention(*split(*products), key_mask, heads)

    def unmasked(*args: torch.Tensor) -> torch.Tensor:
        return torch.ops.leanbert.ort_multi_head_attention_unmasked(*split(*args[:-1]), heads)

    def masked(*args: torch.Tensor) -> torch.Tensor:
        return torch.ops.leanbert.ort_multi_head_attention(*split(*args[:-1]), args[-1], heads)

    return torch.cond(key_mask.all(), unmasked, masked, (*products, key_mask))


class OrtMobileBertAttention(MobileBertAttention):
    """:class:`MobileBertAttention` with the attention core as one ORT node (export copies only)."""

    def forward(self, qk_source: torch.Tensor, v_source: torch.Tensor, residual: torch.Tensor,
                key_mask: torch.Tensor | None, query_index: torch.Tensor | None = None,
                output_attentions: bool = False) -> LayerOutput:
        if key_mask is None or query_index is not None or output_attentions:
            return super().forward(qk_source, v_source, residual, key_mask, query_index, output_attentions)
        width = self.num_heads * self.head_dim

        def split(qk: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            q, k = qk.split(width, dim=-1)
            return q, k, v

        return LayerOutput(self.from_products((self.query_key(qk_source), self.value(v_source)), split, residual,
                                              key_mask), None, None)

    def from_products(self, products: tuple[torch.Tensor, ...], split: Split, residual: torch.Tensor,
                      key_mask: torch.Tensor) -> torch.Tensor:
        """The block's attention output from the Q/K/V products (``split(*products) = (q, k, v)``):
        the ORT attention core, the output projection, the residual norm."""
        return self.norm(self.out(_mha(self, products, split, key_mask)), residual)


class OrtMobileBertLayer(MobileBertLayer):
    """:class:`MobileBertLayer` whose three products of the block input (input bottleneck, the
    composed Q/K projection, values) are one product ``block_input_product`` (export copies
    only, after :func:`fuse_block_input_products`); its output columns are
    ``[bottleneck | q | k | v]``."""

    block_input_product: nn.Linear

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, query_index: torch.Tensor | None = None,
                output_attentions: bool = False) -> LayerOutput:
        if key_mask is None or query_index is not None or output_attentions:
            raise RuntimeError("an ORT export copy runs only full-sequence inference with a key mask")
        attention = self.attention
        width = attention.num_heads * attention.head_dim
        y = self.block_input_product(x)
        residual = self.input_bottleneck.norm(y[..., :width])

        def split(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            _, q, k, v = y.split(width, dim=-1)
            return q, k, v

        h = attention.from_products((y,), split, residual, key_mask)
        return LayerOutput(self.after_attention(h, x), None, None)


class OrtBertSelfAttention(BertSelfAttention):
    """:class:`BertSelfAttention` with the attention core as one ORT node (export copies only)."""

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, query_index: torch.Tensor | None = None,
                output_attentions: bool = False, packing: Any = None) -> LayerOutput:
        if key_mask is None or query_index is not None or output_attentions or packing is not None:
            return super().forward(x, key_mask, query_index, output_attentions, packing)
        width = self.num_heads * self.head_dim

        def split(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return tuple(qkv.split(width, dim=-1))  # type: ignore[return-value]

        # (no unpadded branch for BERT: torch.onnx 2.13 fails on torch.cond in this graph, with
        # "no ONNX function for aten.sym_stride"; BERT's int8 file always passes the mask)
        ctx = _mha(self, (self.qkv(x),), split, key_mask, unpadded_branch=False)
        return LayerOutput(self.norm(x + self.dropout(self.out(ctx))), None, None)


_SWAPS = {MobileBertAttention: OrtMobileBertAttention, BertSelfAttention: OrtBertSelfAttention}


def use_ort_attention(model: nn.Module) -> int:
    """Swap every eligible attention module of ``model`` (a private copy, eval mode) for its
    ORT-attention class; returns how many. Attention with a replacement mask score
    (``masked_score``, MobileBERT's -6) is left as it is."""
    n = 0
    for module in model.modules():
        swap = _SWAPS.get(type(module))
        if swap is None or getattr(module.attend, "masked_score", None) is not None:
            continue
        module.__class__ = swap
        n += 1
    return n


@torch.no_grad()
def compose_shared_qk(model: nn.Module) -> int:
    """Compose each MobileBERT layer's folded shared Q/K bottleneck into its query/key
    projection (see the module docstring); returns how many layers. The bottleneck's norm must
    already be folded away (an identity), which :func:`leanbert.deploy.fold.fold_mobilebert_no_norm` does."""
    n = 0
    for layer in getattr(getattr(model, "encoder", None), "layers", []):
        qkb = getattr(layer, "qk_bottleneck", None)
        if qkb is None or not isinstance(qkb.norm, FoldedNoNorm) or qkb.norm.gamma is not None:
            continue
        bottleneck, qk = qkb.dense, layer.attention.query_key
        composed = nn.Linear(bottleneck.in_features, qk.out_features, dtype=qk.weight.dtype)
        composed.weight.copy_(qk.weight.double() @ bottleneck.weight.double())
        composed.bias.copy_(qk.weight.double() @ bottleneck.bias.double() + qk.bias.double())
        layer.attention.query_key = composed
        layer.qk_bottleneck = None  # the layer then feeds the block input to query_key
        n += 1
    return n


@torch.no_grad()
def fuse_block_input_products(model: nn.Module) -> int:
    """Stack each MobileBERT layer's products of the block input (the input bottleneck, the
    Q/K projection that :func:`compose_shared_qk` composed, the values) into one
    ``block_input_product`` (:class:`OrtMobileBertLayer`); returns how many layers. Needs the
    composed Q/K and ORT attention (:func:`use_ort_attention`) in the layer."""
    n = 0
    for layer in getattr(getattr(model, "encoder", None), "layers", []):
        if (type(layer) is not MobileBertLayer or layer.source != "shared_bottleneck"
                or layer.qk_bottleneck is not None or not isinstance(layer.attention, OrtMobileBertAttention)):
            continue
        attention = layer.attention
        parts = (layer.input_bottleneck.dense, attention.query_key, attention.value)
        stacked = nn.Linear(parts[0].in_features, sum(p.out_features for p in parts), dtype=parts[0].weight.dtype)
        stacked.weight.copy_(torch.cat([p.weight for p in parts]))
        stacked.bias.copy_(torch.cat([p.bias for p in parts]))
        layer.block_input_product = stacked
        layer.input_bottleneck.dense = attention.query_key = attention.value = None
        layer.__class__ = OrtMobileBertLayer
        n += 1
    return n


def translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export``: the custom op as
    ``com.microsoft.MultiHeadAttention`` (key padding mask as int32 [B, S])."""
    import onnx
    import onnxscript
    from onnx.defs import OpSchema
    from onnxscript import opset18 as op

    try:
        onnx.defs.get_schema("MultiHeadAttention", 1, "com.microsoft")
    except onnx.defs.SchemaError:
        # onnxscript looks up an op's schema to order its attributes; ORT's contrib schemas are not
        # in onnx's registry, so declare the inputs this export uses.
        param, optional = OpSchema.FormalParameter, OpSchema.FormalParameterOption.Optional
        onnx.defs.register_schema(OpSchema(
            "MultiHeadAttention", "com.microsoft", 1,
            inputs=[param("query", "T"), param("key", "T", param_option=optional),
                    param("value", "T", param_option=optional), param("bias", "T", param_option=optional),
                    param("key_padding_mask", "M", param_option=optional)],
            outputs=[param("output", "T")],
            type_constraints=[("T", ["tensor(float)"], ""), ("M", ["tensor(int32)"], "")],
            attributes=[OpSchema.Attribute("num_heads", OpSchema.AttrType.INT, "number of heads"),
                        OpSchema.Attribute("mask_filter_value", OpSchema.AttrType.FLOAT, "masked score")]))
    msft = onnxscript.values.Opset(domain="com.microsoft", version=1)

    def mha(q: Any, k: Any, v: Any, key_mask: Any, num_heads: int) -> Any:
        mask = op.Cast(op.Squeeze(key_mask, op.Constant(value_ints=[1, 2])), to=onnx.TensorProto.INT32)
        return msft.MultiHeadAttention(q, k, v, None, mask, num_heads=num_heads, mask_filter_value=MASK_FILTER_VALUE)

    def mha_unmasked(q: Any, k: Any, v: Any, num_heads: int) -> Any:
        return msft.MultiHeadAttention(q, k, v, num_heads=num_heads)

    return {torch.ops.leanbert.ort_multi_head_attention.default: mha,
            torch.ops.leanbert.ort_multi_head_attention_unmasked.default: mha_unmasked}
