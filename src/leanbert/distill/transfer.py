"""Knowledge transfer from a teacher to a MobileBERT student (Sun et al., ACL 2020, Sec. 3.5-3.6).

Method card
-----------
**What it does.** The student learns, layer by layer, to reproduce the teacher's block
outputs and attention distributions, then to predict the teacher's masked-word distribution.
Per layer ``l`` (block outputs ``H``, attention probabilities ``A`` per head):

- *feature-map transfer* (Sec. 3.5, Eq. 1): mean squared error between the student's and the
  teacher's block outputs, each layer-normalised without learned parameters; plus the *mean*
  term ``(mu_S - mu_T)^2`` and the *variance* term ``|sigma^2_S - sigma^2_T|`` of each token's
  raw outputs (the TF2 code, on that layer; the TF1 code uses the whole stack by mistake);
- *attention transfer* (Eq. 2): per head and query, ``-sum_k A_T log A_S`` over the keys (the
  KL divergence from the teacher's distribution, up to its constant entropy);
- weights: hidden 100, attention 1, mean 5000, variance 5, each divided by ``L`` (the TF1
  reference), averaged over the real tokens of the batch;
- *pretraining distillation* (Sec. 3.6): cross entropy of the student's MLM prediction
  against ``0.5 * one-hot(true) + 0.5 * softmax(teacher logits / T)``, ``T = 1`` (TF1 applies
  the temperature to hidden states; here it divides the logits), plus the NSP loss on pairs.

**Strategies** (Sec. 3.6, Fig. 3): ``progressive`` -- ``L`` stages of ``steps_per_stage``; stage
``l`` trains on layer ``l``'s transfer loss with learning-rate multipliers 3x for layer ``l``,
0.3x below and 0 above and outside the encoder (TF1), or only layer ``l`` trained
(``freeze_previous``, TF2); the warm-up restarts each stage; then pretraining distillation.
``auxiliary`` -- one phase: pretraining distillation plus every layer's transfer loss.
``joint`` -- one transfer stage on all layers together, then pretraining distillation. At the
start the student takes the teacher's embeddings, embedding projection and MLM / NSP heads
(TF1; same shapes required).

**Cost.** The teacher runs without gradients, in bf16 where the hardware has it, and only up to
what the current stage needs: layer ``l`` in stage ``l`` (no MLM head), the whole model in
pretraining distillation. The student runs up to layer ``l`` too, and records gradients only
for what trains in the stage (layers ``0..l``, or ``l`` alone with ``freeze_previous``; never
the embeddings): parameters at multiplier 0 get no gradient, so the optimiser skips them and
their moments do not advance.

**Teachers.** The IB-BERT presets (``ib-bert-large``; same inter-block width 512 and depth as
the student), or any leanbert / transformers encoder: a learned linear projection maps the
student's width to the teacher's when they differ (trained with the stage, discarded after);
with fewer student layers than teacher layers, student layer ``i`` learns teacher layer
``(i + 1) * k - 1``, ``k = L_T / L_S`` (every k-th layer; ``L_T`` must be a multiple of ``L_S``).
Attention transfer needs the same number of heads (it is skipped, with a note, otherwise).

**Resume.** Stage and layer are functions of the global step, so a training checkpoint
resumes in the middle of a stage exactly (the engine's bitwise resume).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from leanbert import losses
from leanbert.algorithms.token_dropping import TokenDropping, TokenDroppingConfig
from leanbert.config import StrictConfig, load_config
from leanbert.errors import ConfigError
from leanbert.models.base import gather_positions, key_padding_mask
from leanbert.train.config import (
    CheckpointSection,
    DataSection,
    EvalSection,
    LogSection,
    TrainSection,
)
from leanbert.train.optim import OptimConfig, lr_at

Strategy = Literal["progressive", "auxiliary", "joint"]
TERMS = ("hidden", "attention", "mean", "variance", "mlm", "nsp")


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


class TransferSection(StrictConfig):
    steps_per_stage: int = Field(10_000, ge=1, description="steps of each transfer stage (paper: 10k)")
    hidden_weight: float = Field(100.0, ge=0)
    attention_weight: float = Field(1.0, ge=0)
    mean_weight: float = Field(5000.0, ge=0)
    variance_weight: float = Field(5.0, ge=0)
    lr_mode: Literal["multipliers", "freeze_previous"] = "multipliers"
    current_multiplier: float = Field(3.0, ge=0)
    lower_multiplier: float = Field(0.3, ge=0)
    warmup_steps: int = Field(0, ge=0, description="warm-up of each transfer stage (restarts every stage)")
    copy_from_teacher: bool = True  # embeddings, embedding projection, MLM / NSP heads (TF1)
    projection: bool = True  # a learned projection when the student's width differs from the teacher's


class PretrainDistillSection(StrictConfig):
    steps: int = Field(1000, ge=0, description="pretraining-distillation steps after the transfer (paper: 500k)")
    temperature: float = Field(1.0, gt=0)
    teacher_weight: float = Field(0.5, ge=0, le=1, description="weight of the teacher's distribution in the target")


class DistillConfig(StrictConfig):
    student: dict[str, Any] = Field(default_factory=lambda: {"preset": "mobilebert"})
    strategy: Strategy = "progressive"
    transfer: TransferSection = Field(default_factory=TransferSection)
    pretrain_distill: PretrainDistillSection = Field(default_factory=PretrainDistillSection)
    data: DataSection = Field(default_factory=DataSection)
    # Token dropping in the student's middle layers during pretraining distillation (neither
    # paper tried it): the teacher still sees every token, the student's last layer too.
    token_dropping: TokenDroppingConfig = Field(default_factory=TokenDroppingConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(name="lamb", lr=1.5e-3, weight_decay=0.01))
    train: TrainSection = Field(default_factory=TrainSection)
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    log: LogSection = Field(default_factory=LogSection)

    @model_validator(mode="after")
    def _check_student(self) -> DistillConfig:
        if "preset" not in self.student and "model_type" not in self.student:
            raise ValueError("the student section needs 'preset' (e.g. mobilebert) or a full model config")
        if self.strategy == "auxiliary" and self.token_dropping.method != "none":
            raise ValueError("token dropping applies to pretraining distillation alone; the auxiliary strategy "
                             "transfers every layer's full-length output at the same time: use progressive or joint")
        return self


def load_distill_config(name_or_path: str | Path, overrides: Sequence[str] = ()) -> DistillConfig:
    """A distillation config from a preset (``presets/distill/``) or YAML file, with overrides."""
    return load_config(DistillConfig, "distill", name_or_path, overrides)


# --------------------------------------------------------------------------------------
# Functional core: the losses, on plain tensors
# --------------------------------------------------------------------------------------


def feature_map_terms(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per token ``(mse, mean, variance)`` of one layer's block outputs ``[..., H]`` (Eq. 1):
    the MSE of the parameter-free layer-normalised outputs (mean over H), the squared difference
    of the per-token means and the absolute difference of the per-token variances."""
    s, t = student.float(), teacher.float()
    h = s.shape[-1]
    mse = (F.layer_norm(s, (h,)) - F.layer_norm(t, (h,))).pow(2).mean(-1)
    mean = (s.mean(-1) - t.mean(-1)).pow(2)
    variance = (s.var(-1, unbiased=False) - t.var(-1, unbiased=False)).abs()
    return mse, mean, variance


