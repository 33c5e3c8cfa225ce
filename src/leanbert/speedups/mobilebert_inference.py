"""Inference fast path for NoNorm MobileBERT (Sun et al., ACL 2020, Sec. 3.3 "Operational
Optimizations": NoNorm and ReLU were chosen so that inference is a chain of matrix products).

``leanbert.optimize(model, for_training=False)`` turns the model's
:class:`~leanbert.models.mobilebert.MobileBertEncoder` into :class:`FastMobileBertEncoder`
(same submodules, same state dict), which takes this path when nothing needs the module
graph: eval mode, gradients off (``torch.no_grad`` / ``torch.inference_mode``), float32
weights, no autocast, NoNorm and ReLU (the paper's choices), no router (token dropping), no
per-layer outputs; otherwise it runs the modules. ``leanbert.restore(model)`` turns it back.
Results equal the module path up to float rounding (tested to 1e-5).

What it does, per block (names as in the module docstring of ``mobilebert.py``):

- **NoNorm folded into the linear layer before it** (exact in real arithmetic):
  ``g * (W h + b) + beta = (g W) h + (g b + beta)``. A residual NoNorm keeps ``g`` for the
  residual, applied in place: ``(gW) h + c`` then ``.addcmul_(residual, g)``.
- **One product for everything the block input feeds**: the input bottleneck, the shared
  Q/K bottleneck and the values (MobileBERT), or the input bottleneck alone (TINY), as one
  ``[512 -> 384]`` matrix; queries and keys as one matrix.
- **Pre-packed weights** for oneDNN's fp32 matrix product on CPU
  (``torch.ops.mkldnn._linear_pointwise``, the kernel ``torch.compile`` freezes CPU models
  into), with ReLU fused into the first FFN product. At batch 1 x 128 it runs the block's
  small products (M = 128, K and N of 128 to 512) 3-10% faster than MKL's ``addmm``. Where
  oneDNN is unavailable (or on other devices) the same plan runs with ``addmm``.
- 2-D activations ``[B*T, width]`` throughout, no module calls, few temporaries.

The plan (folded, packed weights: one extra copy of the encoder's weights) is built on the
first eligible call and rebuilt when any parameter changes its storage or its in-place
version counter (an optimizer step, ``load_state_dict``, ``.to()``, ``p.add_()``); it is
dropped when the encoder goes back to training (and with ``drop_plan``, which is needed
after replacing a parameter object itself in eval mode). The plan lives in a weak-keyed
table, never in the state dict.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from leanbert.models.attention import explicit_attention
from leanbert.models.base import EncoderOutput
from leanbert.models.mobilebert import MobileBertEncoder
from leanbert.speedups.linear import onednn_available, onednn_product

__all__ = ["FastMobileBertEncoder", "eligible", "fast_forward", "drop_plan", "fold_no_norm"]


@dataclass
class _Linear:
    """One folded linear layer, packed for oneDNN (CPU) or transposed for ``addmm``."""

    weight: torch.Tensor  # oneDNN-packed [out, in], or [in, out] contiguous for addmm
    bias: torch.Tensor
    onednn: bool

    @classmethod
    def make(cls, weight: torch.Tensor, bias: torch.Tensor, onednn: bool) -> _Linear:
        weight, bias = weight.detach().contiguous(), bias.detach().contiguous()
        if onednn:
            return cls(torch.ops.mkldnn._reorder_linear_weight(weight, None), bias, True)
        return cls(weight.t().contiguous(), bias, False)

    def __call__(self, x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        if self.onednn:
            return onednn_product(x, self.weight, self.bias, "relu" if relu else "none")
        out = torch.addmm(self.bias, x, self.weight)
        return out.relu_() if relu else out


@dataclass
class _Block:
    first: _Linear  # from the block input: [b (+ s) (+ v)] or [b (+ q + k) + v]
    widths: list[int]  # the split of ``first``'s output
    qkv: _Linear | None  # queries and keys (+ values for TINY) from s or b; None when in ``first``
    out: _Linear  # attention output, folded with its norm
    out_gamma: torch.Tensor  # the norm's gamma, for the residual b
    ffns: list[tuple[_Linear, _Linear, torch.Tensor]]  # up (ReLU fused), down (folded), gamma
    bottleneck_out: _Linear
    bottleneck_gamma: torch.Tensor


@dataclass
class _Plan:
    parameters: tuple[torch.Tensor, ...]  # the encoder's, in order, when the plan was built
    signature: list[tuple[int, int]]
    blocks: list[_Block]


_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _signature(parameters: tuple[torch.Tensor, ...]) -> list[tuple[int, int]]:
    """Storage and in-place version of each parameter: any update changes one of them."""
    return [(p.data_ptr(), p._version) for p in parameters]


def fold_no_norm(linear: torch.nn.Linear, norm: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``linear`` with the NoNorm ``norm`` after it folded in (Sec. 3.3):
    ``g * (W h + b) + beta = (g W) h + (g b + beta)``, exact in real arithmetic. A residual
    added before the norm still needs ``g * residual`` (what the plan's ``addcmul_`` does).
    Shared with the export's NoNorm fold (:mod:`leanbert.deploy.fold`)."""
    g = norm.weight
    return g[:, None] * linear.weight, g * linear.bias + norm.bias


