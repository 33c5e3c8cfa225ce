"""BERT in plain PyTorch (Devlin et al., NAACL 2019, Sec. 3 and Appendix A).

Post-LayerNorm Transformer encoder exactly as the original BERT: embeddings (word +
position + token type, LayerNorm, dropout), then L layers of
``x = LN(x + Dropout(Attn(x)))``; ``x = LN(x + Dropout(W2 act(W1 x)))``, a tanh pooler on
[CLS]. Attention runs through ``F.scaled_dot_product_attention`` (fused kernels on CPU and
CUDA); Q, K and V come from one fused projection. The layer can take a subset of positions
as queries, which is what token dropping's split layer needs (Hou et al. 2022, Sec. 3.1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from leanbert.models.base import (
    EncoderBase,
    EncoderConfigBase,
    LayerOutput,
    ModelFamily,
    Probability,
    Size,
    gather_positions,
)
from leanbert.models.dropout import Dropout, dropout
from leanbert.models.linear import Linear, linear

Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]


class BertConfig(EncoderConfigBase):
    """BERT hyper-parameters (names follow the paper: L layers, H hidden, A heads)."""

    model_type: Literal["bert"] = "bert"
    hidden_size: Size = 768
    num_layers: Size = 12
    num_heads: Size = 12
    intermediate_size: Size = 3072
    hidden_act: Activation = "gelu"
    hidden_dropout: Probability = 0.1
    attention_dropout: Probability = 0.1
    layer_norm_eps: float = 1e-12
    use_pooler: bool = True


    @model_validator(mode="after")
    def _check_heads(self) -> BertConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
                "pick sizes so that hidden_size % num_heads == 0"
            )
        if "nsp" in self.heads and not self.use_pooler:
            raise ValueError("the nsp head needs the pooler: set use_pooler: true")
        return self


def activation(name: str):
    """The activation function ``name`` (exact erf GELU as in BERT unless ``gelu_tanh``)."""
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    if name == "relu":
        return F.relu
    if name == "silu":
        return F.silu
    raise ValueError(f"unknown activation {name}")


class BertEmbeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        seq_len = input_ids.shape[1]
        if token_type_ids is None:
            x = self.word(input_ids) + self.token_type.weight[0]
        else:
            x = self.word(input_ids) + self.token_type(token_type_ids)
        x = x + self.position.weight[:seq_len]
        return self.dropout(self.norm(x))


class BertSelfAttention(nn.Module):
    """Multi-head self-attention with residual and post-LayerNorm (the "attention sub-layer")."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.hidden_size // cfg.num_heads
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.attention_dropout = cfg.attention_dropout
        self.dropout = Dropout(cfg.hidden_dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, heads, T, d]
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        query_index: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> LayerOutput:
        b, s, h = x.shape
        if query_index is None:
            q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            residual = x
        else:  # split layer: queries (and residuals) from the kept positions only
            residual = gather_positions(x, query_index)
            w, bias = self.qkv.weight, self.qkv.bias
            q = self._heads(linear(residual, w[:h], bias[:h]))
            kv = linear(x, w[h:], bias[h:]).view(b, s, 2, self.num_heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4)
        scores = probs = None
        if output_attentions:
            ctx, scores, probs = explicit_attention(q, k, v, key_mask, self.attention_dropout if self.training else 0.0)
        else:
            ctx = attention(q, k, v, key_mask, self.attention_dropout if self.training else 0.0)
        ctx = ctx.transpose(1, 2).reshape(b, q.shape[2], h)
        out = self.norm(residual + self.dropout(self.out(ctx)))
        return LayerOutput(out, scores, probs)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, dropout_p: float
) -> torch.Tensor:
    """``F.scaled_dot_product_attention``; on CPU with attention dropout (training),
    :func:`explicit_attention` with :func:`leanbert.models.dropout.dropout`'s cheaper mask
    (torch's CPU kernel falls back to this math path with dropout anyway, plus a
    ``bernoulli_`` mask: ~20% slower fwd+bwd at BERT-base 16x128)."""
    if dropout_p == 0.0 or q.device.type != "cpu" or torch.compiler.is_compiling():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)
    return explicit_attention(q, k, v, key_mask, dropout_p)[0]


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None, dropout_p: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Attention with the scores and probabilities materialised (for knowledge transfer):
    ``(ctx, scores, probs)``, scores scaled by 1/sqrt(d) and masked (the scaling is applied to
    the queries, the smaller tensor)."""
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
    if key_mask is not None:
        scores = scores.masked_fill_(~key_mask, torch.finfo(scores.dtype).min)
    probs = scores.softmax(dim=-1)
    ctx = dropout(probs, dropout_p) @ v
    return ctx, scores, probs


class BertFeedForward(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.up = Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.down(self.act(self.up(x)))))


class BertLayer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = BertSelfAttention(cfg)
        self.ffn = BertFeedForward(cfg)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        query_index: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> LayerOutput:
        out = self.attention(x, key_mask, query_index, output_attentions)
        out.hidden = self.ffn(out.hidden)
        return out


class BertPooler(nn.Module):
    """``tanh(W h[CLS] + b)`` (BERT's pooler; MobileBERT's too, with its fp16-safe linear layer)."""

    def __init__(self, cfg: EncoderConfigBase, linear_cls: type[nn.Linear] = Linear) -> None:
        super().__init__()
        self.dense = linear_cls(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class BertEncoder(EncoderBase):
    """Embeddings, L post-LN Transformer layers and the (optional) pooler."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.num_layers))
        self.pooler = BertPooler(cfg) if cfg.use_pooler else None


class BertMLMHead(nn.Module):
    """MLM head: dense + activation + LayerNorm, then the decoder tied to the word embeddings.

    The decoder weight is the word-embedding matrix passed in at call time (tied, not copied),
    so checkpoints store it once. Call it on the positions that need logits only.
    """

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return linear(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


FAMILY = ModelFamily("bert", BertConfig, BertEncoder, BertMLMHead)