def attention_term(student_scores: torch.Tensor, teacher_probs: torch.Tensor) -> torch.Tensor:
    """Per query ``-sum_k p_T log p_S`` averaged over heads (Eq. 2): student *scores* (masked,
    before softmax) ``[B, heads, Q, S]`` and teacher probabilities of the same shape -> ``[B, Q]``."""
    log_p = student_scores.float().log_softmax(-1)
    return -(teacher_probs.float() * log_p).sum(-1).mean(1)


def soft_target_ce(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   temperature: float = 1.0, teacher_weight: float = 0.5) -> torch.Tensor:
    """Per prediction slot: cross entropy of the student's MLM prediction against
    ``(1 - w) one-hot(labels) + w softmax(teacher / T)`` (Sec. 3.6); 0 where labels are -100."""
    log_p = student_logits.float().log_softmax(-1)
    valid = labels != losses.IGNORE_INDEX
    hard = -log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    soft = -(F.softmax(teacher_logits.float() / temperature, -1) * log_p).sum(-1)
    return torch.where(valid, (1 - teacher_weight) * hard + teacher_weight * soft, 0.0)


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer learns: every k-th, ``k = L_T / L_S``."""
    if teacher_layers % student_layers:
        raise ConfigError(
            f"the teacher has {teacher_layers} layers, which is not a multiple of the student's {student_layers}; "
            "pick a student depth that divides the teacher's (student layer i learns teacher layer (i+1)k-1)"
        )
    k = teacher_layers // student_layers
    return [(i + 1) * k - 1 for i in range(student_layers)]


# --------------------------------------------------------------------------------------
# The schedule: which phase, stage and layer a global step is in
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Phase:
    kind: Literal["transfer", "pretrain_distill"]
    layers: tuple[int, ...]  # student layers whose transfer loss counts
    start: int  # first global step of this stage
    length: int
    stage: int  # 0-based stage index

    @property
    def trained_layer(self) -> int | None:
        """Progressive transfer trains one layer (the last of ``layers``); None otherwise."""
        return self.layers[-1] if self.kind == "transfer" and len(self.layers) == 1 else None


def phases(strategy: Strategy, num_layers: int, cfg: DistillConfig) -> list[Phase]:
    """The stages of a strategy, in order."""
    s, pd = cfg.transfer.steps_per_stage, cfg.pretrain_distill.steps
    all_layers = tuple(range(num_layers))
    if strategy == "progressive":
        out = [Phase("transfer", (layer,), layer * s, s, layer) for layer in range(num_layers)]
    elif strategy == "joint":
        out = [Phase("transfer", all_layers, 0, s, 0)]
    else:  # auxiliary: transfer losses of every layer beside pretraining distillation, one phase
        return [Phase("pretrain_distill", all_layers, 0, max(pd, 1), 0)]
    if pd:
        out.append(Phase("pretrain_distill", (), out[-1].start + out[-1].length, pd, len(out)))
    return out


def phase_at(plan: Sequence[Phase], step: int) -> Phase:
    for phase in plan:
        if step < phase.start + phase.length:
            return phase
    return plan[-1]


def group_of(name: str) -> str:
    """Optimiser group of a student parameter: ``layer.N`` for encoder layer N, ``other`` else
    (embeddings, heads, the projection to the teacher's width)."""
    parts = name.split(".")
    if len(parts) > 3 and parts[0] == "student" and parts[1] == "encoder" and parts[2] == "layers":
        return f"layer.{parts[3]}"
    if len(parts) > 2 and parts[0] == "encoder" and parts[1] == "layers":
        return f"layer.{parts[2]}"
    return "other"


def lr_multipliers(phase: Phase, num_layers: int, tcfg: TransferSection) -> dict[str, float]:
    """Per-group learning-rate multipliers of a stage: progressive transfer trains layer l
    (x3), the layers below (x0.3, or x0 with ``freeze_previous``) and nothing else; the other
    phases train everything (x1)."""
    layer = phase.trained_layer
    if layer is None:
        return {}
    scales = {"other": 0.0}
    for i in range(num_layers):
        if i == layer:
            scales[f"layer.{i}"] = tcfg.current_multiplier
        elif i < layer and tcfg.lr_mode == "multipliers":
            scales[f"layer.{i}"] = tcfg.lower_multiplier
        else:
            scales[f"layer.{i}"] = 0.0
    return scales


# --------------------------------------------------------------------------------------
# Partial forward passes through the encoder interface
# --------------------------------------------------------------------------------------


def run_encoder(encoder: nn.Module, batch: Mapping[str, torch.Tensor], up_to: int,
                attention_at: set[int], grad_from: int | None = None) -> tuple[list[torch.Tensor], dict[int, Any]]:
    """Embeddings and layers ``0 .. up_to`` (inclusive): the block outputs of every layer run,
    and the attention (scores, probabilities) of the layers in ``attention_at``. With
    ``grad_from``, the embeddings and the layers below it run without recording gradients
    (their learning rate is 0 in this stage: no backward pass through them at all)."""
    frozen = torch.no_grad() if grad_from is not None else contextlib.nullcontext()
    with frozen:
        hidden = encoder.embeddings(batch["input_ids"], batch.get("token_type_ids"))
    key_mask = key_padding_mask(batch.get("attention_mask"))
    outputs, attention = [], {}
    for i, layer in enumerate(encoder.layers[: up_to + 1]):
        with torch.no_grad() if grad_from is not None and i < grad_from else contextlib.nullcontext():
            out = layer(hidden, key_mask, None, i in attention_at)
        hidden = out.hidden
        outputs.append(hidden)
        if i in attention_at:
            attention[i] = (out.attention_scores, out.attention_probs)
    return outputs, attention


class Student(nn.Module):
    """The student being distilled, plus the projection from its width to the teacher's (when
    they differ, Sec. 3.5 needs equal widths). Its state dict is the student's alone, so that
    training checkpoints stay plain leanbert checkpoints; the projection's weights travel in the
    checkpoint's extra tensors (:class:`ProjectionState`)."""

    def __init__(self, model: nn.Module, teacher_hidden: int) -> None:
        super().__init__()
        self.student = model
        width = model.config.hidden_size
        self.projection = nn.Linear(width, teacher_hidden) if width != teacher_hidden else None

    @property
    def config(self):
        return self.student.config

    def state_dict(self, *args, **kwargs):
        return self.student.state_dict(*args, **kwargs)

    def load_state_dict(self, state, strict: bool = True, assign: bool = False):
        return self.student.load_state_dict(state, strict=strict, assign=assign)


@dataclass
class DistillTokenDropping:
    """Token dropping (:mod:`leanbert.algorithms.token_dropping`) in the student during the
    pretraining-distillation phase only: no routing in transfer stages, whose losses compare
    full-length layer outputs with the teacher's."""

    td: TokenDropping
    plan: list[Phase]

    def _active(self, step: int | None) -> bool:
        if step is None:
            return False
        phase = phase_at(self.plan, step)
        return phase.kind == "pretrain_distill" and not phase.layers

    def router(self, batch, step, training: bool = True):
        return self.td.router(batch, step, training) if training and self._active(step) else None

    def after_backward(self, output) -> None:
        if getattr(output, "mlm_token_loss", None) is not None:
            self.td.after_backward(output)

    def after_step(self) -> None:
        self.td.after_step()

    def layer_rows(self, seq_len: int, step: int | None = None):
        return self.td.layer_rows(seq_len, step) if self._active(step) else None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.td.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        self.td.load_state_dict(state, strict)


@dataclass
class ProjectionState:
    """The engine's algorithm protocol, used only to save and restore the projection's weights
    with every training checkpoint (no routing, no hooks)."""

    wrapper: Student
    PREFIX = "distill.projection."

    def router(self, batch, step, training: bool = True):
        return None

    def after_backward(self, output) -> None:
        pass

    def after_step(self) -> None:
        pass

    def layer_rows(self, seq_len: int, step: int | None = None):
        return None

    def state_dict(self) -> dict[str, torch.Tensor]:
        proj = self.wrapper.projection
        if proj is None:
            return {}
        return {f"{self.PREFIX}{k}": v.detach().cpu().clone() for k, v in proj.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, torch.Tensor], strict: bool = True) -> None:
        proj = self.wrapper.projection
        if proj is None:
            return
        own = {k[len(self.PREFIX):]: v for k, v in state.items() if k.startswith(self.PREFIX)}
        if own:
            with torch.no_grad():
                for k, v in proj.state_dict().items():
                    v.copy_(own[k])


