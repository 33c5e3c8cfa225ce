"""What every leanbert encoder family shares: the config base, the output types, and the
small interface that everything above the model (trainer, token dropping, distillation,
fine-tuning, export) relies on.

The encoder interface
---------------------
An encoder family (BERT, MobileBERT, ...) provides an ``nn.Module`` with

- ``embeddings(input_ids, token_type_ids) -> hidden``           [B, S, H]
- ``layers``: an ``nn.ModuleList`` whose items are called as
  ``layer(hidden, key_mask, query_index=None, output_attentions=False) -> LayerOutput``.
  ``key_mask`` is a boolean [B, 1, 1, S] mask (True = attend) or None. When
  ``query_index`` [B, K] is given, only those positions are queries (and residuals);
  keys and values still come from all S positions, and the output has length K.
  This is the "split layer" of token dropping (Hou et al. 2022, Sec. 3.1).
- ``pooler(hidden) -> pooled`` or ``None``
- ``forward(input_ids, attention_mask, token_type_ids, router=None, output_hidden_states,
  output_attentions) -> EncoderOutput``

A ``router`` (see :class:`LayerRouter`) is the hook point for moving tokens between layers;
the encoder calls it around every layer and knows nothing about why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Annotated, Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field, field_validator, model_validator
from torch import nn

from leanbert.config import StrictConfig

HeadName = Literal["mlm", "nsp", "classifier", "span_qa"]


def _positive(v: int) -> int:
    if v < 1:
        raise ValueError("must be a positive integer")
    return v


# A size or count: a positive integer.
Size = Annotated[int, AfterValidator(_positive)]


class EncoderConfigBase(StrictConfig):
    """Fields shared by every encoder family: vocabulary, positions, heads and task outputs."""

    model_type: str
    vocab_size: Size = 30522
    max_position_embeddings: Size = 512
    type_vocab_size: Size = 2
    pad_token_id: int = 0
    initializer_range: float = 0.02
    heads: list[HeadName] = Field(default_factory=lambda: ["mlm"])
    num_labels: Size = 2
    problem_type: Literal["single_label_classification", "regression"] = (
        "single_label_classification"
    )
    classifier_dropout: Probability | None = None
    # transformers.Trainer leaves these outputs out of its evaluation predictions (its
    # PretrainedConfig convention; a list, as Trainer adds one), so that they hold the logits only.
    keys_to_ignore_at_inference: ClassVar[list[str]] = [
        "last_hidden_state", "pooled_output", "hidden_states", "attention_scores", "attention_probs",
        "mlm_loss", "nsp_loss", "task_loss", "mlm_token_loss", "mlm_label_ids"]
    # transformers.Trainer sets config.use_cache (a decoder's KV cache; encoders have none):
    # accepted, never saved.
    use_cache: bool = Field(False, exclude=True)

    @field_validator("heads")
    @classmethod
    def _unique_heads(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each head may be listed once")
        return v

    @model_validator(mode="after")
    def _check_shared(self) -> EncoderConfigBase:
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id {self.pad_token_id} is outside the vocabulary (size {self.vocab_size})")
        if self.problem_type == "regression" and "classifier" in self.heads and self.num_labels != 1:
            raise ValueError("a regression classifier needs num_labels: 1")
        return self


# A dropout probability: 0 <= p < 1.
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]


@dataclass
class LayerOutput:
    """One layer's result: hidden states and (on request) attention scores and probabilities."""

    hidden: torch.Tensor
    attention_scores: torch.Tensor | None = None  # [B, heads, Q, S] before softmax (mask added)
    attention_probs: torch.Tensor | None = None  # [B, heads, Q, S] after softmax


@dataclass
class EncoderOutput:
    last_hidden_state: torch.Tensor
    pooled_output: torch.Tensor | None = None
    embedding_output: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None  # per-layer block outputs (layer 1..L)
    attention_scores: list[torch.Tensor] | None = None
    attention_probs: list[torch.Tensor] | None = None


