"""Optimisers and schedules: LAMB against its published formula, parameter groups, schedules."""

from __future__ import annotations

import math

import pytest
import torch

from leanbert.config import validate
from leanbert.errors import ConfigError
from leanbert.train.optim import Lamb, OptimConfig, build_optimizer, lr_at, param_groups


def lamb_reference(w, grads, lr, b1, b2, eps, wd):
    """You et al. 2020, Algorithm 2, written out with plain tensor maths."""
    m = torch.zeros_like(w)
    v = torch.zeros_like(w)
    w = w.clone()
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        v_hat = v / (1 - b2**t)
        r = m_hat / (v_hat.sqrt() + eps)
        u = r + wd * w
        ratio = w.norm() / u.norm()
        w = w - lr * ratio * u
    return w


def test_lamb_matches_published_formula():
    g = torch.Generator().manual_seed(0)
    w0 = torch.randn(5, 7, generator=g, dtype=torch.float64)
    grads = [torch.randn(5, 7, generator=g, dtype=torch.float64) for _ in range(4)]
    p = torch.nn.Parameter(w0.clone())
    opt = Lamb([p], lr=0.01, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05)
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
    expected = lamb_reference(w0, grads, 0.01, 0.9, 0.99, 1e-6, 0.05)
    torch.testing.assert_close(p.detach(), expected, atol=1e-10, rtol=1e-10)


def test_lamb_trust_ratio_scales_update_to_weight_norm():
    p = torch.nn.Parameter(torch.full((4,), 3.0))
    opt = Lamb([p], lr=0.1, weight_decay=0.0)
    p.grad = torch.full((4,), 1e-3)
    opt.step()
    # First step: r = sign(g) (up to eps), ||w|| = 6, ||r|| = 2 -> each entry moves by 0.1 * 3.
    torch.testing.assert_close(p.detach(), torch.full((4,), 3.0 - 0.3), atol=1e-5, rtol=0)


def test_no_weight_decay_for_biases_and_norms():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = param_groups(model, 0.01)
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.01 and groups[1]["weight_decay"] == 0.0
    assert decayed == {id(model[0].weight)}
    assert len(groups[1]["params"]) == 3


def test_warmup_then_linear_decay():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, schedule="linear", end_lr=0.0)
    assert lr_at(0, cfg, 110) == pytest.approx(0.1)
    assert lr_at(9, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, cfg, 110) == pytest.approx(0.5)
    assert lr_at(110, cfg, 110) == pytest.approx(0.0)


def test_polynomial_and_cosine_decay():
    poly = OptimConfig(lr=1.0, schedule="polynomial", power=2.0, end_lr=0.0)
    assert lr_at(50, poly, 100) == pytest.approx(0.25)
    cos = OptimConfig(lr=1.0, schedule="cosine")
    assert lr_at(50, cos, 100) == pytest.approx(0.5)
    assert lr_at(0, cos, 100) == pytest.approx(1.0) and math.isclose(lr_at(100, cos, 100), 0.0, abs_tol=1e-12)


def test_adamw_is_fused_on_cpu():
    model = torch.nn.Linear(3, 3)
    opt = build_optimizer(model, OptimConfig())
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults.get("fused")


def test_bad_optim_values_are_rejected():
    with pytest.raises(ConfigError, match="key 'lr'"):
        validate(OptimConfig, {"lr": -1}, "optim")
    with pytest.raises(ConfigError, match="unknown key 'nme'"):
        validate(OptimConfig, {"nme": "lamb"}, "optim")
    with pytest.raises(ConfigError, match="key 'name'"):
        validate(OptimConfig, {"name": "sgd"}, "optim")