@dataclass
class DistillObjective:
    """Knowledge transfer as an engine objective (:mod:`leanbert.train.engine`). Every loss term
    of :data:`TERMS` is a separate term (logged separately), normalised by its global count:
    the transfer terms by real tokens, ``mlm`` by prediction slots, ``nsp`` by sequences."""

    teacher: nn.Module
    plan: list[Phase]
    cfg: DistillConfig
    mapping: list[int]
    with_pairs: bool = False
    teacher_autocast: bool = False
    step: int = 0  # set by the job before every step (the engine's schedule callback)
    terms: tuple[str, ...] = TERMS

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        tokens = mask.sum() if mask is not None else torch.tensor(ids.numel(), device=ids.device)
        return {"hidden": tokens, "attention": tokens, "mean": tokens, "variance": tokens,
                "mlm": losses.prediction_count(batch["labels"]),
                "nsp": torch.tensor(ids.shape[0], device=ids.device)}

    def _teacher_forward(self, batch, up_to: int, attention_at: set[int], heads: bool):
        ctx = (torch.autocast(batch["input_ids"].device.type, dtype=torch.bfloat16) if self.teacher_autocast
               else torch.autocast(batch["input_ids"].device.type, enabled=False))
        with torch.no_grad(), ctx:
            outputs, attention = run_encoder(self.teacher.encoder, batch, up_to, attention_at)
            logits = nsp = None
            if heads:
                last = outputs[-1]
                positions = batch.get("mlm_positions")
                hidden = gather_positions(last, positions) if positions is not None else last
                logits = self.teacher.mlm(hidden, self.teacher.mlm_decoder_weight()).float()
                if self.with_pairs and self.teacher.nsp is not None:
                    pooled = self.teacher.encoder.pooler(last) if self.teacher.encoder.pooler is not None else last[:, 0]
                    nsp = self.teacher.nsp(pooled).float()
        return outputs, attention, logits, nsp

    def __call__(self, wrapper: Student, batch: Mapping[str, torch.Tensor], router: Any = None) -> dict[str, torch.Tensor]:
        phase = phase_at(self.plan, self.step)
        student = wrapper.student
        ids = batch["input_ids"]
        zero = ids.new_zeros((), dtype=torch.float32)
        out = {f"loss.{t}": zero for t in TERMS}
        layers = set(phase.layers)
        distill_mlm = phase.kind == "pretrain_distill"
        s_up_to = len(student.encoder.layers) - 1 if distill_mlm else max(layers)
        t_up_to = len(self.teacher.encoder.layers) - 1 if distill_mlm else self.mapping[max(layers)]
        same_heads = student.config.num_heads == self.teacher.config.num_heads
        att_s = layers if same_heads and self.cfg.transfer.attention_weight else set()
        att_t = {self.mapping[i] for i in att_s}
        t_out, t_att, t_logits, t_nsp = self._teacher_forward(batch, t_up_to, att_t, distill_mlm)
        grad_from = None
        if phase.trained_layer is not None:  # progressive: nothing outside the encoder trains
            grad_from = phase.trained_layer if self.cfg.transfer.lr_mode == "freeze_previous" else 0
        if distill_mlm and not layers:  # pretraining distillation alone: the router may drop tokens
            enc = student.encoder(ids, batch.get("attention_mask"), batch.get("token_type_ids"), router=router)
            s_out, s_att = [enc.last_hidden_state], {}
        else:
            s_out, s_att = run_encoder(student.encoder, batch, s_up_to, att_s, grad_from)
        mask = batch.get("attention_mask")
        real = mask.to(torch.float32) if mask is not None else torch.ones(ids.shape, device=ids.device)
        tc = self.cfg.transfer
        scale = 1.0 / len(student.encoder.layers)
        for i in sorted(layers):
            s_h = s_out[i]
            if wrapper.projection is not None:
                s_h = wrapper.projection(s_h)
            mse, mean, var = feature_map_terms(s_h, t_out[self.mapping[i]])
            out["loss.hidden"] = out["loss.hidden"] + tc.hidden_weight * scale * (mse * real).sum()
            out["loss.mean"] = out["loss.mean"] + tc.mean_weight * scale * (mean * real).sum()
            out["loss.variance"] = out["loss.variance"] + tc.variance_weight * scale * (var * real).sum()
            if i in att_s:
                att = attention_term(s_att[i][0], t_att[self.mapping[i]][1])
                out["loss.attention"] = out["loss.attention"] + tc.attention_weight * scale * (att * real).sum()
        if distill_mlm:
            last = s_out[-1]
            positions = batch.get("mlm_positions")
            hidden = gather_positions(last, positions) if positions is not None else last
            logits = student.mlm(hidden, student.mlm_decoder_weight())
            pd = self.cfg.pretrain_distill
            labels = batch["labels"]
            token_loss = soft_target_ce(logits.reshape(-1, logits.shape[-1]), t_logits.reshape(-1, t_logits.shape[-1]),
                                        labels.reshape(-1), pd.temperature, pd.teacher_weight)
            out["loss.mlm"] = token_loss.sum()
            out["mlm_logits"] = logits
            out["mlm_label_ids"] = labels.reshape(-1)
            out["mlm_token_loss"] = token_loss  # token dropping's importance scores learn from it
            if self.with_pairs and student.nsp is not None:
                pooled = student.encoder.pooler(last) if student.encoder.pooler is not None else last[:, 0]
                out["loss.nsp"] = losses.sentence_pair_losses(student.nsp(pooled), batch["next_sentence_label"]).sum()
        return out

    def log_stats(self, batch, out) -> dict[str, tuple[torch.Tensor, str]]:
        from leanbert.train.pretrain import mlm_correct

        return {"mlm_accuracy": (mlm_correct(out), "mlm")} if "mlm_logits" in out else {}

    def flops(self, wrapper: Student, batch, rows) -> int:
        """Student training FLOPs (3x forward) plus the teacher's forward (1x), up to the layers
        this stage runs."""
        from leanbert.models.flops import encoder_flops, mlm_head_flops
        from leanbert.models.registry import family

        phase = phase_at(self.plan, self.step)
        size, seq_len = batch["input_ids"].shape
        student, teacher = wrapper.student, self.teacher
        distill_mlm = phase.kind == "pretrain_distill"
        s_layers = len(student.encoder.layers) if distill_mlm else max(phase.layers) + 1
        t_layers = len(teacher.encoder.layers) if distill_mlm else self.mapping[max(phase.layers)] + 1

        def partial(model, n: int) -> int:  # the first n layers, every token
            return n * family(model.config.model_type).layer_flops(model.config, seq_len, seq_len)

        slots = batch["labels"].shape[1] if distill_mlm else 0
        s_encoder = encoder_flops(student.config, rows) if rows is not None else partial(student, s_layers)
        s = s_encoder + (mlm_head_flops(slots, student.config.hidden_size, student.config.vocab_size)
                                          if distill_mlm else 0)
        t = partial(teacher, t_layers) + (mlm_head_flops(slots, teacher.config.hidden_size, teacher.config.vocab_size)
                                          if distill_mlm else 0)
        return size * (3 * s + t)