@dataclass(eq=False)
class ModelOutput(dict):
    """What ``model(input_ids, ...)`` returns. Fields are None when not computed.

    ``mlm_logits`` is [B, S, V] at inference (no labels). With MLM labels it holds only the
    predicted positions: [M, V] for full-length labels, [B, P, V] for compact positions.
    ``mlm_token_loss`` / ``mlm_label_ids`` are the per-prediction losses and their original
    token ids (-100 for padding slots), which token dropping uses to score tokens.

    It also reads like transformers' ``ModelOutput`` (a dict of the fields that are not None,
    in field order): ``out.loss``, ``out["loss"]``, ``out[0]`` (the first field that is set:
    the loss when labels were given, else the task's logits, else ``last_hidden_state``),
    ``out.to_tuple()``, ``out.keys()``; ``transformers.Trainer`` reads ``out["loss"]``.
    ``extras`` (side outputs such as ``embedding_output``) is an attribute only, not a key.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None
    end_logits: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    nsp_logits: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    hidden_states: list[torch.Tensor] | None = None
    attention_scores: list[torch.Tensor] | None = None
    attention_probs: list[torch.Tensor] | None = None
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None
    task_loss: torch.Tensor | None = None
    mlm_token_loss: torch.Tensor | None = None
    mlm_label_ids: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        order = _OUTPUT_KEYS.get(name)
        if order is None:  # extras, or a non-field attribute
            return
        if value is None:
            dict.pop(self, name, None)
        elif name in self or not self or _OUTPUT_KEYS[next(reversed(self))] < order:
            dict.__setitem__(self, name, value)  # already a key, or it goes last: order kept
        else:  # a field set after later ones: rebuild so that the keys stay in field order
            present = {k: getattr(self, k) for k in _OUTPUT_KEYS if k in self or k == name}
            dict.clear(self)
            dict.update(self, present)

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return self.to_tuple()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _OUTPUT_KEYS:
            raise KeyError(f"{key!r} is not a field of ModelOutput ({', '.join(_OUTPUT_KEYS)})")
        setattr(self, key, value)

    def _immutable(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("a ModelOutput's keys follow its fields: set or clear a field instead (out.loss = None)")

    __delitem__ = pop = popitem = setdefault = update = clear = _immutable

    def to_tuple(self) -> tuple[Any, ...]:
        """The values that are not None, in field order (transformers' ``to_tuple``)."""
        return tuple(dict.values(self))


_OUTPUT_KEYS = {f.name: i for i, f in enumerate(fields(ModelOutput)) if f.name != "extras"}


class LayerRouter(Protocol):
    """Hook that moves tokens between layers (token dropping implements it).

    ``before_layer`` may shrink or restore the sequence and returns the (hidden, key_mask,
    query_index) the layer runs with; ``after_layer`` sees the layer output; ``finish`` returns
    the full-length final hidden states.
    """

    def before_layer(
        self, index: int, hidden: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]: ...

    def after_layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor: ...

    def finish(self, hidden: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Packing:
    """The real tokens of a padded batch, packed into one ``[N, ...]`` tensor.

    Everything in a Transformer layer except attention works token by token, so it can run on
    the N real tokens instead of the B x S padded ones; attention unpacks to ``[B, S, ...]``
    (zeros at the padding, which the key mask hides) and packs its output again. On GLUE-style
    batches padded to their longest sentence, about two thirds of the tokens are padding
    (SST-2), so the linear layers do a third of the work. ``index`` holds the flat positions
    (into B x S) of the real tokens, in order.
    """

    index: torch.Tensor
    batch: int
    seq_len: int

    @classmethod
    def of(cls, attention_mask: torch.Tensor) -> Packing | None:
        """The packing of a [B, S] 1/0 mask, or None when nothing is padding."""
        flat = attention_mask.reshape(-1).to(torch.bool)
        index = flat.nonzero().squeeze(1)
        if index.numel() == flat.numel():
            return None
        return cls(index, attention_mask.shape[0], attention_mask.shape[1])

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, ...] -> [N, ...]"""
        return x.reshape(self.batch * self.seq_len, *x.shape[2:]).index_select(0, self.index)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[N, ...] -> [B, S, ...], zeros at the padding."""
        out = x.new_zeros(self.batch * self.seq_len, *x.shape[1:]).index_copy(0, self.index, x)
        return out.view(self.batch, self.seq_len, *x.shape[1:])


def key_padding_mask(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """[B, S] 1/0 mask -> boolean [B, 1, 1, S] (True = attend) for scaled_dot_product_attention."""
    if attention_mask is None:
        return None
    return attention_mask.to(torch.bool)[:, None, None, :]


def gather_positions(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden [B, S, H], index [B, K] -> [B, K, H]."""
    return torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


@dataclass(frozen=True)
class ModelFamily:
    """Registry entry for one encoder family. ``layer_flops(config, n_queries, n_keys)`` is
    the forward FLOPs of one layer's matrix products with ``n_queries`` query rows and
    ``n_keys`` key/value rows (for MFU and the token-dropping ideal, SPEC Sec. 5)."""

    name: str
    config_cls: type
    encoder_cls: type
    mlm_head_cls: type
    layer_flops: Callable[[Any, int, int], int]


class TiedLinear(nn.Module):
    """``F.linear(x, weight, bias)`` with the weight passed in at call time: the MLM decoder
    tied to the word embeddings (stored once, not copied). A module, so that speed-ups can
    replace the product (:mod:`leanbert.speedups`)."""

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(x, weight, bias)


def linear_slice(layer: nn.Linear, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """``layer(x)[..., start:stop]``, computing only those output features (the queries of a
    fused QKV projection at the kept rows, token dropping's split layer). A layer that offers
    ``forward_slice`` (the oneDNN speed-up) computes it itself."""
    own = getattr(layer, "forward_slice", None)
    if own is not None:
        return own(x, start, stop)
    bias = None if layer.bias is None else layer.bias[start:stop]
    return F.linear(x, layer.weight[start:stop], bias)


def run_layers(
    layers: nn.ModuleList,
    hidden: torch.Tensor,
    key_mask: torch.Tensor | None,
    router: LayerRouter | None,
    output_hidden_states: bool,
    output_attentions: bool,
    packing: Packing | None = None,
    checkpointed: bool = False,
) -> tuple[torch.Tensor, list | None, list | None, list | None]:
    """The layer loop shared by encoder families, with the router hook around each layer
    (``packing``: the layers run on packed real tokens, see :class:`Packing`).

    ``checkpointed``: activation (gradient) checkpointing per layer (Chen et al. 2016,
    "Training Deep Nets with Sublinear Memory Cost", Sec. 3): each layer keeps only its input
    for the backward pass and recomputes its activations there (non-reentrant
    ``torch.utils.checkpoint``, which replays the RNG state, so dropout masks and gradients are
    the same). Taken only while gradients are recorded. The router runs outside the
    checkpointed call, so token dropping routes exactly as without it."""
    all_hidden = [] if output_hidden_states else None
    all_scores = [] if output_attentions else None
    all_probs = [] if output_attentions else None
    packed = {} if packing is None else {"packing": packing}
    recompute = checkpointed and torch.is_grad_enabled()
    if recompute:
        from torch.utils.checkpoint import checkpoint
    for i, layer in enumerate(layers):
        query_index = None
        if router is not None:
            hidden, key_mask, query_index = router.before_layer(i, hidden, key_mask)
        if recompute:
            out = checkpoint(layer, hidden, key_mask, query_index, output_attentions, use_reentrant=False,
                             **packed)
        else:
            out = layer(hidden, key_mask, query_index, output_attentions, **packed)
        hidden = out.hidden
        if router is not None:
            hidden = router.after_layer(i, hidden)
        if all_hidden is not None:
            all_hidden.append(hidden)
        if all_scores is not None:
            all_scores.append(out.attention_scores)
            all_probs.append(out.attention_probs)
    if router is not None:
        hidden = router.finish(hidden)
    return hidden, all_hidden, all_scores, all_probs


class EncoderBase(nn.Module):
    """The forward pass every encoder family shares: embeddings, the layer loop with the router
    hook, the pooler. A family's ``__init__`` sets ``config``, ``embeddings``, ``layers`` and
    ``pooler`` (or None); a family whose layers take ``packing=`` sets ``supports_packing``."""

    config: EncoderConfigBase
    embeddings: nn.Module
    layers: nn.ModuleList
    pooler: nn.Module | None
    supports_packing = False
    # Set by set_activation_checkpointing (a training setting applied to a built model, not config).
    activation_checkpointing = False

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        router: LayerRouter | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
        packed: bool = False,
    ) -> EncoderOutput:
        """``packed``: run the layers on the real tokens only (:class:`Packing`; padded positions
        of ``last_hidden_state`` are then zeros). Taken when the family supports it, the batch
        has padding, and no router or per-layer outputs are asked for."""
        emb = self.embeddings(input_ids, token_type_ids)
        packing = None
        if (packed and self.supports_packing and attention_mask is not None and router is None
                and not output_hidden_states and not output_attentions):
            packing = Packing.of(attention_mask)
        hidden, all_hidden, scores, probs = run_layers(
            self.layers, emb if packing is None else packing.pack(emb), key_padding_mask(attention_mask), router,
            output_hidden_states, output_attentions, packing, self.activation_checkpointing,
        )
        if packing is not None:
            hidden = packing.unpack(hidden)
        pooled = self.pooler(hidden) if self.pooler is not None else None
        return EncoderOutput(hidden, pooled, emb if output_hidden_states else None, all_hidden, scores, probs)


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Turn per-layer activation checkpointing on (or off) in every leanbert encoder inside
    ``model`` (see :func:`run_layers`); returns how many encoders it changed. Memory for the
    layers' activations falls from O(L) layers' worth to one layer's plus the L layer inputs,
    for about one extra forward pass of compute."""
    count = 0
    for module in model.modules():
        if isinstance(module, EncoderBase):
            module.activation_checkpointing = bool(enabled)
            count += 1
    return count
