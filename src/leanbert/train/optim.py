"""Optimisers and learning-rate schedules for pretraining.

- AdamW (Loshchilov & Hutter 2019), torch's fused implementation where available: BERT's
  optimiser (Devlin et al. 2019, Appendix A.2; Hou et al. 2022 use lr 1e-4, wd 0.01).
- LAMB (You et al., ICLR 2020, Algorithm 2): Adam's update scaled per parameter tensor by the
  trust ratio ||w|| / ||update||; the large-batch optimiser used to pretrain BERT in 76 minutes
  and MobileBERT (Sun et al. 2020, Sec. 4.5: LAMB, lr 1.5e-3, batch 4096 -> 2048).
- Weight decay is not applied to biases and normalisation parameters (any tensor with fewer
  than two dimensions), as in BERT's reference code; LAMB skips the trust ratio for those too
  (TF ``exclude_from_layer_adaptation`` defaults to the weight-decay exclusions).
- Schedules: linear warm-up to the peak, then linear / polynomial / cosine decay to ``end_lr``,
  or constant. The learning rate is a pure function of the step, so resuming needs no state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Literal

import torch
from pydantic import Field, model_validator

from leanbert.config import StrictConfig


class OptimConfig(StrictConfig):
    name: Literal["adamw", "lamb"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    schedule: Literal["linear", "polynomial", "cosine", "constant"] = "linear"
    warmup_steps: int = Field(0, ge=0)
    end_lr: float = Field(0.0, ge=0)
    power: float = Field(1.0, gt=0)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    fused: bool = True

    @model_validator(mode="after")
    def _check_betas(self) -> OptimConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {list(self.betas)}")
        return self


def param_groups(model: torch.nn.Module, weight_decay: float,
                 group_of: Callable[[str], str] | None = None) -> list[dict]:
    """Matrices (decayed) and biases / norm parameters (not decayed, no LAMB trust ratio); with
    ``group_of(parameter name) -> group name`` (e.g. one group per layer, for per-layer
    learning-rate multipliers) each named group is split the same way. Every group carries its
    ``name``."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        key = (group_of(name) if group_of is not None else "all", p.ndim >= 2)
        groups.setdefault(key, []).append(p)
    out = []
    for (name, decay), params in groups.items():
        out.append({"params": params, "name": name, "weight_decay": weight_decay if decay else 0.0,
                    "layer_adaptation": decay})
    # decayed groups first, as before (the order optimiser states are saved in)
    return sorted(out, key=lambda g: not g["layer_adaptation"])


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2020, Algorithm 2) with bias correction, decoupled weight decay and a
    per-tensor trust ratio ``phi(||w||) / ||r + lambda w||`` with phi = identity; the ratio is 1
    when either norm is zero or when the group has ``layer_adaptation=False``."""

    def __init__(self, params: Iterable, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, layer_adaptation=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                # Moments in fp32 at least (bf16/fp16 parameters keep fp32 state).
                dtype = p.dtype if p.dtype in (torch.float32, torch.float64) else torch.float32
                grad = p.grad.to(dtype)
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, dtype=dtype)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype)
                state["step"] += 1
                t = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                m_hat = m / (1 - beta1**t)
                v_hat = v / (1 - beta2**t)
                update = m_hat / (v_hat.sqrt() + group["eps"])
                w = p.to(dtype)
                if group["weight_decay"]:
                    update = update + group["weight_decay"] * w
                trust = 1.0
                if group.get("layer_adaptation", True):
                    w_norm, u_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(update)
                    trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.sub_((group["lr"] * trust * update).to(p.dtype))
        return loss


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig,
                    group_of: Callable[[str], str] | None = None) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, group_of)
    if cfg.name == "lamb":
        return Lamb(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)
    for g in groups:
        g.pop("layer_adaptation", None)
    device_type = next(model.parameters()).device.type
    fused = cfg.fused and device_type in ("cpu", "cuda")
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
    except (RuntimeError, TypeError):  # an older torch without the fused kernel for this device
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def lr_at(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    peak = cfg.lr
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return peak
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.schedule == "linear":
        decay = 1.0 - progress
    elif cfg.schedule == "polynomial":
        decay = (1.0 - progress) ** cfg.power
    else:  # cosine
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.end_lr + (peak - cfg.end_lr) * decay


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