# --------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------


def check_pair(student_cfg: Any, teacher_cfg: Any, tcfg: TransferSection, teacher_source: str) -> None:
    """One-line errors for a student and teacher that cannot be paired."""
    if student_cfg.model_type != "mobilebert":
        raise ConfigError(
            f"the student is a {student_cfg.model_type} model; knowledge transfer distils a MobileBERT-shaped "
            "student (model_type mobilebert, e.g. --student mobilebert or mobilebert-tiny)"
        )
    if student_cfg.hidden_size != teacher_cfg.hidden_size and not tcfg.projection:
        raise ConfigError(
            f"the student's width {student_cfg.hidden_size} differs from the teacher's ({teacher_source}: "
            f"{teacher_cfg.hidden_size}) and transfer.projection is off; use an IB-BERT teacher of the same "
            "inter-block width or set transfer.projection=true"
        )


def copy_from_teacher(student: nn.Module, teacher: nn.Module) -> list[str]:
    """Copy the embeddings, embedding projection and MLM / NSP heads where the shapes match (TF1
    initialises the student with them); returns what was copied."""
    copied = []
    t_state = teacher.state_dict()
    with torch.no_grad():
        for name, p in student.state_dict().items():
            if name.startswith(("encoder.embeddings.", "mlm.", "nsp.")) and name in t_state \
                    and t_state[name].shape == p.shape:
                p.copy_(t_state[name])
                copied.append(name)
    return copied


