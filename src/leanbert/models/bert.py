"""BERT in plain PyTorch (Devlin et al., NAACL 2019, Sec. 3 and Appendix A).

Post-LayerNorm Transformer encoder exactly as the original BERT: embeddings (word +
position + token type, LayerNorm, dropout), then L layers of
``x = LN(x + Dropout(Attn(x)))``; ``x = LN(x + Dropout(W2 act(W1 x)))``, a tanh pooler on
[CLS]. Attention runs through ``F.scaled_dot_product_attention`` (fused kernels on CPU and
CUDA); Q, K and V come from one fused projection. The layer can take a subset of positions
as queries, which is what token dropping's split layer needs (Hou et al. 2022, Sec. 3.1).

Plain modules only (``nn.Linear``, ``nn.Dropout``, ``nn.LayerNorm``): quantization, ONNX
export and other training loops see ordinary PyTorch. The CPU speed-ups are applied to a
built model by ``leanbert.optimize`` (:mod:`leanbert.speedups`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import model_validator
from torch import nn

from leanbert.models.attention import Attention
from leanbert.models.base import (
    EncoderBase,
    EncoderConfigBase,
    LayerOutput,
    ModelFamily,
    Packing,
    Probability,
    Size,
    TiedLinear,
    gather_positions,
    linear_slice,
)

# relu6: MobileBERT's quantization-aware training (the authors' *_OPT_QAT.json config; leanbert.deploy.qat)
Activation = Literal["gelu", "gelu_tanh", "relu", "relu6", "silu"]


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
    if name == "relu6":
        return F.relu6
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
        self.dropout = nn.Dropout(cfg.hidden_dropout)

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
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.attend = Attention(cfg.attention_dropout)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, H] -> [B, heads, T, d]
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None,
        query_index: torch.Tensor | None = None,
        output_attentions: bool = False,
        packing: Packing | None = None,
    ) -> LayerOutput:
        if packing is not None:  # x: the real tokens [N, H]; attention on the padded layout
            b, s, h = packing.batch, packing.seq_len, x.shape[-1]
            qkv = packing.unpack(self.qkv(x))
            q, k, v = qkv.view(b, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            ctx, _, _ = self.attend(q, k, v, key_mask)
            ctx = packing.pack(ctx.transpose(1, 2).reshape(b, s, h))
            return LayerOutput(self.norm(x + self.dropout(self.out(ctx))))
        b, s, h = x.shape
        if query_index is None:
            q, k, v = self.qkv(x).view(b, s, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            residual = x
        else:  # split layer: queries (and residuals) from the kept positions only
            residual = gather_positions(x, query_index)
            q = self._heads(linear_slice(self.qkv, residual, 0, h))
            kv = linear_slice(self.qkv, x, h, 3 * h).view(b, s, 2, self.num_heads, self.head_dim)
            k, v = kv.permute(2, 0, 3, 1, 4)
        ctx, scores, probs = self.attend(q, k, v, key_mask, output_attentions)
        ctx = ctx.transpose(1, 2).reshape(b, q.shape[2], h)
        out = self.norm(residual + self.dropout(self.out(ctx)))
        return LayerOutput(out, scores, probs)


class BertFeedForward(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

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
        packing: Packing | None = None,
    ) -> LayerOutput:
        out = self.attention(x, key_mask, query_index, output_attentions, packing)
        out.hidden = self.ffn(out.hidden)
        return out


class BertPooler(nn.Module):
    """``tanh(W h[CLS] + b)`` (BERT's pooler; MobileBERT's too). Runs in fp32 under autocast, as
    the task heads do (a [CLS] state beyond fp16's range cannot overflow it)."""

    def __init__(self, cfg: EncoderConfigBase) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        cls = hidden[:, 0]
        if torch.is_autocast_enabled(hidden.device.type):
            with torch.autocast(hidden.device.type, enabled=False):
                return torch.tanh(self.dense(cls.float()))
        return torch.tanh(self.dense(cls))


class BertEncoder(EncoderBase):
    """Embeddings, L post-LN Transformer layers and the (optional) pooler. The layers can run on
    packed real tokens (``packed=True``, see :class:`~leanbert.models.base.Packing`)."""

    supports_packing = True

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
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = activation(cfg.hidden_act)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = TiedLinear()
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(hidden))), word_embeddings, self.bias)


def layer_flops(config: BertConfig, n_queries: int, n_keys: int) -> int:
    """Forward FLOPs of one layer's matrix products (SPEC Sec. 5): ``n_queries`` rows go
    through the layer, ``n_keys`` rows give keys and values (equal, except in token dropping's
    split layer and the last layer of MLM pretraining)::

        2*q*(2*h*h + 2*h*f) + 2*k*(2*h*h) + 4*q*k*h     # Q, out, FFN  +  K, V  +  attention
    """
    h, f, q, k = config.hidden_size, config.intermediate_size, n_queries, n_keys
    return 2 * (2 * q * h * h + 2 * k * h * h + 2 * q * h * f) + 4 * q * k * h


FAMILY = ModelFamily("bert", BertConfig, BertEncoder, BertMLMHead, layer_flops)