@torch.no_grad()
def _build(encoder: torch.nn.Module, onednn: bool) -> list[_Block]:
    source = encoder.config.attention_source
    blocks = []
    for layer in encoder.layers:
        att = layer.attention
        w_b, b_b = fold_no_norm(layer.input_bottleneck.dense, layer.input_bottleneck.norm)
        weights, biases = [w_b], [b_b]
        if source == "shared_bottleneck":  # [b; s; v] from x, then [q; k] from s
            w_s, b_s = fold_no_norm(layer.qk_bottleneck.dense, layer.qk_bottleneck.norm)
            weights += [w_s, att.value.weight]
            biases += [b_s, att.value.bias]
            qkv = _Linear.make(att.query_key.weight, att.query_key.bias, onednn)
        elif source == "block_input":  # [b; q; k; v] from x
            weights += [att.query_key.weight, att.value.weight]
            biases += [att.query_key.bias, att.value.bias]
            qkv = None
        else:  # TINY: b from x, then [q; k; v] from b
            qkv = _Linear.make(torch.cat([att.query_key.weight, att.value.weight]),
                               torch.cat([att.query_key.bias, att.value.bias]), onednn)
        ffns = []
        for ffn in layer.ffns:
            w_d, b_d = fold_no_norm(ffn.down, ffn.norm)
            ffns.append((_Linear.make(ffn.up.weight, ffn.up.bias, onednn), _Linear.make(w_d, b_d, onednn),
                         ffn.norm.weight.detach().clone()))
        ob = layer.output_bottleneck
        blocks.append(_Block(
            first=_Linear.make(torch.cat(weights), torch.cat(biases), onednn),
            widths=[w.shape[0] for w in weights],
            qkv=qkv,
            out=_Linear.make(*fold_no_norm(att.out, att.norm), onednn),
            out_gamma=att.norm.weight.detach().clone(),
            ffns=ffns,
            bottleneck_out=_Linear.make(*fold_no_norm(ob.dense, ob.norm), onednn),
            bottleneck_gamma=ob.norm.weight.detach().clone(),
        ))
    return blocks


def eligible(encoder: torch.nn.Module, input_ids: torch.Tensor) -> bool:
    """Whether the fast path may run this call (see the module docstring)."""
    cfg = encoder.config
    if (
        encoder.training
        or torch.is_grad_enabled()
        or cfg.normalization_type != "no_norm"
        or cfg.hidden_act != "relu"
    ):
        return False
    device = input_ids.device.type
    if torch.is_autocast_enabled(device):
        return False
    weight = encoder.layers[0].input_bottleneck.dense.weight
    return weight.dtype == torch.float32 and weight.device == input_ids.device