@dataclass
class DistillResult:
    output_dir: Path
    model_dir: Path
    steps: int
    eval_after: dict[str, float] | None
    interrupted: bool = False


def distill(cfg: DistillConfig, teacher_dir: str | Path, data_dir: str | Path, output_dir: str | Path, *,
            stop_after: int | None = None) -> DistillResult:
    """Distil ``cfg.student`` from the teacher checkpoint in ``teacher_dir`` on prepared data;
    the same command on the same ``output_dir`` resumes. Writes ``output_dir/model``."""
    from leanbert.checkpoint import from_pretrained, save_pretrained
    from leanbert.models import resolve_model_section
    from leanbert.models.model import LeanbertModel
    from leanbert.speedups import optimize
    from leanbert.train.data import PretrainData
    from leanbert.train.engine import Engine
    from leanbert.train.pretrain import MLMObjective, evaluate_mlm

    output_dir = Path(output_dir)
    dump = cfg.model_dump(mode="json")
    dump["teacher"] = str(teacher_dir)
    engine = Engine(job="distill", output_dir=output_dir, train=cfg.train, optim=cfg.optim, checkpoint=cfg.checkpoint,
                    log=cfg.log, config=dump, resume_keys=("student", "strategy", "transfer", "pretrain_distill",
                                                           "data.batch_size", "train.seed", "teacher",
                                                           "token_dropping"))
    with engine:
        device = engine.device
        data = PretrainData(data_dir, cfg.data, seed=cfg.train.seed)
        teacher = from_pretrained(teacher_dir)
        if "mlm" not in teacher.heads:
            raise ConfigError(f"the teacher {teacher_dir} has no MLM head; pretraining distillation needs one "
                              "(pretrain it with 'leanbert pretrain')")
        heads = ["mlm", "nsp"] if data.has_pairs else ["mlm"]
        student_cfg = resolve_model_section(cfg.student, "student", vocab_size=data.vocab_size, heads=heads)
        check_pair(student_cfg, teacher.config, cfg.transfer, str(teacher_dir))
        if student_cfg.vocab_size != teacher.config.vocab_size:
            raise ConfigError(f"the teacher's vocabulary ({teacher.config.vocab_size}) differs from the data's "
                              f"({data.vocab_size}); prepare the data with the teacher's tokenizer")
        mapping = layer_map(student_cfg.num_layers, teacher.config.num_layers)
        if student_cfg.num_heads != teacher.config.num_heads and engine.is_main:
            print(f"note: the teacher has {teacher.config.num_heads} attention heads and the student "
                  f"{student_cfg.num_heads}: attention transfer is skipped (feature maps are still transferred)",
                  file=sys.stderr)
        torch.manual_seed(cfg.train.seed)
        model = LeanbertModel(student_cfg)
        if cfg.transfer.copy_from_teacher:
            copy_from_teacher(model, teacher)
        wrapper = Student(model, teacher.config.hidden_size).to(device)
        teacher = teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        if cfg.train.speedups:
            optimize(wrapper, for_training=True)
            optimize(teacher, for_training=False)
        plan = phases(cfg.strategy, student_cfg.num_layers, cfg)
        total = plan[-1].start + plan[-1].length
        bf16 = device.type == "cuda" or torch.backends.mkldnn.is_available() and _cpu_has_bf16()
        objective = DistillObjective(teacher, plan, cfg, mapping, with_pairs=data.has_pairs, teacher_autocast=bf16)
        num_layers = student_cfg.num_layers
        pd_optim = cfg.optim
        stage_optim = cfg.optim.model_copy(update={"schedule": "constant", "warmup_steps": cfg.transfer.warmup_steps})

        def schedule(step: int) -> tuple[float, dict[str, float]]:
            objective.step = step
            phase = phase_at(plan, step)
            optim = stage_optim if phase.kind == "transfer" else pd_optim
            return lr_at(step - phase.start, optim, phase.length), lr_multipliers(phase, num_layers, cfg.transfer)

        def describe(step: int) -> str:
            phase = phase_at(plan, step)
            if phase.trained_layer is not None:
                return f"distill: layer {phase.trained_layer + 1} of {num_layers}"
            return "distill: transfer, all layers" if phase.kind == "transfer" else "distill: pretraining distillation"

        eval_batches = data.eval_batches(cfg.eval.batches, cfg.eval.batch_size) if data.has_eval else []

        def evaluate(m: nn.Module, step: int) -> dict[str, float] | None:
            if not eval_batches or phase_at(plan, max(step - 1, 0)).kind != "pretrain_distill":
                return None
            return evaluate_mlm(m.student, eval_batches, device, cfg.train.precision, MLMObjective(with_pairs=data.has_pairs))

        def batches(start_step: int, micro: int, rank: int, world: int) -> Iterator[dict[str, torch.Tensor]]:
            return data.train_batches(start_sample=start_step * cfg.data.batch_size, micro_batch_size=micro,
                                      rank=rank, world_size=world)

        algorithms: list[Any] = [ProjectionState(wrapper)]
        if cfg.token_dropping.method != "none":
            from leanbert.train.distributed import all_reduce_sum

            td = TokenDropping(cfg.token_dropping.with_special_ids(data.special_ids), student_cfg, total_steps=total,
                               device=device, all_reduce=all_reduce_sum)
            algorithms.insert(0, DistillTokenDropping(td, plan))
        fit = engine.fit(wrapper, objective, batches, total_steps=total, global_batch=cfg.data.batch_size,
                         micro_batch=cfg.data.micro_batch_size, algorithms=algorithms,
                         evaluate=evaluate, eval_every=cfg.eval.every,
                         tokenizer_dir=data.tokenizer_dir, stop_after=stop_after, group_of=group_of,
                         schedule=schedule, describe=describe)
        model_dir = output_dir / "model"
        if fit.interrupted:
            return DistillResult(output_dir, model_dir, fit.state.step, None, True)
        if engine.is_main:
            save_pretrained(model, model_dir, tokenizer_dir=data.tokenizer_dir,
                            metadata={"distilled_from": str(teacher_dir), "strategy": cfg.strategy,
                                      "steps": fit.state.step})
        return DistillResult(output_dir, model_dir, fit.state.step, fit.eval_after)


def _cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX-512 BF16 / AMX), where bf16 pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags

