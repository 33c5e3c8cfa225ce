"""MobileBERT and its IB-BERT teacher in plain PyTorch (Sun et al., ACL 2020).

One config (``model_type: mobilebert``) covers the three architectures of the paper
(Sec. 3, Table 1):

==================  ===========  ============  ====================================  ======  ====
architecture        inter-block  intra-block   queries / keys / values from          FFNs    norm
==================  ===========  ============  ====================================  ======  ====
MobileBERT          512          128           shared 512->128 bottleneck / input     4x512   NoNorm
MobileBERT_TINY     512          128           the input bottleneck (all three)      2x512   NoNorm
IB-BERT_LARGE       512          1024          the 512-wide block input (all three)  1x4096  LayerNorm
==================  ===========  ============  ====================================  ======  ====

One block (Fig. 1 (b) teacher, (c) student; names follow the paper and transformers' ``modeling_mobilebert``)::

    b = norm(W_in x)                                 input bottleneck (the attention residual)
    s = norm(W_s x)                                  shared Q/K bottleneck (MobileBERT only)
    h = norm(W_o Attn(Q, K, V) + b)                  Q, K, V from s/s/x, b/b/b or x/x/x
    h = norm(W_2 relu(W_1 h) + h)                    each of the stacked FFNs (Sec. 3.2)
    y = norm(Dropout(W_out h) + x)                   output bottleneck back to 512

``norm`` is NoNorm, ``x * gamma + beta`` (Sec. 3.3, "Operational Optimizations"), and the
activation is ReLU instead of GELU (same section), both chosen for fast on-device inference
and 8-bit quantization. The embedding (Sec. 3.4, "Embedding Factorization")
concatenates the 128-wide embeddings of tokens t+1, t and t-1 (a kernel-3 convolution),
projects the 384-wide result to 512 and adds position and token-type embeddings before the
norm. The MLM head keeps a true LayerNorm and predicts with ``[E; X]``: the 128-wide word
embedding E (tied) for the first 128 dimensions and an extra 384 x V matrix X for the rest.

Every layer honours ``query_index`` (token dropping's split layer, Hou et al. 2022,
Sec. 3.1): the keys and values see all positions, everything else only the kept rows.

Mixed precision (transformers issue 11327: NaN losses in fp16). Nothing in a NoNorm network
bounds the activations: the 512-wide stream sums the output bottlenecks of all layers, the
128-wide one inside a block the attention and every stacked FFN, and NoNorm only rescales
them by learned gammas. Measured while pretraining a small MobileBERT (6 layers, WikiText-2,
300 steps) their maxima grow steadily, fastest in the stacked FFNs (FFN output 0.03 -> 2.3,
intermediate 0.004 -> 1.1, block output 0.12 -> 1.1) with nothing to stop them; with the
released google/mobilebert-uncased they evidently pass fp16's 65504 (the issue's NaNs). Under autocast the residual sums and NoNorms are
already fp32 (NoNorm's fp32 gamma/beta promote them); what overflows is fp16 autocast's cast of
a large linear input (or a large product) to fp16, after which softmax and LayerNorm turn
inf into NaN. So under fp16 autocast every linear layer of the encoder divides each token's
input by a power of two that brings it into [-1, 1] and scales the fp32 result back (exact,
see :func:`linear`), and attention runs in fp32 (``Attention(fp32_under_fp16=True)``); keeping the linear
layers themselves in fp32 would have given up most of fp16's speed. bf16 has fp32's range:
nothing changes there, and fp32 pays one branch per linear layer.

The modules are plain (``nn.Linear``; the fp16 rescaling is a function around them, inactive
outside fp16 autocast), so quantization and ONNX export see an ordinary graph.

Inference: the forward pass already avoids waste (Q and K in one matrix product, NoNorm as
one ``addcmul``, fused ``scaled_dot_product_attention``). ``leanbert.optimize(model,
for_training=False)`` goes further (:mod:`leanbert.speedups.mobilebert_inference`): every
NoNorm folded into the linear layer before it, the products that read the block input fused
into one, weights pre-packed for oneDNN, ReLU fused into the product.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from leanbert.models.attention import Attention, fp16_autocast
from leanbert.models.base import (
    EncoderBase,
    EncoderConfigBase,
    LayerOutput,
    ModelFamily,
    Probability,
    Size,
    TiedLinear,
    gather_positions,
    linear_slice,
)
from leanbert.models.bert import Activation, BertPooler, activation

NormType = Literal["no_norm", "layer_norm"]


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


class MobileBertConfig(EncoderConfigBase):
    """MobileBERT / MobileBERT_TINY / IB-BERT_LARGE hyper-parameters (Table 1).

    Names follow transformers' ``MobileBertConfig`` where they exist. ``hidden_size`` is the
    inter-block width (what the heads see), ``intra_bottleneck_size`` the intra-block width
    (the attention width and the FFNs' input/output). Q/K/V come from the input bottleneck
    when ``use_bottleneck_attention`` (TINY), from a second, shared bottleneck (Q, K) and the
    block input (V) when ``key_query_shared_bottleneck`` (MobileBERT), else all from the
    block input (the IB-BERT teacher).
    """

    model_type: Literal["mobilebert"] = "mobilebert"
    hidden_size: Size = 512
    embedding_size: Size = 128
    trigram_input: bool = True
    num_layers: Size = 24
    num_heads: Size = 4
    intra_bottleneck_size: Size = 128
    key_query_shared_bottleneck: bool = True
    use_bottleneck_attention: bool = False
    num_feedforward_networks: Size = 4
    intermediate_size: Size = 512
    hidden_act: Activation = "relu"
    normalization_type: NormType = "no_norm"
    hidden_dropout: Probability = 0.0
    attention_dropout: Probability = 0.1
    layer_norm_eps: float = 1e-12
    use_pooler: bool = False  # the authors' models classify on the [CLS] state; HF's default adds one
    # Padded keys' attention scores: None = the dtype's lowest value (transformers; what HF
    # checkpoints were trained with); -6.0 = the authors' TF code, which sets them to exactly -6
    # after scaling (an int8-friendly range; padded keys keep a small weight).
    padded_key_score: float | None = None


    @model_validator(mode="after")
    def _check_shapes(self) -> MobileBertConfig:
        if self.intra_bottleneck_size % self.num_heads:
            raise ValueError(
                f"intra_bottleneck_size {self.intra_bottleneck_size} is not divisible by num_heads "
                f"{self.num_heads}; the attention runs at the bottleneck width, so pick sizes with "
                "intra_bottleneck_size % num_heads == 0"
            )
        if self.use_bottleneck_attention and self.key_query_shared_bottleneck:
            raise ValueError(
                "use_bottleneck_attention takes queries, keys and values from the input bottleneck, so the "
                "shared query/key bottleneck would be unused: set key_query_shared_bottleneck: false"
            )
        if "mlm" in self.heads and self.embedding_size > self.hidden_size:
            raise ValueError(
                f"the MLM head predicts with [E; X] from the {self.hidden_size}-wide output, so "
                f"embedding_size {self.embedding_size} must not exceed hidden_size {self.hidden_size}"
            )
        return self

    @property
    def attention_source(self) -> Literal["bottleneck", "shared_bottleneck", "block_input"]:
        """Where queries and keys come from (values: the bottleneck or the block input)."""
        if self.use_bottleneck_attention:
            return "bottleneck"
        return "shared_bottleneck" if self.key_query_shared_bottleneck else "block_input"


# --------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------


class NoNorm(nn.Module):
    """``x * gamma + beta`` (MobileBERT Sec. 3.3): LayerNorm without the statistics.

    Called as ``norm(x, residual)`` it normalises ``x + residual``.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if residual is not None:
            x = x + residual
        return torch.addcmul(self.bias, x, self.weight)


class ResidualLayerNorm(nn.LayerNorm):
    """LayerNorm called like :class:`NoNorm`: ``norm(x, residual)`` normalises ``x + residual``."""

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return super().forward(x if residual is None else x + residual)


def make_norm(cfg: MobileBertConfig, size: int) -> nn.Module:
    if cfg.normalization_type == "no_norm":
        return NoNorm(size)
    return ResidualLayerNorm(size, eps=cfg.layer_norm_eps)


# --------------------------------------------------------------------------------------
# Mixed precision: what keeps fp16 finite
# --------------------------------------------------------------------------------------


def linear(layer: nn.Linear, x: torch.Tensor, start: int | None = None, stop: int | None = None) -> torch.Tensor:
    """``layer(x)`` (output features ``start:stop`` only, if given), safe from fp16 overflow
    under fp16 autocast (see the module docstring).

    Under fp16 autocast each token's input is divided by a power of two ``s >= 1`` with
    ``|x / s| <= 1`` (exact in floating point), the product runs in fp16, and the output is
    scaled back in fp32: ``(W (x / s)) * s + b``. Otherwise (fp32, bf16) it is the layer itself,
    whatever class it has (``nn.Linear``, a speed-up, a quantized layer).
    """
    if not fp16_autocast(x):
        return layer(x) if start is None else linear_slice(layer, x, start, stop)
    weight, bias = layer.weight, layer.bias
    if start is not None:
        weight, bias = weight[start:stop], None if bias is None else bias[start:stop]
    amax = x.detach().abs().amax(dim=-1, keepdim=True).float().clamp(min=1.0)
    scale = torch.exp2(torch.ceil(torch.log2(amax)))
    out = F.linear(x / scale, weight)
    return out.float() * scale if bias is None else torch.addcmul(bias.float(), out.float(), scale)


# --------------------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------------------


class MobileBertEmbeddings(nn.Module):
    """Factorised trigram embedding (Sec. 3.4, "Embedding Factorization").

    ``word`` is the 128-wide table that the MLM decoder also uses. The trigram input is
    ``[e(t+1); e(t); e(t-1)]`` (zero beyond the ends), projected to ``hidden_size``.
    """

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.trigram_input = cfg.trigram_input
        self.word = nn.Embedding(cfg.vocab_size, cfg.embedding_size, padding_idx=cfg.pad_token_id)
        width = cfg.embedding_size * (3 if cfg.trigram_input else 1)
        needs_projection = cfg.trigram_input or cfg.embedding_size != cfg.hidden_size
        self.projection = nn.Linear(width, cfg.hidden_size) if needs_projection else None
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = make_norm(cfg, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        e = self.word(input_ids)
        if self.trigram_input:
            following = F.pad(e[:, 1:], (0, 0, 0, 1))  # e(t+1), zero after the last token
            preceding = F.pad(e[:, :-1], (0, 0, 1, 0))  # e(t-1), zero before the first
            e = torch.cat([following, e, preceding], dim=-1)
        if self.projection is not None:
            e = linear(self.projection, e)
        if token_type_ids is None:
            e = e + self.token_type.weight[0]
        else:
            e = e + self.token_type(token_type_ids)
        e = e + self.position.weight[:seq_len]
        return self.dropout(self.norm(e))


# --------------------------------------------------------------------------------------
# The block
# --------------------------------------------------------------------------------------


class Bottleneck(nn.Module):
    """Linear projection + norm (the input bottleneck and the shared Q/K bottleneck)."""

    def __init__(self, cfg: MobileBertConfig, size_in: int, size_out: int) -> None:
        super().__init__()
        self.dense = nn.Linear(size_in, size_out)
        self.norm = make_norm(cfg, size_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(linear(self.dense, x))


class MobileBertAttention(nn.Module):
    """Multi-head attention at the intra-block width, output projection, residual, norm.

    Queries and keys come from one fused projection of ``qk_source``; values from ``v_source``.
    The residual is the input bottleneck's output (Fig. 1).
    """

    def __init__(self, cfg: MobileBertConfig, qk_width: int, v_width: int) -> None:
        super().__init__()
        width = cfg.intra_bottleneck_size
        self.num_heads = cfg.num_heads
        self.head_dim = width // cfg.num_heads
        self.query_key = nn.Linear(qk_width, 2 * width)
        self.value = nn.Linear(v_width, width)
        self.attend = Attention(cfg.attention_dropout, fp32_under_fp16=True, masked_score=cfg.padded_key_score)
        self.out = nn.Linear(width, width)
        self.norm = make_norm(cfg, width)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, A] -> [B, heads, T, d]
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        qk_source: torch.Tensor,
        v_source: torch.Tensor,
        residual: torch.Tensor,
        key_mask: torch.Tensor | None,
        query_index: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> LayerOutput:
        b, s, _ = qk_source.shape
        width = self.num_heads * self.head_dim
        if query_index is None:
            qk = linear(self.query_key, qk_source)
            q, k = qk.view(b, s, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        else:  # split layer: queries from the kept positions only, keys from all
            q = self._heads(linear(self.query_key, gather_positions(qk_source, query_index), 0, width))
            k = self._heads(linear(self.query_key, qk_source, width, 2 * width))
        v = self._heads(linear(self.value, v_source))
        ctx, scores, probs = self.attend(q, k, v, key_mask, output_attentions)
        ctx = ctx.transpose(1, 2).reshape(b, q.shape[2], width)
        return LayerOutput(self.norm(linear(self.out, ctx), residual), scores, probs)


class FeedForward(nn.Module):
    """One of the stacked FFNs (Sec. 3.2): ``norm(W2 act(W1 h) + h)``, no dropout inside."""

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.intra_bottleneck_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.intra_bottleneck_size)
        self.act = activation(cfg.hidden_act)
        self.norm = make_norm(cfg, cfg.intra_bottleneck_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(linear(self.down, self.act(linear(self.up, h))), h)


class OutputBottleneck(nn.Module):
    """Back to the inter-block width: ``norm(Dropout(W h) + x)`` with the block input x."""

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.intra_bottleneck_size, cfg.hidden_size)
        self.dropout = nn.Dropout(cfg.hidden_dropout)
        self.norm = make_norm(cfg, cfg.hidden_size)

    def forward(self, h: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        return self.norm(self.dropout(linear(self.dense, h)), block_input)


class MobileBertLayer(nn.Module):
    """One block: bottlenecks, attention, stacked FFNs (Sec. 3.1-3.2; Fig. 1 (c) student, (b) teacher)."""

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        h, a = cfg.hidden_size, cfg.intra_bottleneck_size
        self.source = cfg.attention_source
        self.input_bottleneck = Bottleneck(cfg, h, a)
        self.qk_bottleneck = Bottleneck(cfg, h, a) if self.source == "shared_bottleneck" else None
        qk_width = h if self.source == "block_input" else a
        v_width = a if self.source == "bottleneck" else h
        self.attention = MobileBertAttention(cfg, qk_width, v_width)
        self.ffns = nn.ModuleList(FeedForward(cfg) for _ in range(cfg.num_feedforward_networks))
        self.output_bottleneck = OutputBottleneck(cfg)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        query_index: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> LayerOutput:
        kept = x if query_index is None else gather_positions(x, query_index)
        if self.source == "bottleneck":  # TINY: keys and values need the bottleneck everywhere
            qk_source = v_source = self.input_bottleneck(x)
            residual = qk_source if query_index is None else gather_positions(qk_source, query_index)
        else:
            residual = self.input_bottleneck(kept)
            qk_source = self.qk_bottleneck(x) if self.qk_bottleneck is not None else x
            v_source = x
        out = self.attention(qk_source, v_source, residual, key_mask, query_index, output_attentions)
        out.hidden = self.after_attention(out.hidden, kept)
        return out

    def after_attention(self, h: torch.Tensor, block_input: torch.Tensor) -> torch.Tensor:
        """The stacked FFNs and the output bottleneck with its residual from ``block_input``
        (Sec. 3.1, Fig. 1c: the part of the block after attention)."""
        for ffn in self.ffns:
            h = ffn(h)
        return self.output_bottleneck(h, block_input)


class MobileBertEncoder(EncoderBase):
    """Trigram embeddings, L bottleneck blocks and the optional pooler.

    For inference, ``leanbert.optimize(model, for_training=False)`` gives this encoder a fast
    path (:mod:`leanbert.speedups.mobilebert_inference`: NoNorm folded, products fused and
    pre-packed); the module graph here stays the paper's.
    """

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = MobileBertEmbeddings(cfg)
        self.layers = nn.ModuleList(MobileBertLayer(cfg) for _ in range(cfg.num_layers))
        self.pooler = BertPooler(cfg) if cfg.use_pooler else None


class MobileBertMLMHead(nn.Module):
    """MLM head: dense + activation + a true LayerNorm (also in the NoNorm student), then
    ``logits = h[:, :E] E^T + h[:, E:] X + b``: the word embedding E (tied, passed in at call
    time) decodes the first ``embedding_size`` dimensions, the extra ``(H - E) x V`` matrix X
    (``decoder_extra``, transformers' ``cls.predictions.dense.weight``) the rest.
    """

    def __init__(self, cfg: MobileBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = TiedLinear()
        self.decoder_extra = nn.Parameter(torch.empty(cfg.hidden_size - cfg.embedding_size, cfg.vocab_size))
        nn.init.normal_(self.decoder_extra, 0.0, cfg.initializer_range)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.act(linear(self.dense, hidden)))
        e = word_embeddings.shape[1]
        return self.decoder(h[..., :e], word_embeddings, self.bias) + h[..., e:] @ self.decoder_extra


def layer_flops(cfg: MobileBertConfig, n_queries: int, n_keys: int) -> int:
    """Forward FLOPs of one block's matrix products (2 per multiply-add), as SPEC Sec. 5
    counts BERT's: ``n_queries`` rows go through the block, ``n_keys`` rows give keys and
    values (equal, except in token dropping's split layer). Whatever feeds the keys and values
    runs on all ``n_keys`` rows: the shared Q/K bottleneck (MobileBERT), the input bottleneck
    (TINY), nothing extra (teacher)."""
    q, k = n_queries, n_keys
    h, a, f = cfg.hidden_size, cfg.intra_bottleneck_size, cfg.intermediate_size
    source = cfg.attention_source
    if source == "shared_bottleneck":  # b from x (q rows), s from x (k rows), Q/K from s, V from x
        macs = q * h * a + k * h * a + (q + k) * a * a + k * h * a
    elif source == "bottleneck":  # b from x on every row (keys and values need it), Q/K/V from b
        macs = k * h * a + (q + 2 * k) * a * a
    else:  # teacher: b, Q from x on the query rows, K and V from x on all rows
        macs = 2 * q * h * a + 2 * k * h * a
    macs += 2 * q * k * a  # scores and the weighted sum
    macs += q * a * a + cfg.num_feedforward_networks * 2 * q * a * f + q * a * h  # out, FFNs, output bottleneck
    return 2 * macs


FAMILY = ModelFamily("mobilebert", MobileBertConfig, MobileBertEncoder, MobileBertMLMHead, layer_flops)
