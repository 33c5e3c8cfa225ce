"""leanbert.models.dropout: the cheaper CPU dropout mask and the attention that uses it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from leanbert.speedups.attention import FastAttention
from leanbert.speedups.dropout import FastDropout, dropout, keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_mask_keeps_each_element_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    n = 1_000_000
    frac = keep_mask((n,), p).float().mean().item()
    assert abs(frac - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)


def test_keep_mask_is_independent_between_neighbours():
    torch.manual_seed(0)
    m = keep_mask((500_000, 2), 0.5).float()  # the two halves of each 64-bit draw
    both = (m[:, 0] * m[:, 1]).mean().item()
    assert abs(both - 0.25) < 5 * math.sqrt(0.25 * 0.75 / 500_000)


def test_keep_mask_has_the_shape_for_odd_sizes():
    assert keep_mask((3, 5, 7), 0.1).shape == (3, 5, 7)


def test_dropout_zeroes_or_scales_and_backpropagates_through_the_same_mask():
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, 0.25)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / 0.75)


def test_dropout_is_reproducible_from_the_seed():
    x = torch.randn(100)
    torch.manual_seed(3)
    a = dropout(x, 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x, 0.3))


def test_dropout_is_identity_in_eval_or_at_zero_and_zero_at_one():
    x = torch.randn(10)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros(10))
    module = FastDropout(0.5).eval()
    assert module(x) is x
    with pytest.raises(ValueError, match="between 0 and 1"):
        FastDropout(1.5)


def test_attention_with_dropout_equals_the_definition_with_the_same_mask():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))
    key_mask = torch.ones(2, 1, 1, 5, dtype=torch.bool)
    key_mask[1, ..., 3:] = False
    torch.manual_seed(7)
    out = FastAttention(0.2).train()(q, k, v, key_mask)[0]
    torch.manual_seed(7)
    mask = keep_mask((2, 3, 5, 5), 0.2)
    probs = ((q @ k.transpose(-1, -2)) / 2.0).masked_fill(~key_mask, float("-inf")).softmax(-1)
    torch.testing.assert_close(out, (probs * mask / 0.8) @ v)


def test_attention_without_dropout_is_sdpa():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g) for _ in range(3))
    ctx, scores, probs = FastAttention(0.0)(q, k, v, None)
    torch.testing.assert_close(ctx, F.scaled_dot_product_attention(q, k, v))
    assert scores is None and probs is None
