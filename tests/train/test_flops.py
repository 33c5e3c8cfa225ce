"""Analytic FLOP counts (SPEC Sec. 5) with and without token dropping."""

from __future__ import annotations

import pytest

from leanbert.config import model_preset
from leanbert.train.flops import (
    DropPlan,
    encoder_forward_flops,
    encoder_layer_flops,
    forward_flops,
    mlm_head_flops,
    split_layer_flops,
    train_step_flops,
)


def test_bert_base_encoder_forward_flops_match_spec():
    cfg = model_preset("bert-base")
    full = encoder_forward_flops(cfg, 512)
    dropped = encoder_forward_flops(cfg, 512, DropPlan(start=5, end=11, keep=256))
    assert round(full / 1e9, 2) == 96.64
    assert round(dropped / 1e9, 2) == 72.07
    assert round(1 - dropped / full, 3) == 0.254


def test_layer_formulas_are_the_spec_formulas():
    n, k, h, f = 512, 256, 768, 3072
    assert encoder_layer_flops(n, h, f) == 2 * n * (4 * h * h + 2 * h * f) + 4 * n * n * h
    assert split_layer_flops(n, k, h, f) == 2 * (2 * k * h * h + 2 * n * h * h + 2 * k * h * f) + 4 * k * n * h
    assert mlm_head_flops(76, h, 30522) == 2 * 76 * (h * h + h * 30522)


def test_split_layer_keeping_all_tokens_costs_a_full_layer():
    assert split_layer_flops(128, 128, 256, 1024) == encoder_layer_flops(128, 256, 1024)


def test_keeping_all_tokens_costs_the_same_as_no_dropping():
    cfg = model_preset("bert-mini")
    assert encoder_forward_flops(cfg, 128, DropPlan(1, 3, 128)) == encoder_forward_flops(cfg, 128)


def test_forward_adds_the_mlm_head_and_training_is_three_forwards():
    cfg = model_preset("bert-base")
    enc = encoder_forward_flops(cfg, 512)
    fwd = forward_flops(cfg, 512, 76)
    assert fwd == enc + 2 * 76 * (768 * 768 + 768 * 30522)
    assert train_step_flops(cfg, 4, 512, 76) == 3 * 4 * fwd


def test_drop_end_at_last_layer_count_drops_every_layer_after_the_split():
    cfg = model_preset("bert-mini")  # 4 layers, h 256, f 1024
    got = encoder_forward_flops(cfg, 64, DropPlan(start=1, end=4, keep=32))
    expected = (
        encoder_layer_flops(64, 256, 1024)
        + split_layer_flops(64, 32, 256, 1024)
        + 2 * encoder_layer_flops(32, 256, 1024)
    )
    assert got == expected


def test_drop_plan_rejects_an_empty_range():
    with pytest.raises(ValueError, match="start < end"):
        DropPlan(start=3, end=3, keep=10)


def test_other_families_count_with_their_own_layer_formula():
    from leanbert.models.mobilebert import layer_flops

    cfg = model_preset("mobilebert")
    plan = DropPlan(start=11, end=23, keep=256)
    # 24 layers: 0..10 full, 11 split, 12..22 kept only, 23 full
    expected = 12 * layer_flops(cfg, 512, 512) + layer_flops(cfg, 256, 512) + 11 * layer_flops(cfg, 256, 256)
    assert encoder_forward_flops(cfg, 512, plan) == expected
    assert forward_flops(cfg, 512, 20) == encoder_forward_flops(cfg, 512) + mlm_head_flops(20, 512, cfg.vocab_size)