def drop_plan(encoder: torch.nn.Module) -> None:
    """Forget the packed weights (the encoder is training again, or weights moved)."""
    _PLANS.pop(encoder, None)


def _plan(encoder: torch.nn.Module, device: torch.device) -> _Plan:
    plan = _PLANS.get(encoder)
    if plan is not None and plan.signature == _signature(plan.parameters):
        return plan
    parameters = tuple(encoder.parameters())  # ~1 ms for MobileBERT: done on rebuilds only
    onednn = device.type == "cpu" and onednn_available()
    try:
        blocks = _build(encoder, onednn)
    except RuntimeError:  # a oneDNN build without this kernel: the same plan with addmm
        blocks = _build(encoder, False)
    plan = _PLANS[encoder] = _Plan(parameters, _signature(parameters), blocks)
    return plan


def fast_forward(
    encoder: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
) -> torch.Tensor:
    """The encoder's last hidden state ``[B, T, hidden]`` through the packed plan."""
    plan = _plan(encoder, input_ids.device)
    cfg = encoder.config
    heads = cfg.num_heads
    width = cfg.intra_bottleneck_size
    head_dim = width // heads
    x = encoder.embeddings(input_ids, token_type_ids)
    b, t, hidden = x.shape
    x = x.reshape(b * t, hidden)
    key_mask = None
    if attention_mask is not None and not bool(attention_mask.all()):
        key_mask = attention_mask.to(torch.bool)[:, None, None, :]

    def split_heads(z: torch.Tensor) -> torch.Tensor:  # [B*T, width] -> [B, heads, T, d]
        return z.view(b, t, heads, head_dim).transpose(1, 2)

    for block in plan.blocks:
        parts = block.first(x).split(block.widths, dim=1)
        bottleneck = parts[0]
        if block.qkv is None:  # the teacher's sources: q, k, v all from x
            q, k, v = parts[1][:, :width], parts[1][:, width:], parts[2]
        elif len(parts) == 3:  # MobileBERT: q, k from the shared bottleneck, v from x
            qk = block.qkv(parts[1])
            q, k, v = qk[:, :width], qk[:, width:], parts[2]
        else:  # TINY: q, k, v from the input bottleneck
            q, k, v = block.qkv(bottleneck).split(width, dim=1)
        if cfg.padded_key_score is not None and key_mask is not None:  # the authors' -6 mask
            ctx = explicit_attention(split_heads(q), split_heads(k), split_heads(v), key_mask, 0.0,
                                     masked_score=cfg.padded_key_score)[0]
        else:
            ctx = F.scaled_dot_product_attention(split_heads(q), split_heads(k), split_heads(v), attn_mask=key_mask)
        h = block.out(ctx.transpose(1, 2).reshape(b * t, width)).addcmul_(bottleneck, block.out_gamma)
        for up, down, gamma in block.ffns:
            h = down(up(h, relu=True)).addcmul_(h, gamma)
        x = block.bottleneck_out(h).addcmul_(x, block.bottleneck_gamma)
    return x.view(b, t, hidden)


class FastMobileBertEncoder(MobileBertEncoder):
    """A :class:`~leanbert.models.mobilebert.MobileBertEncoder` that takes the packed plan when
    it may (see the module docstring). ``leanbert.optimize`` sets an encoder's class to this
    one in place; it has no state of its own."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        router=None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        packed: bool = False,
    ) -> EncoderOutput:
        if router is None and not output_hidden_states and not output_attentions and eligible(self, input_ids):
            hidden = fast_forward(self, input_ids, attention_mask, token_type_ids)
            pooled = self.pooler(hidden) if self.pooler is not None else None
            return EncoderOutput(hidden, pooled)
        return super().forward(
            input_ids, attention_mask, token_type_ids, router=router,
            output_hidden_states=output_hidden_states, output_attentions=output_attentions, packed=packed,
        )

    def train(self, mode: bool = True) -> FastMobileBertEncoder:
        if mode:
            drop_plan(self)
        return super().train(mode)
