"""Token dropping for cheaper BERT pretraining (Hou et al., "Token Dropping for Efficient
BERT Pretraining", ACL 2022, arXiv:2203.13240).

Method card
-----------
**What it does.** The middle layers of the encoder process only the ``k`` most important
tokens of each sequence; the last layer picks the dropped tokens up again, so the model
still produces full-length outputs and is, after pretraining, a plain BERT (Sec. 3).
With the reference layout for ``L`` layers (``L=12``):

- layers ``0 .. L/2-2`` run on all ``n`` tokens;
- layer ``L/2-1`` is the *split layer*: its queries (and residuals) are the ``k`` kept
  tokens, its keys and values all ``n`` tokens, so kept tokens see the dropped ones once;
- layers ``L/2 .. L-2`` run on the ``k`` kept tokens only (key mask restricted to them);
- before layer ``L-1`` the dropped tokens' hidden states, *as they were when dropped*
  (the split layer's input), are put back at their positions, and the last layer runs on all.

Importance is free (Sec. 3): a table with one score per vocabulary id, initialised to
``score_init``, is updated after each step with the per-position MLM losses,
``score[t] = beta*score[t] + (1-beta)*loss`` keyed by the *original* (label) id ``t``; the
routing looks scores up by the *input* id at each position and keeps the top ``k``.

**When it helps.** Pretraining on long sequences (n=512) with MLM: dropping half the tokens
in half the layers cuts encoder FLOPs by ~25% (attention falls more than linearly) at similar
GLUE / SQuAD scores after fine-tuning (Sec. 4). Fine-tuning, evaluation and
inference never drop (the trainer asks :meth:`TokenDropping.router_for` and gets ``None``).
Short sequences or tiny models save less, since the MLM head, embeddings and optimizer
step are not dropped.

**Knobs** (:class:`TokenDroppingConfig`): ``method`` (``token`` = importance, ``random`` =
the paper's random baseline with the same routing, ``none``), ``keep`` (count or fraction of
the padded length), ``drop_start_layer`` / ``drop_end_layer``, ``score_init``, ``beta``,
``allow_ids`` / ``deny_ids``, ``keep_masked_positions``, ``final_full_phase`` (last steps
without dropping), ``evaluate_with_dropping``.

**Differences from the reference code** (TF Model Garden ``projects/token_dropping``):

- Reference bug 1: padded prediction slots (label id 0, weight 0) update the [PAD] score.
  Here padded slots carry label -100 and never enter the update.
- Reference bug 2: several occurrences of one id in a batch overwrite each other in the
  scatter update (one arbitrary loss wins). Here losses are summed and counted per id
  (``index_add``) and the moving average is applied once with the per-id mean.
- The reference writes +/-1e4 for the allow / deny lists into the *initial* table only, so
  the moving average erodes them ([PAD] reaches the normal range after ~1,840 steps).
  Here allow / deny are re-applied at every routing decision; padding is never kept
  (unless fewer than ``k`` real tokens exist, see below) and never enters the update.
- Prediction positions follow the reference by default: only inputs equal to [MASK] are
  always kept (through the allow list); the 10% random and 10% unchanged replacements
  compete on score like other tokens (the last layer sees every token again, so the MLM
  loss does not need them kept). ``keep_masked_positions: true`` keeps every prediction
  position (counted inside ``k``): it also tells the middle layers which positions are
  targets, since a frequent word then survives only when it is one.
- Kept tokens are in position order (the reference orders them by score); attention has
  no position bias, so this is equivalent and keeps outputs easy to read.
- Drop layers are configuration; evaluation does not drop unless asked; the score table is
  identical across data-parallel ranks (per-id sums and counts are all-reduced before the
  update; the reference updates per replica) and is saved with training checkpoints.

**Outputs.** ``last_hidden_state`` is full length. With ``output_hidden_states`` the
per-layer states of the split layer and the layers after it up to the restore have length
``k`` (the kept tokens, in position order; ``router.kept_index`` says which).

**Random dropping** draws from torch's global RNG (or ``generator=``), so the trainer's RNG
state, saved with checkpoints, makes it reproducible.

**Static shapes.** ``k`` is fixed per batch (a count, or ``round(fraction * padded length)``).
A sequence with fewer than ``k`` real tokens keeps all of them plus some padding positions,
chosen last; those stay masked out as keys, so they change nothing for the real tokens.

Trainer contract (see :class:`TokenDropping`)::

    td = TokenDropping(cfg.token_dropping, model.config, total_steps=cfg.steps)
    td.load_state_dict(extra)                        # on resume
    router = td.router_for(batch, step)              # None when not dropping this step
    out = model(**batch, router=router)
    out.loss.backward(); optimizer.step()
    td.update_scores(out)                            # every step, on every rank
    eval_router = td.router_for(batch, None, training=False)   # None unless evaluate_with_dropping
    extra_tensors = td.state_dict()                  # into the training checkpoint
    rows = td.layer_rows(seq_len, step)              # per-layer (queries, keys) for the FLOP count
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field, StrictFloat, StrictInt, field_validator, model_validator

from leanbert.config import StrictConfig
from leanbert.errors import CheckpointError, ConfigError

IGNORE_INDEX = -100

# BERT uncased vocabulary: [PAD]=0, [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
BERT_UNCASED_ALLOW_IDS = (100, 101, 102, 103)
BERT_UNCASED_DENY_IDS = (0,)
ALLOW_TOKENS = ("[UNK]", "[CLS]", "[SEP]", "[MASK]")
DENY_TOKENS = ("[PAD]",)

__all__ = [
    "TokenDroppingConfig",
    "TokenScores",
    "TokenDroppingRouter",
    "TokenDropping",
    "DropPlan",
    "build_router",
    "resolve_drop_layers",
    "keep_count",
    "prediction_mask",
    "token_priority",
    "keep_tokens",
    "final_phase_start",
]


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropPlan:
    """Which layers drop tokens and how many tokens stay.

    ``start`` is the split layer (its queries are the kept tokens, its keys all tokens);
    layers ``start+1 .. end-1`` run on the ``keep`` kept tokens only; layer ``end`` (if
    ``end < num_layers``) runs on all tokens again, the dropped ones restored.
    The reference (Hou et al. 2022) uses ``start = L/2 - 1``, ``end = L - 1``.
    """

    start: int
    end: int
    keep: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"drop plan needs 0 <= start < end, got start={self.start}, end={self.end}")
        if self.keep < 1:
            raise ValueError(f"drop plan needs keep >= 1, got {self.keep}")

    def rows(self, num_layers: int, seq_len: int) -> list[tuple[int, int]]:
        """(query rows, key rows) of each layer for a batch padded to ``seq_len`` (the input
        of :func:`leanbert.models.flops.encoder_flops`)."""
        if self.end > num_layers:
            raise ValueError(f"drop plan end {self.end} is beyond the model's {num_layers} layers")
        n, k = seq_len, min(self.keep, seq_len)
        out = []
        for i in range(num_layers):
            if i == self.start:
                out.append((k, n))  # the split layer
            elif self.start < i < self.end:
                out.append((k, k))
            else:
                out.append((n, n))
        return out


class TokenDroppingConfig(StrictConfig):
    """Token dropping settings (defaults = the reference, Hou et al. 2022, Sec. 4).

    ``method: none`` (the default) trains plain BERT; ``token`` drops by importance;
    ``random`` keeps random tokens (the paper's baseline) with the same routing.
    ``allow_ids`` / ``deny_ids`` default to the BERT uncased vocabulary; for another
    tokenizer use :meth:`with_special_ids`.
    """

    method: Literal["none", "token", "random"] = "none"
    # Tokens kept in the dropping layers: an int is a count, a float a fraction of the
    # padded sequence length (rounded half up). The reference keeps 256 of 512.
    keep: StrictInt | StrictFloat = 0.5
    # The split layer (queries = kept tokens, keys = all); None = L/2 - 1.
    drop_start_layer: int | None = None
    # The layer where the dropped tokens rejoin (runs on all tokens again); None = L - 1.
    # Layers drop_start_layer+1 .. drop_end_layer-1 run on the kept tokens only.
    # drop_end_layer = L restores the dropped tokens after the last layer.
    drop_end_layer: int | None = None
    score_init: float = 10.0
    beta: float = Field(0.995, ge=0.0, lt=1.0)
    allow_ids: list[int] = Field(default_factory=lambda: list(BERT_UNCASED_ALLOW_IDS))
    deny_ids: list[int] = Field(default_factory=lambda: list(BERT_UNCASED_DENY_IDS))
    # False = the reference: only [MASK] inputs are always kept (allow list); True keeps every
    # prediction position (10% random / 10% unchanged ones too).
    keep_masked_positions: bool = False
    # Last steps trained without dropping: an int is a number of steps, a float a fraction.
    final_full_phase: StrictInt | StrictFloat = 0
    evaluate_with_dropping: bool = False

    @field_validator("keep")
    @classmethod
    def _check_keep(cls, v: int | float) -> int | float:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("a token count must be >= 1 (or give a fraction such as 0.5)")
        elif not 0.0 < v <= 1.0:
            raise ValueError("a fraction of tokens must be in (0, 1] (or give a count such as 256)")
        return v

    @field_validator("final_full_phase")
    @classmethod
    def _check_final(cls, v: int | float) -> int | float:
        if isinstance(v, int):
            if v < 0:
                raise ValueError("a number of final steps must be >= 0")
        elif not 0.0 <= v < 1.0:
            raise ValueError("a fraction of the steps must be in [0, 1)")
        return v

    @field_validator("drop_start_layer", "drop_end_layer")
    @classmethod
    def _check_layer(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("a layer index must be >= 0")
        return v

    @field_validator("allow_ids", "deny_ids")
    @classmethod
    def _check_ids(cls, v: list[int]) -> list[int]:
        if any(i < 0 for i in v):
            raise ValueError("token ids must be >= 0")
        return sorted(set(v))

    @field_validator("score_init")
    @classmethod
    def _check_init(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @model_validator(mode="after")
    def _check_together(self) -> TokenDroppingConfig:
        s, e = self.drop_start_layer, self.drop_end_layer
        if s is not None and e is not None and s >= e:
            raise ValueError(
                f"token_dropping: drop_start_layer ({s}) must be smaller than drop_end_layer ({e}); "
                "layers start .. end-1 drop tokens and layer end runs on all tokens again"
            )
        both = set(self.allow_ids) & set(self.deny_ids)
        if both:
            raise ValueError(f"token_dropping: ids {sorted(both)} are in both allow_ids and deny_ids")
        return self


    def with_special_ids(self, special: Mapping[str, int]) -> TokenDroppingConfig:
        """A copy with allow / deny lists from a tokenizer's special-token ids (as
        :func:`leanbert.data.tokenizer.special_token_ids` returns them: ``{"[PAD]": 0, ...}``),
        except where the user set the lists explicitly."""
        update: dict[str, list[int]] = {}
        if "allow_ids" not in self.model_fields_set:
            update["allow_ids"] = sorted({special[t] for t in ALLOW_TOKENS if t in special})
        if "deny_ids" not in self.model_fields_set:
            update["deny_ids"] = sorted({special[t] for t in DENY_TOKENS if t in special})
        return self.model_copy(update=update)


def resolve_drop_layers(config: TokenDroppingConfig, num_layers: int) -> tuple[int, int]:
    """(start, end) for a model with ``num_layers`` layers; defaults as the reference."""
    if num_layers < 2:
        raise ConfigError(f"token dropping needs a model with at least 2 layers, this one has {num_layers}")
    start = num_layers // 2 - 1 if config.drop_start_layer is None else config.drop_start_layer
    end = num_layers - 1 if config.drop_end_layer is None else config.drop_end_layer
    if not start < num_layers:
        raise ConfigError(
            f"token_dropping.drop_start_layer {start} is out of range for a {num_layers}-layer model; "
            f"choose 0 .. {num_layers - 1}"
        )
    if not end <= num_layers:
        raise ConfigError(
            f"token_dropping.drop_end_layer {end} is out of range for a {num_layers}-layer model; "
            f"choose {start + 1} .. {num_layers} (default {num_layers - 1})"
        )
    if start >= end:
        raise ConfigError(
            f"token_dropping.drop_start_layer ({start}) must be smaller than drop_end_layer ({end}) "
            f"for a {num_layers}-layer model"
        )
    return start, end


def keep_count(keep: int | float, seq_len: int) -> int:
    """The fixed number of kept tokens ``k`` for a batch padded to ``seq_len``."""
    if isinstance(keep, int):
        if keep > seq_len:
            raise ConfigError(
                f"token_dropping.keep {keep} is larger than the sequence length {seq_len}; "
                f"keep at most {seq_len} tokens or give a fraction such as 0.5"
            )
        return keep
    return min(seq_len, max(1, math.floor(keep * seq_len + 0.5)))


def final_phase_start(final_full_phase: int | float, total_steps: int | None) -> int | None:
    """First step (0-based) of the final phase without dropping, or None if there is none."""
    if not final_full_phase:
        return None
    if total_steps is None:
        raise ConfigError("token_dropping.final_full_phase needs the total number of training steps")
    if isinstance(final_full_phase, int):
        return max(0, total_steps - final_full_phase)
    return max(0, total_steps - math.floor(final_full_phase * total_steps + 0.5))


# --------------------------------------------------------------------------------------
# Importance scores
# --------------------------------------------------------------------------------------


def _default_all_reduce(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


class TokenScores:
    """One importance score per vocabulary id: the moving average of its MLM loss (Sec. 3).

    Losses are keyed by the ORIGINAL token id (the MLM label). Within one update, all
    occurrences of an id are averaged first (sum and count per id), then
    ``score = beta*score + (1-beta)*mean_loss`` is applied once per id seen. Prediction
    slots with label -100 (padding) and non-finite losses are ignored.

    For gradient accumulation, :meth:`record` each micro-batch and :meth:`step` once per
    optimizer step; :meth:`update` does both. With data parallelism, :meth:`step` sums the
    per-id sums and counts over ranks first, so all ranks keep identical tables; every rank
    must then call it at the same points.
    """

    def __init__(
        self,
        vocab_size: int,
        init: float = 10.0,
        beta: float = 0.995,
        device: torch.device | str | None = None,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.vocab_size = vocab_size
        self.beta = beta
        self.scores = torch.full((vocab_size,), float(init), dtype=torch.float32, device=device)
        self.num_updates = 0
        self._all_reduce = all_reduce or _default_all_reduce
        self._stats: torch.Tensor | None = None  # [2, V]: per-id loss sums, counts

    def to(self, device: torch.device | str) -> TokenScores:
        self.scores = self.scores.to(device)
        if self._stats is not None:
            self._stats = self._stats.to(device)
        return self

    def lookup(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Scores at each input position: [B, S] float."""
        return self.scores[input_ids]

    def record(self, label_ids: torch.Tensor, losses: torch.Tensor) -> None:
        """Add per-prediction losses [M] with their original ids [M] (-100 = padding slot)."""
        label_ids = label_ids.reshape(-1).to(self.scores.device)
        losses = losses.detach().reshape(-1).to(device=self.scores.device, dtype=torch.float32)
        valid = (label_ids >= 0) & (label_ids < self.vocab_size) & torch.isfinite(losses)
        ids = torch.where(valid, label_ids, torch.zeros_like(label_ids))
        if self._stats is None:
            self._stats = torch.zeros(2, self.vocab_size, dtype=torch.float32, device=self.scores.device)
        self._stats[0].index_add_(0, ids, torch.where(valid, losses, torch.zeros_like(losses)))
        self._stats[1].index_add_(0, ids, valid.to(torch.float32))

    def step(self) -> None:
        """Reduce the recorded statistics across ranks and apply the moving average."""
        if self._stats is None:
            self._stats = torch.zeros(2, self.vocab_size, dtype=torch.float32, device=self.scores.device)
        stats = self._all_reduce(self._stats)
        sums, counts = stats[0], stats[1]
        seen = counts > 0
        mean = sums / counts.clamp(min=1.0)
        self.scores = torch.where(seen, self.beta * self.scores + (1.0 - self.beta) * mean, self.scores)
        self.num_updates += 1
        self._stats = None

    def update(self, label_ids: torch.Tensor, losses: torch.Tensor) -> None:
        self.record(label_ids, losses)
        self.step()

    def broadcast(self, src: int = 0) -> None:
        """Copy rank ``src``'s table to all ranks (only if torch.distributed is initialised)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast(self.scores, src=src)


# --------------------------------------------------------------------------------------
# Choosing the kept tokens (functional core)
# --------------------------------------------------------------------------------------


def prediction_mask(
    seq_len: int, labels: torch.Tensor | None, mlm_positions: torch.Tensor | None = None
) -> torch.Tensor | None:
    """[B, S] bool: True where an MLM prediction is made.

    ``labels`` is [B, S] (-100 = no prediction), or [B, P] together with ``mlm_positions``
    [B, P] (compact list; slots with label -100 are padding and mark nothing).
    """
    if labels is None:
        return None
    if mlm_positions is None:
        return labels != IGNORE_INDEX
    counts = torch.zeros(labels.shape[0], seq_len, dtype=torch.int32, device=labels.device)
    # scatter_add, not scatter: padded slots often point at position 0 and must not
    # overwrite a real prediction there.
    counts.scatter_add_(1, mlm_positions, (labels != IGNORE_INDEX).to(torch.int32))
    return counts > 0


def token_priority(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scores: torch.Tensor,
    allow: torch.Tensor,
    deny: torch.Tensor,
    must_keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B, S] float priority: higher is kept first.

    ``scores`` [B, S] (importance, or random numbers for random dropping); ``allow`` /
    ``deny`` are [V] bool lookup tables. Tiers, re-applied at every decision: allow-listed
    ids and ``must_keep`` positions (+inf), ordinary tokens (their score), deny-listed ids
    (the lowest finite float), padding (-inf). Deny wins over allow and over ``must_keep``.
    """
    forced = allow[input_ids]
    if must_keep is not None:
        forced = forced | must_keep
    lowest = torch.finfo(scores.dtype).min
    priority = scores.masked_fill(forced, math.inf)
    priority = priority.masked_fill(deny[input_ids], lowest)
    if attention_mask is not None:
        priority = priority.masked_fill(attention_mask == 0, -math.inf)
    return priority


