"""Analytic FLOP counts (SPEC Sec. 5) from the rows each layer runs on, with and without token
dropping (leanbert.models.flops; the drop plan's rows come from algorithms.token_dropping)."""

from __future__ import annotations

import pytest

from leanbert.algorithms.token_dropping import DropPlan
from leanbert.models import model_preset
from leanbert.models.bert import layer_flops as bert_layer
from leanbert.models.flops import (
    encoder_flops,
    forward_flops,
    full_rows,
    mlm_head_flops,
    train_flops,
)


def test_bert_base_encoder_forward_flops_match_spec():
    cfg = model_preset("bert-base")
    full = encoder_flops(cfg, full_rows(cfg, 512))
    dropped = encoder_flops(cfg, DropPlan(start=5, end=11, keep=256).rows(12, 512))
    assert round(full / 1e9, 2) == 96.64
    assert round(dropped / 1e9, 2) == 72.07
    assert round(1 - dropped / full, 3) == 0.254


def test_layer_formulas_are_the_spec_formulas():
    cfg = model_preset("bert-base")
    n, k, h, f = 512, 256, 768, 3072
    assert bert_layer(cfg, n, n) == 2 * n * (4 * h * h + 2 * h * f) + 4 * n * n * h
    assert bert_layer(cfg, k, n) == 2 * (2 * k * h * h + 2 * n * h * h + 2 * k * h * f) + 4 * k * n * h
    assert mlm_head_flops(76, h, 30522) == 2 * 76 * (h * h + h * 30522)


def test_keeping_all_tokens_costs_the_same_as_no_dropping():
    cfg = model_preset("bert-mini")
    assert encoder_flops(cfg, DropPlan(1, 3, 128).rows(4, 128)) == encoder_flops(cfg, full_rows(cfg, 128))


def test_forward_adds_the_mlm_head_and_training_is_three_forwards():
    cfg = model_preset("bert-base")
    rows = full_rows(cfg, 512)
    fwd = forward_flops(cfg, rows, 76)
    assert fwd == encoder_flops(cfg, rows) + 2 * 76 * (768 * 768 + 768 * 30522)
    assert train_flops(cfg, 4, rows, 76) == 3 * 4 * fwd


def test_drop_end_at_last_layer_drops_every_layer_after_the_split():
    cfg = model_preset("bert-mini")  # 4 layers, h 256, f 1024
    rows = DropPlan(start=1, end=4, keep=32).rows(4, 64)
    assert rows == [(64, 64), (32, 64), (32, 32), (32, 32)]
    expected = bert_layer(cfg, 64, 64) + bert_layer(cfg, 32, 64) + 2 * bert_layer(cfg, 32, 32)
    assert encoder_flops(cfg, rows) == expected


def test_drop_plan_rejects_an_empty_range():
    with pytest.raises(ValueError, match="start < end"):
        DropPlan(start=3, end=3, keep=10)


def test_rows_must_cover_every_layer():
    cfg = model_preset("bert-mini")
    with pytest.raises(ValueError, match="4 layers"):
        encoder_flops(cfg, [(8, 8)] * 3)


def test_other_families_count_with_their_own_layer_formula():
    from leanbert.models.mobilebert import layer_flops

    cfg = model_preset("mobilebert")
    rows = DropPlan(start=11, end=23, keep=256).rows(24, 512)
    # 24 layers: 0..10 full, 11 split, 12..22 kept only, 23 full
    expected = 12 * layer_flops(cfg, 512, 512) + layer_flops(cfg, 256, 512) + 11 * layer_flops(cfg, 256, 256)
    assert encoder_flops(cfg, rows) == expected
    full = full_rows(cfg, 512)
    assert forward_flops(cfg, full, 20) == encoder_flops(cfg, full) + mlm_head_flops(20, 512, cfg.vocab_size)