def keep_tokens(priority: torch.Tensor, k: int) -> torch.Tensor:
    """Positions [B, k] of the ``k`` highest-priority tokens, in position order.

    Ties go to the lower position (stable sort), so e.g. more than ``k`` forced tokens keep
    the first ``k`` of them, and padding, when it must fill up ``k``, comes from the front.
    """
    order = torch.sort(priority, dim=1, descending=True, stable=True).indices
    return order[:, :k].sort(dim=1).values


# --------------------------------------------------------------------------------------
# The router: moves tokens between layers (implements leanbert.models.base.LayerRouter)
# --------------------------------------------------------------------------------------


class TokenDroppingRouter:
    """Routes one forward pass: split at ``start``, kept-only until ``end``, restore at ``end``.

    Works with any encoder following the interface in :mod:`leanbert.models.base`: the
    split layer is a layer called with ``query_index=kept_index``; the layers in between get
    the hidden states of the kept tokens and the key mask gathered at the kept positions;
    before layer ``end`` (or in :meth:`finish` if ``end == L``) the kept tokens' states are
    scattered into the split layer's input, so dropped tokens come back exactly as they were.
    """

    def __init__(self, kept_index: torch.Tensor, start: int, end: int) -> None:
        if kept_index.dim() != 2:
            raise ValueError("kept_index must be [batch, k]")
        self.kept_index = kept_index
        self.start = start
        self.end = end
        self._full: torch.Tensor | None = None  # split layer input: all tokens as dropped
        self._full_mask: torch.Tensor | None = None
        self._kept_mask: torch.Tensor | None = None
        self._restored = False

    @property
    def num_kept(self) -> int:
        return self.kept_index.shape[1]

    def _restore(self, hidden: torch.Tensor) -> torch.Tensor:
        assert self._full is not None, "restore before the split layer ran"
        index = self.kept_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        full = self._full.scatter(1, index, hidden.to(self._full.dtype))
        self._full = None
        self._restored = True
        return full

    def before_layer(
        self, index: int, hidden: torch.Tensor, key_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if index == self.start:
            self._full, self._full_mask, self._restored = hidden, key_mask, False
            if key_mask is not None:
                kept = self.kept_index[:, None, None, :].expand(*key_mask.shape[:3], -1)
                self._kept_mask = key_mask.gather(-1, kept)
            else:
                self._kept_mask = None
            return hidden, key_mask, self.kept_index
        if self.start < index < self.end:
            return hidden, self._kept_mask, None
        if index == self.end:
            return self._restore(hidden), self._full_mask, None
        return hidden, key_mask, None

    def after_layer(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def finish(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._full is not None and not self._restored:
            return self._restore(hidden)
        return hidden


def build_router(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scores: torch.Tensor,
    allow: torch.Tensor,
    deny: torch.Tensor,
    k: int,
    start: int,
    end: int,
    must_keep: torch.Tensor | None = None,
) -> TokenDroppingRouter:
    """A router for one batch from per-position ``scores`` [B, S] (see :func:`token_priority`)."""
    priority = token_priority(input_ids, attention_mask, scores, allow, deny, must_keep)
    return TokenDroppingRouter(keep_tokens(priority, k), start, end)


# --------------------------------------------------------------------------------------
# Trainer adapter
# --------------------------------------------------------------------------------------


class TokenDropping:
    """Token dropping plugged into the pretraining loop.

    Build once per run with the model's config (for L and the vocabulary size) and the
    total number of optimizer steps (for ``final_full_phase``). Per step:

    - ``router = td.router_for(batch, step)``: a :class:`TokenDroppingRouter` or None
      (method ``none``, final full phase, or evaluation with ``training=False``); pass it
      to ``model(..., router=router)``. ``batch`` holds ``input_ids`` and optionally
      ``attention_mask``, ``labels`` and ``mlm_positions`` (the model's argument names).
    - ``td.update_scores(out)`` after the forward (or step) with the model output; every
      data-parallel rank must call it each step (it all-reduces). With gradient
      accumulation call ``td.record_losses(out)`` per micro-batch and
      ``td.apply_recorded()`` once per optimizer step instead.
    - ``td.state_dict()`` / ``td.load_state_dict(tensors)``: plain tensors for checkpoints.
    - ``td.layer_rows(seq_len, step)``: the rows each layer runs on, for the analytic FLOPs.
    """

    STATE_PREFIX = "token_dropping."

    def __init__(
        self,
        config: TokenDroppingConfig | Mapping[str, Any] | None,
        model_config: Any,
        *,
        total_steps: int | None = None,
        device: torch.device | str | None = None,
        all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if config is None:
            config = TokenDroppingConfig()
        elif isinstance(config, Mapping):
            from leanbert.config import validate

            config = validate(TokenDroppingConfig, config, "token_dropping")
        self.config = config
        self.model_config = model_config
        num_layers = getattr(model_config, "num_layers", None)
        if num_layers is None:
            raise ConfigError(f"token dropping needs a model config with num_layers, got {type(model_config).__name__}")
        self.num_layers = int(num_layers)
        self.vocab_size = int(model_config.vocab_size)
        self.total_steps = total_steps
        # Model-dependent checks only when dropping: method none works with any model.
        self.start, self.end = resolve_drop_layers(config, self.num_layers) if self.enabled else (0, 1)
        for name in ("allow_ids", "deny_ids") if self.enabled else ():
            bad = [i for i in getattr(config, name) if i >= self.vocab_size]
            if bad:
                raise ConfigError(
                    f"token_dropping.{name} {bad} are outside the vocabulary (size {self.vocab_size}); "
                    "pass the special-token ids of your tokenizer"
                )
        self.final_start = final_phase_start(config.final_full_phase, total_steps) if self.enabled else None
        self.scores = TokenScores(self.vocab_size, config.score_init, config.beta, device, all_reduce)
        self._allow = self._table(config.allow_ids if self.enabled else [], device)
        self._deny = self._table(config.deny_ids if self.enabled else [], device)

    def _table(self, ids: Sequence[int], device: torch.device | str | None) -> torch.Tensor:
        table = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
        if ids:
            table[torch.tensor(list(ids), dtype=torch.long, device=device)] = True
        return table

    def to(self, device: torch.device | str) -> TokenDropping:
        self.scores.to(device)
        self._allow = self._allow.to(device)
        self._deny = self._deny.to(device)
        return self

    @property
    def enabled(self) -> bool:
        return self.config.method != "none"

    def dropping_at(self, step: int | None) -> bool:
        """Whether training step ``step`` (0-based; None = any step) drops tokens."""
        if not self.enabled:
            return False
        return step is None or self.final_start is None or step < self.final_start

    def plan(self, seq_len: int) -> DropPlan:
        """The layers and the fixed kept count for batches padded to ``seq_len``."""
        return DropPlan(self.start, self.end, keep_count(self.config.keep, seq_len))

    def router_for(
        self,
        batch: Mapping[str, torch.Tensor | None],
        step: int | None,
        *,
        training: bool = True,
        generator: torch.Generator | None = None,
    ) -> TokenDroppingRouter | None:
        """The router for this batch, or None when this forward pass does not drop tokens."""
        if training and not self.dropping_at(step):
            return None
        if not training and not (self.enabled and self.config.evaluate_with_dropping):
            return None
        input_ids = batch["input_ids"]
        attention_mask = batch.get("attention_mask")
        seq_len = input_ids.shape[1]
        k = keep_count(self.config.keep, seq_len)
        device = input_ids.device
        if self._allow.device != device:
            self.to(device)
        must_keep = None
        if self.config.keep_masked_positions:
            must_keep = prediction_mask(seq_len, batch.get("labels"), batch.get("mlm_positions"))
        if self.config.method == "random":
            scores = torch.rand(input_ids.shape, device=device, generator=generator)
        else:
            scores = self.scores.lookup(input_ids)
        return build_router(input_ids, attention_mask, scores, self._allow, self._deny, k,
                            self.start, self.end, must_keep)

    # Scores ------------------------------------------------------------------------

    def record_losses(self, output: Any) -> None:
        """Accumulate ``output.mlm_token_loss`` by ``output.mlm_label_ids`` (no update yet)."""
        if self.config.method != "token":
            return
        if output.mlm_token_loss is None or output.mlm_label_ids is None:
            raise ValueError("token dropping needs the per-token MLM loss: call the model with MLM labels")
        self.scores.record(output.mlm_label_ids, output.mlm_token_loss)

    def apply_recorded(self) -> None:
        """All-reduce the recorded per-id sums and counts and apply the moving average."""
        if self.config.method != "token":
            return
        self.scores.step()

    def update_scores(self, output: Any) -> None:
        """Update the score table from one step's model output (every rank, every step)."""
        self.record_losses(output)
        self.apply_recorded()

    # Checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Plain CPU tensors (keys prefixed ``token_dropping.``); empty for method ``none``."""
        if not self.enabled:
            return {}
        p = self.STATE_PREFIX
        return {
            f"{p}scores": self.scores.scores.detach().cpu().clone(),
            f"{p}num_updates": torch.tensor(self.scores.num_updates, dtype=torch.int64),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        """Restore the score table. ``state`` may hold other keys (e.g. a checkpoint's extras)."""
        p = self.STATE_PREFIX
        scores = state.get(f"{p}scores")
        if scores is None:
            if strict and self.config.method == "token":
                raise CheckpointError(
                    "the checkpoint has no token-dropping scores; it was trained without token "
                    "dropping (resume with method: none, or start a new run)"
                )
            return
        if tuple(scores.shape) != (self.vocab_size,):
            raise CheckpointError(
                f"token-dropping scores in the checkpoint have shape {tuple(scores.shape)}, "
                f"expected ({self.vocab_size},) for this vocabulary"
            )
        self.scores.scores = scores.detach().to(device=self.scores.scores.device, dtype=torch.float32).clone()
        updates = state.get(f"{p}num_updates")
        self.scores.num_updates = int(updates.item()) if updates is not None else 0

    # Cost --------------------------------------------------------------------------

    def layer_rows(self, seq_len: int, step: int | None = None) -> list[tuple[int, int]] | None:
        """(query rows, key rows) per layer of a training step at ``step`` for batches padded to
        ``seq_len``; None when this step does not drop (every layer on every token)."""
        if not self.dropping_at(step):
            return None
        return self.plan(seq_len).rows(self.num_layers, seq_len)

    # The engine's algorithm protocol (leanbert.train.engine.Algorithm) -------------

    def router(self, batch: Mapping[str, torch.Tensor | None], step: int | None, training: bool = True):
        return self.router_for(batch, step, training=training)

    def after_backward(self, output: Any) -> None:
        """Per micro-batch: accumulate the per-token MLM losses by label id."""
        self.record_losses(output)

    def after_step(self) -> None:
        """Once per optimizer step, on every rank: the moving average of the scores."""
        self.apply_recorded()
